"""The mesh pipeline's pure functions on real files (no Redis): loading with companion files,
statistics, artifacts, and coded failures for damaged or hostile input."""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from tasks.errors import TaskError
from tasks.mesh import analyse, process
from tasks.progress import Result
from tests.conftest import CORPUS
from tests.helpers.payloads import as_payload
from tests.helpers.payloads import limits as all_limits

Events = list[tuple[str, float]]
Files = Mapping[str, "str | bytes"]  # stored name -> corpus path or the bytes themselves


def payload(tmp_path: Path, files: Files, fmt: str, main: str | None = None,
            **limits: Any) -> dict[str, Any]:
    """Store the files as an upload would (under their names) and describe the task."""
    directory = tmp_path / "files"
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            shutil.copyfile(CORPUS / content, directory / name)
    names = list(files)
    main = main or names[0]
    return {"source": str(directory / main), "files_dir": str(directory), "main": main,
            "files": names, "format": fmt, "artifacts_dir": str(tmp_path / "artifacts"),
            "work_dir": str(tmp_path / "work"), "max_pixels": 50_000_000,
            "limits": all_limits(**limits)}


def run(tmp_path: Path, files: Files, fmt: str, *, full: bool = False,
        **limits: Any) -> tuple[Result, Events]:
    events: Events = []
    pipeline = process if full else analyse
    result = pipeline(as_payload(payload(tmp_path, files, fmt, **limits)),
                      lambda stage, fraction: events.append((stage, fraction)))
    json.dumps(result, allow_nan=False)  # plain JSON, no numpy values
    return result, events


def stats_of(tmp_path: Path, relative: str, fmt: str) -> dict[str, Any]:
    name = relative.rsplit("/", 1)[-1]
    result: dict[str, Any] = run(tmp_path, {name: relative}, fmt)[0]["stats"]
    return result


def fail(tmp_path: Path, files: Files, fmt: str, **limits: Any) -> TaskError:
    with pytest.raises(TaskError) as caught:
        run(tmp_path, files, fmt, full=True, **limits)
    error = caught.value
    assert str(tmp_path) not in error.message and "/" not in error.message
    assert "Error" not in error.message  # no raw exception text
    return error


SPIDER: Files = {
    "spider.obj": "OBJ/spider.obj", "spider.mtl": "OBJ/spider.mtl",
    **{n: f"OBJ/{n}" for n in ("SpiderTex.jpg", "drkwood2.jpg", "engineflare1.jpg",
                               "wal67ar_small.jpg", "wal69ar_small.jpg")},
}
BOX_GLTF: Files = {n: f"glTF2/BoxTextured-glTF/{n}"
            for n in ("BoxTextured.gltf", "BoxTextured0.bin", "CesiumLogoFlat.png")}


def test_box_obj(tmp_path: Path) -> None:
    result, events = run(tmp_path, {"box.obj": "OBJ/box.obj"}, "obj")
    stats = result["stats"]
    assert result["artifacts"] == []
    assert {k: stats[k] for k in ("meshes", "vertices", "faces", "bodies", "watertight")} == {
        "meshes": 1, "vertices": 8, "faces": 12, "bodies": 1, "watertight": True}
    assert stats["bounds"] == [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]
    assert stats["size"] == [1.0, 1.0, 1.0]
    assert stats["area"] == pytest.approx(6.0) and stats["volume"] == pytest.approx(1.0)
    assert (stats["materials"], stats["material_names"]) == (1, ["Default"])
    assert (stats["textures"], stats["missing_textures"]) == (0, [])
    assert events[0] == ("load", 0.0) and events[-1] == ("analyse", 1.0)


def test_spider_obj_with_its_mtl_and_textures(tmp_path: Path) -> None:
    stats = run(tmp_path, SPIDER, "obj")[0]["stats"]
    assert sorted(stats["material_names"]) == ["Augentex", "BeinTex", "HLeibTex", "Skin"]
    # the MTL names them with Windows `.\` paths: each still resolves to the uploaded file
    assert sorted(stats["texture_names"]) == sorted(n for n in SPIDER if n.endswith(".jpg"))
    assert (stats["textures"], stats["missing_textures"], stats["missing_files"]) == (5, [], [])
    assert stats["faces"] == 1368 and stats["watertight"] is False


def test_spider_obj_alone_names_what_is_missing(tmp_path: Path) -> None:
    stats = run(tmp_path, {"spider.obj": "OBJ/spider.obj"}, "obj")[0]["stats"]
    assert stats["missing_files"] == ["spider.mtl"]
    assert stats["textures"] == 0  # without its MTL, the OBJ names no texture
    assert stats["faces"] == 1368


def test_spider_mtl_without_its_images_lists_them_missing(tmp_path: Path) -> None:
    files: Files = {"spider.obj": "OBJ/spider.obj", "spider.mtl": "OBJ/spider.mtl",
                    "SpiderTex.jpg": "OBJ/SpiderTex.jpg"}
    stats = run(tmp_path, files, "obj")[0]["stats"]
    assert sorted(stats["missing_textures"]) == [
        "drkwood2.jpg", "engineflare1.jpg", "wal67ar_small.jpg", "wal69ar_small.jpg"]
    assert stats["textures"] == 5


def test_cube_with_usemtl_and_its_library(tmp_path: Path) -> None:
    files: Files = {"cube_usemtl.obj": "OBJ/cube_usemtl.obj",
                    "cube_usemtl.mtl": "OBJ/cube_usemtl.mtl"}
    stats = run(tmp_path, files, "obj")[0]["stats"]
    assert sorted(stats["material_names"]) == ["mtl", "mtl2", "mtl3"]
    assert (stats["faces"], stats["bodies"], stats["watertight"]) == (12, 1, True)
    assert stats["volume"] == pytest.approx(1.0)


def test_wuson_ply_and_obj_describe_the_same_model(tmp_path: Path) -> None:
    ply = stats_of(tmp_path / "ply", "PLY/Wuson.ply", "ply")
    obj = stats_of(tmp_path / "obj", "OBJ/WusonOBJ.obj", "obj")
    assert ply["faces"] == obj["faces"] > 0
    assert ply["area"] == pytest.approx(obj["area"], rel=1e-3)


@pytest.mark.parametrize("relative", ["PLY/cube.ply", "PLY/cube_binary.ply"])
def test_ply_cubes(tmp_path: Path, relative: str) -> None:
    stats = stats_of(tmp_path, relative, "ply")
    assert (stats["faces"], stats["watertight"], stats["bodies"]) == (12, True, 1)


@pytest.mark.parametrize("relative", ["STL/Spider_ascii.stl", "STL/Spider_binary.stl"])
def test_ascii_and_binary_spider_stl(tmp_path: Path, relative: str) -> None:
    stats = stats_of(tmp_path, relative, "stl")
    assert stats["faces"] == 1368


def test_sphere_with_hole_is_not_watertight(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, "STL/sphereWithHole.stl", "stl")
    assert (stats["vertices"], stats["faces"]) == (146, 285)
    assert stats["watertight"] is False and stats["volume"] is None
    assert stats["bounds"] == [[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]


def test_box_textured_glb_is_a_closed_box_despite_uv_seams(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "glb")
    assert (stats["meshes"], stats["vertices"], stats["faces"]) == (1, 24, 12)
    assert stats["watertight"] is True and stats["volume"] == pytest.approx(1.0)
    assert stats["material_names"] == ["Texture"] and stats["textures"] == 1


def test_box_textured_gltf_with_its_bin_and_png(tmp_path: Path) -> None:
    stats = run(tmp_path, BOX_GLTF, "gltf")[0]["stats"]
    assert (stats["vertices"], stats["faces"], stats["watertight"]) == (24, 12, True)
    assert stats["texture_names"] == ["CesiumLogoFlat.png"]
    assert stats["missing_textures"] == []


def test_gltf_without_its_image_loads_and_names_it_missing(tmp_path: Path) -> None:
    files = {k: v for k, v in BOX_GLTF.items() if not k.endswith(".png")}
    stats = run(tmp_path, files, "gltf")[0]["stats"]
    assert stats["faces"] == 12 and stats["missing_textures"] == ["CesiumLogoFlat.png"]


def test_gltf_without_its_buffer_is_corrupt_and_says_which(tmp_path: Path) -> None:
    files = {k: v for k, v in BOX_GLTF.items() if not k.endswith(".bin")}
    error = fail(tmp_path, files, "gltf")
    assert error.code == "corrupt_file" and "BoxTextured0.bin" in error.message


def test_engine_glb_counts_every_placed_mesh(tmp_path: Path) -> None:
    files: Files = {"engine.glb": "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"}
    result, events = run(tmp_path, files, "glb")
    stats = result["stats"]
    assert (stats["meshes"], stats["vertices"], stats["faces"]) == (115, 84657, 121496)
    assert stats["size"] == pytest.approx([743.384, 273.013, 268.0], abs=1e-2)
    assert len([e for e in events if e[0] == "analyse"]) > 100  # progress per placed mesh


def test_3mf_box(tmp_path: Path) -> None:
    stats = stats_of(tmp_path, "3MF/box.3mf", "3mf")
    assert (stats["faces"], stats["watertight"], stats["bodies"]) == (12, True, 1)


def test_collada_duck_with_its_texture(tmp_path: Path) -> None:
    files: Files = {"duck.dae": "Collada/duck.dae", "duckCM.tga": "Collada/duckCM.tga"}
    stats = run(tmp_path, files, "dae")[0]["stats"]
    assert (stats["vertices"], stats["faces"]) == (2399, 4212)
    assert (stats["texture_names"], stats["missing_textures"]) == (["duckCM.tga"], [])


@pytest.mark.parametrize("relative", ["FBX/box.fbx", "FBX/phong_cube.fbx", "FBX/spider.fbx",
                                      "FBX/embedded_ascii/box.FBX"])
def test_every_corpus_fbx_loads_in_metres_y_up(tmp_path: Path, relative: str) -> None:
    stats = stats_of(tmp_path, relative, "fbx")
    assert stats["faces"] >= 12 and stats["up_axis"] in ("X", "Y", "Z")
    assert max(stats["size"]) > 0


def test_scaled_and_mirrored_placements_are_measured_in_scene_units(tmp_path: Path) -> None:
    scene = trimesh.Scene()
    box = trimesh.creation.box()
    scene.add_geometry(box, node_name="wide", transform=np.diag([2.0, 1.0, 1.0, 1.0]))
    mirror = np.diag([-2.0, 1.0, 1.0, 1.0])
    mirror[:3, 3] = [10.0, 0.0, 0.0]
    scene.add_geometry(box, node_name="mirrored", transform=mirror)
    glb = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    stats = run(tmp_path, {"boxes.glb": glb}, "glb")[0]["stats"]
    assert (stats["meshes"], stats["faces"], stats["bodies"]) == (2, 24, 2)
    assert stats["volume"] == pytest.approx(4.0)
    assert stats["bounds"][0] == pytest.approx([-1.0, -0.5, -0.5])
    assert stats["bounds"][1] == pytest.approx([11.0, 0.5, 0.5])


def test_full_pipeline_stages_and_artifacts(tmp_path: Path) -> None:
    result, events = run(tmp_path, SPIDER, "obj", full=True)
    names = {a["name"]: a for a in result["artifacts"]}
    assert set(names) == {"thumbnail.png", "turntable.png", "model.glb"}
    assert names["model.glb"]["media_type"] == "model/gltf-binary"
    for artifact in result["artifacts"]:
        assert (tmp_path / "artifacts" / artifact["name"]).stat().st_size == artifact["size"]
    stages = list(dict.fromkeys(stage for stage, _ in events))
    assert stages == ["load", "analyse", "thumbnail", "web_model", "lods", "turntable"]
    for stage in stages:
        fractions = [f for s, f in events if s == stage]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    layout = result["stats"]["turntable"]
    assert (layout["frames"], layout["columns"], layout["rows"]) == (24, 6, 4)
    from PIL import Image

    with Image.open(tmp_path / "artifacts" / "thumbnail.png") as thumbnail:
        assert thumbnail.size == (512, 512)
        alpha = np.asarray(thumbnail.getchannel("A"))
        assert alpha[0, 0] == 0 and (alpha > 0).mean() > 0.05  # framed model, clear background
    with Image.open(tmp_path / "artifacts" / "turntable.png") as sprite:
        assert sprite.size == (layout["frame_width"] * 6, layout["frame_height"] * 4)


def test_web_model_loads_back_with_the_same_totals(tmp_path: Path) -> None:
    files: Files = {"engine.glb": "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"}
    result, _ = run(tmp_path, files, "glb", full=True, turntable_frames=0)
    stats = result["stats"]
    back = trimesh.load_scene(tmp_path / "artifacts" / "model.glb")
    placed = [back.geometry[back.graph[node][1]] for node in back.graph.nodes_geometry]
    assert sum(len(m.vertices) for m in placed) == stats["vertices"]
    assert sum(len(m.faces) for m in placed) == stats["faces"]
    # over the LOD threshold: 50% and 10% copies
    lods = stats["lods"]
    assert [lod["name"] for lod in lods] == ["model-lod1.glb", "model-lod2.glb"]
    for lod in lods:
        mesh = trimesh.load_mesh(tmp_path / "artifacts" / lod["name"])
        assert len(mesh.faces) == lod["faces"]
    # a CAD model of many small parts cannot lose all the faces asked for, but it loses many
    assert stats["faces"] * 0.6 > lods[0]["faces"] > lods[1]["faces"]


def test_lod_threshold_is_configurable(tmp_path: Path) -> None:
    result, _ = run(tmp_path, {"box.obj": "OBJ/box.obj"}, "obj", full=True, lod_min_faces=12,
                    turntable_frames=0)
    assert [lod["name"] for lod in result["stats"]["lods"]] == ["model-lod1.glb",
                                                                 "model-lod2.glb"]
    assert "turntable" not in result["stats"]


def test_face_limit_is_too_large(tmp_path: Path) -> None:
    error = fail(tmp_path, {"box.obj": "OBJ/box.obj"}, "obj", max_faces=11)
    assert error.code == "too_large" and "12 faces" in error.message


def test_point_cloud_says_so(tmp_path: Path) -> None:
    error = fail(tmp_path, {"p.obj": "OBJ/point_cloud.obj"}, "obj")
    assert error.code == "no_geometry"
    assert "point cloud with 3 points and no faces" in error.message


@pytest.mark.parametrize(("relative", "fmt", "code"), [
    ("invalid/empty.obj", "obj", "no_geometry"),
    ("invalid/malformed.obj", "obj", "corrupt_file"),
    ("invalid/crash-30d6d0f7c529b3b66b4131700b7a4580cd7082df.ply", "ply", "corrupt_file"),
    ("invalid/OutOfMemory.off", "off", "corrupt_file"),
])
def test_invalid_corpus_files_fail_with_a_code(tmp_path: Path, relative: str, fmt: str,
                                               code: str) -> None:
    assert fail(tmp_path, {relative.rsplit("/", 1)[-1]: relative}, fmt).code == code


def test_obj_with_only_comments_has_no_geometry(tmp_path: Path) -> None:
    assert fail(tmp_path, {"c.obj": b"# nothing here\n"}, "obj").code == "no_geometry"


def peak_memory_growth(action: Callable[[], object]) -> int:
    """Growth of the process's peak resident set, in bytes, while `action` runs."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    action()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def test_off_claiming_a_huge_count_fails_fast_without_allocating(tmp_path: Path) -> None:
    started = time.monotonic()
    errors: list[TaskError] = []
    growth = peak_memory_growth(
        lambda: errors.append(fail(tmp_path, {"o.off": "invalid/OutOfMemory.off"}, "off")))
    assert time.monotonic() - started < 2.0
    assert growth < 64 * 1024 * 1024
    assert "353,535,235,358 vertices" in errors[0].message


def test_binary_ply_claiming_a_huge_count_fails_fast(tmp_path: Path) -> None:
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    error = fail(tmp_path, {"h.ply": header + bytes(36)}, "ply")
    assert error.code == "corrupt_file" and "4,000,000,000 vertices" in error.message


def test_unparsable_glb_is_corrupt(tmp_path: Path) -> None:
    data = b"glTF\x02\x00\x00\x00\x20\x00\x00\x00" + bytes(20)
    assert fail(tmp_path, {"x.glb": data}, "glb").code == "corrupt_file"


def test_gltf_that_is_not_json_is_corrupt(tmp_path: Path) -> None:
    data = b'{"asset": {"version": "2.0"},'
    assert fail(tmp_path, {"x.gltf": data}, "gltf").code == "corrupt_file"


def test_draco_compressed_glb_goes_through_the_whole_pipeline(tmp_path: Path) -> None:
    from tasks.draco import pack_glb
    from tests.tasks.test_draco import draco_tree

    tree, buffers = draco_tree()
    result, _ = run(tmp_path, {"draco.glb": pack_glb(tree, buffers)}, "glb", full=True,
                    turntable_frames=0)
    stats = result["stats"]
    assert (stats["faces"], stats["watertight"]) == (320, True)  # an icosphere, decoded
    assert stats["area"] > 0 and "model.glb" in {a["name"] for a in result["artifacts"]}


def test_damaged_draco_data_fails_with_a_code(tmp_path: Path) -> None:
    from tasks.draco import pack_glb
    from tests.tasks.test_draco import draco_tree

    tree, buffers = draco_tree()
    damaged = [bytes(len(b)) for b in buffers]  # the compressed bytes zeroed
    error = fail(tmp_path, {"draco.glb": pack_glb(tree, damaged)}, "glb")
    assert error.code == "corrupt_file" and "Draco" in error.message


def test_a_big_model_turns_on_its_table_simplified(tmp_path: Path) -> None:
    from tasks import mesh

    files: Files = {"engine.glb": "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"}
    result, _ = run(tmp_path, files, "glb", full=True, turntable_max_faces=50_000)
    drawn = result["stats"]["turntable"]["faces"]
    assert drawn <= mesh.TURNTABLE_FACES and drawn <= result["stats"]["lods"][-1]["faces"]
    small, _ = run(tmp_path / "small", {"box.obj": "OBJ/box.obj"}, "obj", full=True)
    assert small["stats"]["turntable"]["faces"] == 12  # small models are drawn as they are


def test_one_core_or_two_make_the_same_model(tmp_path: Path) -> None:
    files: Files = {"engine.glb": "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"}
    one, one_events = run(tmp_path / "one", files, "glb", full=True, threads=1)
    two, two_events = run(tmp_path / "two", files, "glb", full=True, threads=2)
    assert one["stats"] == two["stats"] and one["artifacts"] == two["artifacts"]
    for name in ("model-lod1.glb", "model-lod2.glb", "turntable.png"):
        assert (tmp_path / "one" / "artifacts" / name).read_bytes() == (
            tmp_path / "two" / "artifacts" / name).read_bytes()
    # the fork's progress is reported in its place: the stages stay in order
    assert list(dict.fromkeys(s for s, _ in one_events)) == list(
        dict.fromkeys(s for s, _ in two_events))


def test_one_thread_forks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from settings import Settings

    def no_fork() -> int:
        raise AssertionError("KILN_TASK_THREADS=1 must run every stage in the child itself")

    threads = Settings.from_env({"KILN_DATA_DIR": str(tmp_path), "KILN_JWT_SECRET": "x" * 32,
                                 "KILN_TASK_THREADS": "1"}).pipeline_limits()["threads"]
    monkeypatch.setattr("os.fork", no_fork)
    files: Files = {"engine.glb": "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"}
    result, _ = run(tmp_path, files, "glb", full=True, threads=threads, turntable_frames=2)
    assert [lod["name"] for lod in result["stats"]["lods"]] == ["model-lod1.glb",
                                                                 "model-lod2.glb"]
