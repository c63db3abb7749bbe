"""Draco-compressed glTF decodes into plain accessors that trimesh reads; damage is refused."""

from __future__ import annotations

import copy
import io
import json
import struct
import sys
from typing import Any

import DracoPy
import numpy as np
import pytest
import trimesh
from numpy.typing import NDArray

from tasks.draco import EXTENSION, decode_draco, pack_glb, uses_draco
from tasks.errors import CorruptFile, TooLarge, UnsupportedFormat
from tests.conftest import corpus

Tree = dict[str, Any]
SPHERE = trimesh.creation.icosphere(subdivisions=2)  # 162 points, 320 faces
UV = np.stack([SPHERE.vertices[:, 0] * 0.5 + 0.5, SPHERE.vertices[:, 1] * 0.5 + 0.5], axis=1)
# 14-bit positions over the sphere's range of 2: a step of 2 / 2**14
TOLERANCE = 2 / 2**14
BOX_GLB = "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb"


def draco_tree(*, colors: bool = False) -> tuple[Tree, list[bytes]]:
    """A glTF whose one primitive is the sphere, compressed with Draco as exporters write it."""
    extra: dict[str, Any] = (
        {"colors": np.tile(np.array([[255, 128, 0, 255]], np.uint8), (len(SPHERE.vertices), 1))}
        if colors else {"tex_coord": UV}
    )
    payload = DracoPy.encode(SPHERE.vertices, SPHERE.faces, quantization_bits=14,
                             normals=SPHERE.vertex_normals, **extra)
    ids = {a["attribute_type"]: a["unique_id"] for a in DracoPy.decode(payload).attributes}
    count = len(SPHERE.vertices)
    semantics = {"POSITION": (0, "VEC3", 5126), "NORMAL": (1, "VEC3", 5126)}
    semantics |= {"COLOR_0": (2, "VEC4", 5121)} if colors else {"TEXCOORD_0": (3, "VEC2", 5126)}
    accessors: list[dict[str, Any]] = [
        {"componentType": kind, "count": count, "type": shape}
        for _, shape, kind in semantics.values()
    ]
    accessors.append({"componentType": 5125, "count": len(SPHERE.faces) * 3, "type": "SCALAR"})
    primitive = {
        "attributes": {name: i for i, name in enumerate(semantics)},
        "indices": len(semantics),
        "extensions": {EXTENSION: {"bufferView": 0, "attributes": {
            name: ids[draco_type] for name, (draco_type, _, _) in semantics.items()}}},
    }
    if not colors:  # trimesh keeps UVs only for a primitive with a material
        primitive["material"] = 0
    tree: Tree = {
        "asset": {"version": "2.0"},
        "extensionsUsed": [EXTENSION],
        "extensionsRequired": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [primitive]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1]}}],
        "accessors": accessors,
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(payload)}],
        "buffers": [{"byteLength": len(payload)}],
    }
    return tree, [payload]


def unpack_glb(glb: bytes) -> tuple[Tree, list[bytes]]:
    """The JSON and BIN chunks of a GLB, checked against the container's rules."""
    magic, version, length = struct.unpack_from("<4sII", glb)
    assert (magic, version, length) == (b"glTF", 2, len(glb))
    json_length, json_type = struct.unpack_from("<II", glb, 12)
    assert json_type == 0x4E4F534A and json_length % 4 == 0
    tree = json.loads(glb[20 : 20 + json_length])
    rest = 20 + json_length
    if rest == len(glb):
        return tree, []
    bin_length, bin_type = struct.unpack_from("<II", glb, rest)
    assert bin_type == 0x004E4942 and bin_length % 4 == 0 and rest + 8 + bin_length == len(glb)
    return tree, [glb[rest + 8 :]]


def load_glb(glb: bytes) -> trimesh.Scene:
    return trimesh.load_scene(io.BytesIO(glb), file_type="glb")


def only_mesh(scene: trimesh.Scene) -> trimesh.Trimesh:
    (mesh,) = scene.geometry.values()
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def nearest(points: NDArray[np.float64], reference: NDArray[np.float64]) -> NDArray[np.intp]:
    """For each point, the index of the closest reference point; all must be within TOLERANCE."""
    distances = np.linalg.norm(points[:, None, :] - reference[None, :, :], axis=2)
    closest: NDArray[np.intp] = distances.argmin(axis=1)
    assert distances[np.arange(len(points)), closest].max() <= TOLERANCE
    return closest


def canonical(faces: NDArray[Any]) -> set[tuple[int, ...]]:
    """Triangles as sets of rotations-equal tuples: winding kept, starting vertex ignored."""
    return {tuple(np.roll(face, -int(np.argmin(face)))) for face in np.asarray(faces)}


def round_trip(tree: Tree, buffers: list[bytes], **limits: int) -> tuple[Tree, trimesh.Scene]:
    """Through a GLB as an upload would arrive, decoded, packed again and loaded by trimesh."""
    arrived_tree, arrived_buffers = unpack_glb(pack_glb(tree, buffers))
    decoded_tree, decoded_buffers = decode_draco(arrived_tree, arrived_buffers, **limits)
    assert len(decoded_buffers) == len(arrived_buffers) + 1
    return decoded_tree, load_glb(pack_glb(decoded_tree, decoded_buffers))


def test_sphere_survives_compression_with_its_topology_and_attributes() -> None:
    tree, buffers = draco_tree()
    decoded, scene = round_trip(tree, buffers)
    mesh = only_mesh(scene)
    assert (len(mesh.vertices), len(mesh.faces)) == (162, 320)
    # Draco reorders points: map each back to the original by position, then compare everything
    order = nearest(mesh.vertices, SPHERE.vertices)
    assert len(set(order.tolist())) == 162
    assert canonical(order[mesh.faces]) == canonical(SPHERE.faces)
    assert np.allclose(mesh.vertex_normals, SPHERE.vertex_normals[order], atol=0.02)
    assert isinstance(mesh.visual, trimesh.visual.TextureVisuals)
    flipped = np.stack([UV[:, 0], 1 - UV[:, 1]], axis=1)  # trimesh puts glTF's V origin below
    assert np.allclose(mesh.visual.uv, flipped[order], atol=1e-6)
    assert "extensionsUsed" not in decoded and "extensionsRequired" not in decoded
    primitive = decoded["meshes"][0]["primitives"][0]
    assert "extensions" not in primitive
    assert decoded["accessors"][primitive["indices"]]["componentType"] == 5125
    position = decoded["accessors"][primitive["attributes"]["POSITION"]]
    assert np.allclose(position["min"], SPHERE.bounds[0], atol=TOLERANCE)


def test_vertex_colours_are_decoded() -> None:
    tree, buffers = draco_tree(colors=True)
    decoded, scene = round_trip(tree, buffers)
    colour = decoded["accessors"][decoded["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"]]
    assert (colour["componentType"], colour["normalized"]) == (5121, True)
    visual = only_mesh(scene).visual
    assert isinstance(visual, trimesh.visual.ColorVisuals)
    assert visual.vertex_colors.tolist() == [[255, 128, 0, 255]] * 162


def test_primitives_sharing_a_compressed_mesh_decode_it_once() -> None:
    tree, buffers = draco_tree()
    primitive = tree["meshes"][0]["primitives"][0]
    tree["meshes"][0]["primitives"].append(copy.deepcopy(primitive))
    decoded, scene = round_trip(tree, buffers)
    # one view each for POSITION, NORMAL, TEXCOORD_0 and indices, after the compressed one
    assert len(decoded["bufferViews"]) == 1 + 4
    assert [len(g.faces) for g in scene.geometry.values()] == [320, 320]


def test_file_without_draco_passes_through() -> None:
    tree, buffers = unpack_glb(corpus(BOX_GLB).read_bytes())
    assert not uses_draco(tree)
    assert decode_draco(tree, buffers) == (tree, buffers)
    assert len(load_glb(pack_glb(tree, buffers)).geometry) == 1


def test_uses_draco_survives_any_json() -> None:
    assert uses_draco(draco_tree()[0])
    for strange in ({}, {"meshes": 3}, {"meshes": [{"primitives": [None, 1]}]},
                    {"extensionsUsed": "KHR_draco_mesh_compression"}):
        assert not uses_draco(strange)


def refused(tree: Tree, buffers: list[bytes], kind: type[Exception] = CorruptFile,
            **limits: int) -> str:
    with pytest.raises(kind) as caught:
        decode_draco(tree, buffers, **limits)
    message = str(caught.value)
    assert message.isprintable() and "/" not in message
    return message


def test_damaged_payload_is_corrupt() -> None:
    tree, (payload,) = draco_tree()
    message = refused(tree, [payload[: len(payload) // 2]])
    assert message.startswith("The glTF's Draco-compressed mesh could not be decoded: ")


def test_count_mismatch_is_corrupt() -> None:
    tree, buffers = draco_tree()
    tree["accessors"][1]["count"] += 1  # NORMAL
    assert "NORMAL" in refused(tree, buffers)
    tree, buffers = draco_tree()
    tree["accessors"][-1]["count"] -= 3  # indices
    assert "indices" in refused(tree, buffers)


def test_buffer_view_out_of_range_is_corrupt() -> None:
    tree, buffers = draco_tree()
    tree["meshes"][0]["primitives"][0]["extensions"][EXTENSION]["bufferView"] = 5
    assert "bufferView" in refused(tree, buffers)
    tree, buffers = draco_tree()
    tree["bufferViews"][0]["byteLength"] += 1
    assert "outside" in refused(tree, buffers)
    tree, buffers = draco_tree()
    tree["bufferViews"][0]["buffer"] = 1
    refused(tree, buffers)


def test_missing_attribute_is_corrupt() -> None:
    tree, buffers = draco_tree()
    draco_ids = tree["meshes"][0]["primitives"][0]["extensions"][EXTENSION]["attributes"]
    draco_ids["NORMAL"] = 99
    assert "NORMAL" in refused(tree, buffers)


def test_limits() -> None:
    tree, buffers = draco_tree()
    refused(tree, buffers, TooLarge, max_points=161)
    refused(tree, buffers, TooLarge, max_faces=319)


def test_without_dracopy_the_format_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "DracoPy", None)  # makes `import DracoPy` fail
    tree, buffers = draco_tree()
    assert "DracoPy" in refused(tree, buffers, UnsupportedFormat)


def test_pack_glb_merges_buffers_and_aligns_chunks() -> None:
    tree, buffers = unpack_glb(corpus(BOX_GLB).read_bytes())
    # split into two buffers: the first one's odd length makes the second need alignment
    split = 768  # where the index view starts: indices, then the image, go to the second
    for view in tree["bufferViews"]:
        if view["byteOffset"] >= split:
            view["buffer"], view["byteOffset"] = 1, view["byteOffset"] - split + 4
    halves = [buffers[0][:split] + b"\xff" * 2, bytes(4) + buffers[0][split:]]
    tree["buffers"] = [{"byteLength": split, "uri": "a.bin"}, {"byteLength": len(halves[1])}]
    packed_tree, (blob,) = unpack_glb(pack_glb(tree, halves))
    (merged,) = packed_tree["buffers"]
    assert "uri" not in merged and merged["byteLength"] <= len(blob)
    assert all(v["buffer"] == 0 for v in packed_tree["bufferViews"])
    original = only_mesh(load_glb(corpus(BOX_GLB).read_bytes()))
    packed = only_mesh(load_glb(pack_glb(tree, halves)))
    assert np.array_equal(packed.vertices, original.vertices)
    assert np.array_equal(packed.faces, original.faces)


def test_non_finite_values_are_corrupt() -> None:
    tree, _ = draco_tree()
    broken = SPHERE.vertex_normals.astype(np.float32)
    broken[5] = np.nan
    payload = DracoPy.encode(SPHERE.vertices, SPHERE.faces, quantization_bits=14, tex_coord=UV,
                             generic_attributes={7: broken})
    ids = {a["attribute_type"]: a["unique_id"] for a in DracoPy.decode(payload).attributes}
    extension = tree["meshes"][0]["primitives"][0]["extensions"][EXTENSION]
    extension["attributes"] = {"POSITION": ids[0], "NORMAL": 7, "TEXCOORD_0": ids[3]}
    tree["bufferViews"][0]["byteLength"] = len(payload)
    assert "NORMAL values are not finite" in refused(tree, [payload])
