"""glTF content trimesh would misread, made with the format's own rules: strips and fans,
points and lines, sparse and quantised accessors, and extensions Kiln cannot read."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tasks.draco import pack_glb
from tasks.errors import TaskError
from tests.tasks.test_mesh import run

SQUARE = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float32)
FAN = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [-1, 1, 0]], dtype=np.float32)
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_COMPONENTS = {"int8": 5120, "uint8": 5121, "int16": 5122, "uint16": 5123, "uint32": 5125,
               "float32": 5126}


class Builder:
    """A glTF tree with one buffer, accessors added one array at a time."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.tree: dict[str, Any] = {"asset": {"version": "2.0"}, "accessors": [],
                                     "bufferViews": [], "meshes": [], "nodes": [],
                                     "scenes": [{"nodes": []}], "scene": 0}

    def view(self, array: NDArray[Any]) -> int:
        self.blob.extend(bytes(-len(self.blob) % 4))
        self.tree["bufferViews"].append({"buffer": 0, "byteOffset": len(self.blob),
                                         "byteLength": array.nbytes})
        self.blob.extend(np.ascontiguousarray(array).tobytes())
        return len(self.tree["bufferViews"]) - 1

    def accessor(self, array: NDArray[Any] | None, *, count: int | None = None,
                 width: int = 3, dtype: str = "float32", **extra: Any) -> int:
        accessor: dict[str, Any] = {"componentType": _COMPONENTS[dtype], "type": _TYPES[width],
                                    **extra}
        if array is not None:
            shaped = array.reshape(len(array), -1)
            accessor["bufferView"] = self.view(shaped)
            accessor["count"] = len(shaped)
        if count is not None:
            accessor["count"] = count
        self.tree["accessors"].append(accessor)
        return len(self.tree["accessors"]) - 1

    def mesh(self, *primitives: dict[str, Any]) -> None:
        self.tree["meshes"].append({"primitives": list(primitives)})
        self.tree["nodes"].append({"mesh": len(self.tree["meshes"]) - 1})
        self.tree["scenes"][0]["nodes"].append(len(self.tree["nodes"]) - 1)

    def glb(self) -> bytes:
        self.tree["buffers"] = [{"byteLength": len(self.blob)}]
        return pack_glb(self.tree, [bytes(self.blob)])


def raw_glb(tree: dict[str, Any], blob: bytes) -> bytes:
    """A GLB of the tree as it is (infinities written as 1e400), `blob` its BIN chunk."""
    text = json.dumps(tree).replace("Infinity", "1e400").encode()
    text += b" " * (-len(text) % 4)
    blob += bytes(-len(blob) % 4)
    return (struct.pack("<4sII", b"glTF", 2, 28 + len(text) + len(blob))
            + struct.pack("<II", len(text), 0x4E4F534A) + text
            + struct.pack("<II", len(blob), 0x004E4942) + blob)


def stats(tmp_path: Path, glb: bytes) -> dict[str, Any]:
    result: dict[str, Any] = run(tmp_path, {"model.glb": glb}, "glb")[0]["stats"]
    return result


def failure(tmp_path: Path, glb: bytes) -> TaskError:
    with pytest.raises(TaskError) as caught:
        run(tmp_path, {"model.glb": glb}, "glb")
    return caught.value


@pytest.mark.parametrize("indexed", [True, False])
def test_strips_and_fans_are_triangulated_and_counted(tmp_path: Path, indexed: bool) -> None:
    built = Builder()
    for mode, points in ((5, SQUARE), (6, FAN)):
        primitive: dict[str, Any] = {"attributes": {"POSITION": built.accessor(points)},
                                     "mode": mode}
        if indexed:
            order = np.arange(len(points), dtype=np.uint16)
            primitive["indices"] = built.accessor(order, width=1, dtype="uint16")
        built.mesh(primitive)
    found = stats(tmp_path, built.glb())
    assert found["faces"] == 2 + 3  # a strip of 4 vertices, a fan of 5
    assert found["area"] == pytest.approx(1.0 + 1.5)  # every triangle drawn, none twice


def test_strips_keep_one_winding_and_drop_their_restarts() -> None:
    from tasks.gltf_primitives import normalised

    built = Builder()
    order = np.array([0, 1, 2, 3, 3, 4, 4, 5, 6], dtype=np.uint8)  # a restart: two repeats
    points = np.zeros((7, 3), dtype=np.float32)
    built.mesh({"attributes": {"POSITION": built.accessor(points)}, "mode": 5,
                "indices": built.accessor(order, width=1, dtype="uint8")})
    built.tree["buffers"] = [{"byteLength": len(built.blob)}]
    tree, buffers, _ = normalised(built.tree, [bytes(built.blob)])
    (primitive,) = tree["meshes"][0]["primitives"]
    accessor = tree["accessors"][primitive["indices"]]
    view = tree["bufferViews"][accessor["bufferView"]]
    data = buffers[view["buffer"]][view["byteOffset"]:view["byteOffset"] + view["byteLength"]]
    faces = np.frombuffer(data, dtype=np.uint32).reshape(-1, 3).tolist()
    # p_i = (v_i, v_i+1+i%2, v_i+2-i%2): every other triangle turned back to one winding
    assert faces == [[0, 1, 2], [1, 3, 2], [4, 5, 6]]
    assert primitive["mode"] == 4 and accessor["count"] == 9


def test_lines_alone_are_no_geometry_and_say_lines(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 1},
               {"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 3})
    error = failure(tmp_path, built.glb())
    assert error.code == "no_geometry"
    assert "lines (2 primitives)" in error.message and "point cloud" not in error.message


def test_points_alone_are_a_point_cloud(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(FAN)}, "mode": 0})
    error = failure(tmp_path, built.glb())
    assert error.code == "no_geometry" and "point cloud with 5 points" in error.message


def test_a_file_mixing_modes_counts_the_triangles_and_says_what_it_skipped(
    tmp_path: Path,
) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5},
               {"attributes": {"POSITION": built.accessor(FAN)}, "mode": 0},
               {"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 2})
    found = stats(tmp_path, built.glb())
    assert found["faces"] == 2
    assert found["skipped_primitives"] == {"points": 5, "lines": 1}


def test_sparse_positions_are_applied(tmp_path: Path) -> None:
    built = Builder()
    moved = np.array([[0, 0, 7]], dtype=np.float32)
    sparse = {"count": 1,
              "indices": {"bufferView": built.view(np.array([3], dtype=np.uint32)),
                          "componentType": 5125},
              "values": {"bufferView": built.view(moved)}}
    base = built.accessor(SQUARE, sparse=sparse)
    # a sparse accessor without a bufferView starts from zeros
    lone = built.accessor(None, count=3, sparse={**sparse, "count": 1, "indices": {
        "bufferView": built.view(np.array([2], dtype=np.uint8)), "componentType": 5121}})
    built.mesh({"attributes": {"POSITION": base}, "mode": 5},
               {"attributes": {"POSITION": lone}})
    found = stats(tmp_path, built.glb())
    assert found["bounds"] == [[0.0, 0.0, 0.0], [1.0, 1.0, 7.0]]
    assert found["faces"] == 2 + 1
    # the strip's second triangle reaches up to the moved corner; the lone one is a sliver
    assert found["area"] == pytest.approx(0.5 + 99**0.5 / 2)


def test_a_strip_with_sparse_indices(tmp_path: Path) -> None:
    built = Builder()
    order = np.array([0, 1, 2, 2], dtype=np.uint8)
    sparse = {"count": 1,
              "indices": {"bufferView": built.view(np.array([3], dtype=np.uint8)),
                          "componentType": 5121},
              "values": {"bufferView": built.view(np.array([3], dtype=np.uint8))}}
    indices = built.accessor(order, width=1, dtype="uint8", sparse=sparse)
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5,
                "indices": indices})
    assert stats(tmp_path, built.glb())["faces"] == 2  # (0, 1, 2) and (1, 3, 2)


@pytest.mark.parametrize("where", ["accessor", "view", "stride", "sparse"])
def test_offsets_that_are_not_whole_numbers_are_corrupt(tmp_path: Path, where: str) -> None:
    built = Builder()
    sparse: dict[str, Any] = {"count": 1,
              "indices": {"bufferView": built.view(np.array([1], dtype=np.uint32)),
                          "componentType": 5125},
              "values": {"bufferView": built.view(np.zeros((1, 3), dtype=np.float32))}}
    position = built.accessor(SQUARE, sparse=sparse)
    built.mesh({"attributes": {"POSITION": position}, "mode": 5})
    huge = float("inf")  # written as 1e400, JSON's way to an infinity
    if where == "accessor":
        built.tree["accessors"][position]["byteOffset"] = huge
    elif where == "view":
        built.tree["bufferViews"][0]["byteLength"] = -4
    elif where == "stride":
        built.tree["bufferViews"][2]["byteStride"] = huge
    else:
        sparse["indices"]["byteOffset"] = 2.5
    built.tree["buffers"] = [{"byteLength": len(built.blob)}]
    assert failure(tmp_path, raw_glb(built.tree, bytes(built.blob))).code == "corrupt_file"


def test_counts_without_data_behind_them_are_too_large(tmp_path: Path) -> None:
    built = Builder()
    count = 2**40  # a few bytes of JSON: terabytes of zeros for a sparse accessor
    sparse = {"count": 1,
              "indices": {"bufferView": built.view(np.array([1], dtype=np.uint32)),
                          "componentType": 5125},
              "values": {"bufferView": built.view(np.zeros((1, 3), dtype=np.float32))}}
    built.mesh({"attributes": {"POSITION": built.accessor(None, count=count, sparse=sparse)},
                "mode": 5})
    assert failure(tmp_path, built.glb()).code == "too_large"


def test_sparse_indices_past_the_end_are_corrupt(tmp_path: Path) -> None:
    built = Builder()
    sparse = {"count": 1,
              "indices": {"bufferView": built.view(np.array([9], dtype=np.uint32)),
                          "componentType": 5125},
              "values": {"bufferView": built.view(np.zeros((1, 3), dtype=np.float32))}}
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE, sparse=sparse)}, "mode": 5})
    error = failure(tmp_path, built.glb())
    assert error.code == "corrupt_file" and "sparse" in error.message


def test_quantised_normalised_positions_are_scaled(tmp_path: Path) -> None:
    built = Builder()
    shorts = (SQUARE * 16383).astype(np.int16)  # half of the normalised range
    position = built.accessor(shorts, dtype="int16", normalized=True)
    built.tree["extensionsUsed"] = built.tree["extensionsRequired"] = ["KHR_mesh_quantization"]
    built.mesh({"attributes": {"POSITION": position}, "mode": 5})
    high = stats(tmp_path, built.glb())["bounds"][1]
    assert high == pytest.approx([16383 / 32767, 16383 / 32767, 0.0])


@pytest.mark.parametrize("name", ["EXT_meshopt_compression", "KHR_meshopt_compression"])
def test_meshopt_compression_is_named_not_called_damage(tmp_path: Path, name: str) -> None:
    built = Builder()
    position = built.accessor(SQUARE)
    built.mesh({"attributes": {"POSITION": position}, "mode": 5})
    view = built.tree["bufferViews"][0]
    view["buffer"] = 1  # the fallback buffer: no data, as meshopt encoders write it
    view["extensions"] = {name: {"buffer": 0, "byteOffset": 0, "byteLength": 8, "byteStride": 12,
                                 "count": 4, "mode": "ATTRIBUTES"}}
    built.tree["extensionsUsed"] = [name]
    built.tree["buffers"] = [{"byteLength": len(built.blob)},
                             {"byteLength": 48, "extensions": {name: {"fallback": True}}}]
    error = failure(tmp_path, raw_glb(built.tree, bytes(built.blob)))
    assert error.code == "unsupported_format" and name in error.message


def test_meshopt_with_its_plain_data_beside_it_is_read(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    # not required: the view's own buffer holds the plain data a reader without meshopt uses
    built.tree["bufferViews"][0]["extensions"] = {"EXT_meshopt_compression": {
        "buffer": 0, "byteOffset": 0, "byteLength": 8, "byteStride": 12, "count": 4,
        "mode": "ATTRIBUTES"}}
    built.tree["extensionsUsed"] = ["EXT_meshopt_compression"]
    assert stats(tmp_path, built.glb())["faces"] == 2


def test_required_extensions_kiln_cannot_read_are_named(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    built.tree["extensionsUsed"] = ["KHR_texture_basisu", "KHR_materials_variants",
                                    "EXT_lights_ies"]
    built.tree["extensionsRequired"] = ["KHR_texture_basisu", "KHR_materials_variants",
                                        "EXT_lights_ies"]
    error = failure(tmp_path, built.glb())
    assert error.code == "unsupported_format"
    assert "EXT_lights_ies, KHR_texture_basisu" in error.message
    assert "KHR_materials_variants" not in error.message  # materials: geometry reads the same


def test_every_material_counts_named_or_not(tmp_path: Path) -> None:
    built = Builder()
    built.tree["materials"] = [{"name": "Stone"}, {}, {"pbrMetallicRoughness": {}}]
    built.mesh(*({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5, "material": m}
                 for m in range(3)))
    found = stats(tmp_path, built.glb())
    assert found["materials"] == 3 and found["material_names"] == ["Stone"]


def _textured_square(image: bytes, mime: str) -> bytes:
    built = Builder()
    uv = SQUARE[:, :2].copy()
    view = built.view(np.frombuffer(image, dtype=np.uint8))
    built.tree.update(images=[{"bufferView": view, "mimeType": mime}],
                      textures=[{"source": 0}],
                      materials=[{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}])
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE),
                               "TEXCOORD_0": built.accessor(uv, width=2)},
                "mode": 5, "material": 0})
    return built.glb()


def _embedded_image(glb: bytes) -> bytes:
    from tests.tasks.test_draco import unpack_glb

    tree, (data,) = unpack_glb(glb)
    view = tree["bufferViews"][tree["images"][0]["bufferView"]]
    start = view.get("byteOffset", 0)
    return data[start:start + view["byteLength"]]


def test_a_jpeg_with_exif_is_encoded_afresh_without_it(tmp_path: Path) -> None:
    import io

    from PIL import Image

    def jpeg(**options: Any) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (16, 8), (200, 30, 30)).save(out, "JPEG", **options)
        return out.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90°": viewers would turn the texture against its UVs
    for original, passed in ((jpeg(), True), (jpeg(exif=exif.tobytes()), False)):
        work = tmp_path / str(passed)
        run(work, {"model.glb": _textured_square(original, "image/jpeg")}, "glb", full=True)
        embedded = _embedded_image((work / "artifacts" / "model.glb").read_bytes())
        assert embedded.startswith(original) is passed
        assert not Image.open(io.BytesIO(embedded)).getexif()


def test_a_texture_kept_as_read_still_saves_by_keyword(tmp_path: Path) -> None:
    import io

    import trimesh
    from PIL import Image

    from tasks.web_model import keep_encoded_textures, write_glb

    original = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(original, "PNG")
    glb = _textured_square(original.getvalue(), "image/png")
    scene = trimesh.load_scene(io.BytesIO(glb), file_type="glb")
    keep_encoded_textures(scene)
    write_glb(scene, tmp_path / "model.glb")
    (mesh,) = scene.geometry.values()
    image = mesh.visual.material.baseColorTexture
    again = io.BytesIO()
    image.save(fp=again, format="PNG")  # as trimesh's OBJ exporter calls it
    assert again.getvalue() == original.getvalue()


def test_a_mesh_used_by_several_nodes_counts_once_per_node(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    built.tree["nodes"] += [{"mesh": 0, "translation": [5, 0, 0]},
                            {"mesh": 0, "translation": [10, 0, 0]}]
    built.tree["scenes"][0]["nodes"] += [1, 2]
    found = stats(tmp_path, built.glb())
    assert (found["faces"], found["meshes"]) == (6, 3)  # as assimp counts: 3 × 2 faces


def test_gpu_instances_count_and_are_placed(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    moves = np.array([[0, 0, 0], [2, 0, 0], [4, 0, 0], [0, 0, 9]], dtype=np.float32)
    turns = np.array([[0, 0, 0, 1]] * 4, dtype=np.float32)
    built.tree["nodes"][0]["extensions"] = {"EXT_mesh_gpu_instancing": {"attributes": {
        "TRANSLATION": built.accessor(moves), "ROTATION": built.accessor(turns, width=4)}}}
    built.tree["extensionsUsed"] = built.tree["extensionsRequired"] = ["EXT_mesh_gpu_instancing"]
    found = stats(tmp_path, built.glb())
    assert (found["faces"], found["meshes"]) == (4 * 2, 4)
    assert found["bounds"] == [[0.0, 0.0, 0.0], [5.0, 1.0, 9.0]]


def test_a_node_with_two_parents_is_placed_under_each(tmp_path: Path) -> None:
    # the specification forbids it; Kiln places the node (and what hangs below it) under every
    # parent, as a renderer walking the hierarchy draws it
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    built.tree["nodes"] = [{"mesh": 0}, {"children": [0], "translation": [0, 5, 0]},
                           {"children": [0], "translation": [0, 10, 0]}]
    built.tree["scenes"][0]["nodes"] = [1, 2]
    found = stats(tmp_path, built.glb())
    assert (found["faces"], found["meshes"]) == (4, 2)
    assert found["bounds"] == [[0.0, 5.0, 0.0], [1.0, 11.0, 0.0]]


@pytest.mark.parametrize("nodes", [
    [{"mesh": 0, "children": [1]}, {"children": [0]}, {"children": [0]}],  # and a second parent
    [{"mesh": 0, "children": [1]}, {"children": [0]}, {"children": []}],
])
def test_a_node_hierarchy_that_loops_is_corrupt(tmp_path: Path, nodes: list[Any]) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    built.tree["nodes"] = nodes
    built.tree["scenes"][0]["nodes"] = [0, 2]
    error = failure(tmp_path, built.glb())
    assert error.code == "corrupt_file" and "loops" in error.message


def test_a_node_with_two_parents_keeps_its_instances_under_each(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    moves = np.array([[0, 0, 0], [2, 0, 0], [4, 0, 0]], dtype=np.float32)
    built.tree["nodes"] = [
        {"mesh": 0, "extras": {"note": "x" * 1000},
         "extensions": {"EXT_mesh_gpu_instancing": {"attributes": {
             "TRANSLATION": built.accessor(moves)}}}},
        {"children": [0]}, {"children": [0], "translation": [0, 5, 0]}]
    built.tree["scenes"][0]["nodes"] = [1, 2]
    found = stats(tmp_path, built.glb())
    assert (found["faces"], found["meshes"]) == (2 * 3 * 2, 6)


def test_texture_formats_required_are_read(tmp_path: Path) -> None:
    built = Builder()
    built.mesh({"attributes": {"POSITION": built.accessor(SQUARE)}, "mode": 5})
    built.tree["extensionsUsed"] = built.tree["extensionsRequired"] = ["EXT_texture_webp"]
    assert stats(tmp_path, built.glb())["faces"] == 2
