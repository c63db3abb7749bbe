"""The mesh pipeline measures real models and turns every bad file into a coded error."""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from tasks.errors import TaskError
from tasks.mesh import analyse
from tasks.progress import Result

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"

Events = list[tuple[str, float]]


def store(tmp_path: Path, relative: str | None, data: bytes | None = None) -> Path:
    """Store a corpus file (or bytes) as `source`, with no extension to give its format away."""
    source = tmp_path / "source"
    if relative is not None:
        shutil.copyfile(CORPUS / relative, source)
    else:
        assert data is not None
        source.write_bytes(data)
    return source


def analyse_source(source: Path, fmt: str) -> tuple[Result, Events]:
    events: Events = []
    payload = {"source": str(source), "format": fmt, "artifacts_dir": str(source.parent / "out")}
    result = analyse(payload, lambda stage, fraction: events.append((stage, fraction)))
    json.dumps(result, allow_nan=False)  # plain JSON, no numpy values
    return result, events


def run(
    tmp_path: Path, relative: str | None, fmt: str, data: bytes | None = None
) -> tuple[Result, Events]:
    return analyse_source(store(tmp_path, relative, data), fmt)


def fail(tmp_path: Path, relative: str | None, fmt: str, data: bytes | None = None) -> TaskError:
    with pytest.raises(TaskError) as caught:
        run(tmp_path, relative, fmt, data)
    error = caught.value
    assert str(tmp_path) not in error.message and "/" not in error.message
    assert "Error" not in error.message  # no raw exception text
    return error


def test_box_obj(tmp_path: Path) -> None:
    result, events = run(tmp_path, "OBJ/box.obj", "obj")
    assert result["artifacts"] == []
    assert result["stats"] == {
        "meshes": 1,
        "vertices": 8,
        "faces": 12,
        "bounds": [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]],
        "size": [1.0, 1.0, 1.0],
        "area": pytest.approx(6.0),
        "watertight": True,
        "volume": pytest.approx(1.0),
        "materials": ["Default"],
        "bodies": 1,
        "external_references": [],
    }
    stages = [stage for stage, _ in events]
    assert stages == sorted(stages, key=["load", "analyse"].index)
    assert events[0] == ("load", 0.0) and events[-1] == ("analyse", 1.0)
    for stage in ("load", "analyse"):
        fractions = [f for s, f in events if s == stage]
        assert fractions == sorted(fractions)
        assert min(fractions) >= 0.0 and max(fractions) == 1.0


@pytest.fixture
def opened_files() -> Iterator[list[str]]:
    """Every file path the process opens while the test runs."""
    opened: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | Path):
            opened.append(str(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet after the test
    yield opened
    active[0] = False


def test_obj_does_not_read_its_mtl_neighbour(tmp_path: Path, opened_files: list[str]) -> None:
    shutil.copyfile(CORPUS / "OBJ/cube_usemtl.mtl", tmp_path / "cube_usemtl.mtl")
    source = store(tmp_path, "OBJ/cube_usemtl.obj")
    opened_files.clear()
    result, _ = analyse_source(source, "obj")
    read_here = {Path(p).name for p in opened_files if Path(p).parent == tmp_path}
    assert read_here == {"source"}
    stats = result["stats"]
    assert stats["external_references"] == ["cube_usemtl.mtl"]
    assert stats["materials"] == ["mtl3", "mtl", "mtl2"]
    # trimesh splits the cube by material; the model is still one closed cube
    assert (stats["meshes"], stats["faces"], stats["bodies"]) == (3, 12, 1)
    assert stats["watertight"] is True and stats["volume"] == pytest.approx(1.0)


def test_spider_obj_lists_its_used_materials(tmp_path: Path) -> None:
    stats = run(tmp_path, "OBJ/spider.obj", "obj")[0]["stats"]
    assert sorted(stats["materials"]) == ["Augentex", "BeinTex", "HLeibTex", "Skin"]
    assert stats["external_references"] == ["spider.mtl"]
    assert stats["faces"] == 1368 and stats["watertight"] is False


def test_sphere_with_hole_is_not_watertight(tmp_path: Path) -> None:
    stats = run(tmp_path, "STL/sphereWithHole.stl", "stl")[0]["stats"]
    assert (stats["vertices"], stats["faces"]) == (146, 285)
    assert stats["watertight"] is False and stats["volume"] is None
    assert stats["bounds"] == [[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]


@pytest.mark.parametrize("relative", ["STL/Spider_ascii.stl", "STL/Spider_binary.stl"])
def test_ascii_and_binary_spider_agree(tmp_path: Path, relative: str) -> None:
    stats = run(tmp_path, relative, "stl")[0]["stats"]
    counts = [stats[key] for key in ("meshes", "vertices", "faces", "bodies")]
    assert counts == [1, 722, 1368, 18]
    assert stats["size"] == pytest.approx([6.22979, 8.0, 3.298658])


@pytest.mark.parametrize("relative", ["PLY/cube.ply", "PLY/cube_binary.ply"])
def test_ply_cubes(tmp_path: Path, relative: str) -> None:
    stats = run(tmp_path, relative, "ply")[0]["stats"]
    assert (stats["vertices"], stats["faces"], stats["watertight"]) == (8, 12, True)
    assert stats["volume"] == pytest.approx(1.0) and stats["area"] == pytest.approx(6.0)
    assert stats["materials"] == []


def test_wuson_ply_and_obj_describe_the_same_model(tmp_path: Path) -> None:
    ply = run(tmp_path, "PLY/Wuson.ply", "ply")[0]["stats"]
    obj = run(tmp_path, "OBJ/WusonOBJ.obj", "obj")[0]["stats"]
    assert ply["faces"] == obj["faces"] == 3732
    assert ply["bodies"] == obj["bodies"]
    assert ply["area"] == pytest.approx(obj["area"], rel=1e-6)
    for ply_corner, obj_corner in zip(ply["bounds"], obj["bounds"], strict=True):
        assert ply_corner == pytest.approx(obj_corner, abs=1e-6)


def test_box_textured_glb_is_a_closed_box_despite_uv_seams(tmp_path: Path) -> None:
    stats = run(tmp_path, "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "glb")[0]["stats"]
    assert (stats["meshes"], stats["vertices"], stats["faces"]) == (1, 24, 12)
    assert stats["watertight"] is True and stats["volume"] == pytest.approx(1.0)
    assert stats["bodies"] == 1
    assert stats["materials"] == ["Texture"]


def test_engine_glb_counts_every_placed_mesh(tmp_path: Path) -> None:
    result, events = run(tmp_path, "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb", "glb")
    stats = result["stats"]
    assert (stats["meshes"], stats["vertices"], stats["faces"]) == (115, 84657, 121496)
    assert stats["size"] == pytest.approx([743.384, 273.013, 268.0], abs=1e-2)
    assert len([e for e in events if e[0] == "analyse"]) > 100  # progress per placed mesh


def test_gltf_with_a_separate_buffer_is_not_read_yet(tmp_path: Path) -> None:
    buffer = "glTF2/BoxTextured-glTF/BoxTextured0.bin"
    shutil.copyfile(CORPUS / buffer, tmp_path / "BoxTextured0.bin")
    error = fail(tmp_path, "glTF2/BoxTextured-glTF/BoxTextured.gltf", "gltf")
    assert error.code == "unsupported_format"
    assert "BoxTextured0.bin" in error.message


def test_gltf_with_embedded_buffers_loads(tmp_path: Path) -> None:
    scene = trimesh.load_scene(CORPUS / "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb")
    files = trimesh.exchange.gltf.export_gltf(scene, embed_buffers=True)  # type: ignore[no-untyped-call]
    stats = run(tmp_path, None, "gltf", files["model.gltf"])[0]["stats"]
    assert (stats["faces"], stats["watertight"]) == (12, True)
    assert stats["volume"] == pytest.approx(1.0)


def test_scaled_and_mirrored_placements_are_measured_in_scene_units(tmp_path: Path) -> None:
    scene = trimesh.Scene()
    box = trimesh.creation.box()
    scene.add_geometry(box, node_name="wide", transform=np.diag([2.0, 1.0, 1.0, 1.0]))
    mirror = np.diag([-2.0, 1.0, 1.0, 1.0])
    mirror[:3, 3] = [10.0, 0.0, 0.0]
    scene.add_geometry(box, node_name="mirrored", transform=mirror)
    glb = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    stats = run(tmp_path, None, "glb", glb)[0]["stats"]
    assert (stats["meshes"], stats["faces"], stats["bodies"]) == (2, 24, 2)
    assert stats["volume"] == pytest.approx(4.0)
    assert stats["area"] == pytest.approx(2 * (2 + 2 + 1) * 2)
    assert stats["bounds"][0] == pytest.approx([-1.0, -0.5, -0.5])
    assert stats["bounds"][1] == pytest.approx([11.0, 0.5, 0.5])


@pytest.mark.parametrize(
    ("relative", "fmt"),
    [("3MF/box.3mf", "3mf"), ("Collada/duck.dae", "dae"), ("FBX/box.fbx", "fbx")],
)
def test_recognised_formats_without_a_loader_yet(tmp_path: Path, relative: str, fmt: str) -> None:
    assert fail(tmp_path, relative, fmt).code == "unsupported_format"


def test_point_cloud_says_so(tmp_path: Path) -> None:
    error = fail(tmp_path, "OBJ/point_cloud.obj", "obj")
    assert error.code == "no_geometry"
    assert "point cloud with 3 points and no faces" in error.message


def test_empty_obj_has_no_geometry(tmp_path: Path) -> None:
    assert fail(tmp_path, "invalid/empty.obj", "obj").code == "no_geometry"


def test_obj_with_only_comments_has_no_geometry(tmp_path: Path) -> None:
    assert fail(tmp_path, None, "obj", b"# nothing here\n").code == "no_geometry"


def test_malformed_obj_is_corrupt(tmp_path: Path) -> None:
    error = fail(tmp_path, "invalid/malformed.obj", "obj")
    assert error.code == "corrupt_file"
    assert "OBJ" in error.message


def test_crash_ply_is_corrupt(tmp_path: Path) -> None:
    relative = "invalid/crash-30d6d0f7c529b3b66b4131700b7a4580cd7082df.ply"
    assert fail(tmp_path, relative, "ply").code == "corrupt_file"


def peak_memory_growth(action: Callable[[], object]) -> int:
    """Growth of the process's peak resident set, in bytes, while `action` runs."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    action()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def test_off_claiming_a_huge_count_fails_fast_without_allocating(tmp_path: Path) -> None:
    started = time.monotonic()
    errors: list[TaskError] = []
    growth = peak_memory_growth(
        lambda: errors.append(fail(tmp_path, "invalid/OutOfMemory.off", "off"))
    )
    assert time.monotonic() - started < 2.0
    assert growth < 64 * 1024 * 1024
    assert errors[0].code == "corrupt_file"
    assert "353,535,235,358 vertices" in errors[0].message


def test_binary_ply_claiming_a_huge_count_fails_fast(tmp_path: Path) -> None:
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 4000000000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    error = fail(tmp_path, None, "ply", header + bytes(36))
    assert error.code == "corrupt_file"
    assert "4,000,000,000 vertices" in error.message


def test_unparsable_glb_is_corrupt(tmp_path: Path) -> None:
    error = fail(tmp_path, None, "glb", b"glTF\x02\x00\x00\x00\x20\x00\x00\x00" + bytes(20))
    assert error.code == "corrupt_file"


def test_gltf_that_is_not_json_is_corrupt(tmp_path: Path) -> None:
    assert fail(tmp_path, None, "gltf", b'{"asset": {"version": "2.0"},').code == "corrupt_file"
