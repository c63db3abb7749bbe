"""The FBX loader: real files in metres, Y up, embedded images decoded, hostile files refused."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh
from PIL import Image
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from tasks.errors import CorruptFile, NoGeometry, TaskError, TooLarge
from tasks.fbx import FbxModel, load_fbx
from tests.conftest import ROOT, corpus

Props = list[tuple[str, Any]]
FbxNode = tuple[bytes, Props, list[Any]]  # name, typed properties, children
CORNERS = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
QUADS = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
# FBX closes a polygon by writing its last index as -index - 1
POLYGONS = [i if k < 3 else -i - 1 for quad in QUADS for k, i in enumerate(quad)]


# --- FBX writers for synthetic files -----------------------------------------------------------


def ascii_box(up_axis: int = 2, unit: float = 100.0, size: tuple[float, ...] = (1, 2, 3),
              geometry: bool = True) -> bytes:
    """A box of `size` file units from the origin, in a file with the given up axis and unit."""
    scaled = (c * s for corner in CORNERS for c, s in zip(corner, size, strict=True))
    vertices = ",".join(f"{c:g}" for c in scaled)
    front, front_sign = (1, -1) if up_axis == 2 else (2, 1)
    mesh = (
        f'\tGeometry: 100, "Geometry::Box", "Mesh" {{\n\t\tVertices: *24 {{\n\t\t\ta: {vertices}'
        f'\n\t\t}}\n\t\tPolygonVertexIndex: *24 {{\n\t\t\ta: {",".join(map(str, POLYGONS))}'
        "\n\t\t}\n\t}\n"
    ) if geometry else ""
    settings = [("UpAxis", up_axis), ("UpAxisSign", 1), ("FrontAxis", front),
                ("FrontAxisSign", front_sign), ("CoordAxis", 0), ("CoordAxisSign", 1)]
    lines = "".join(f'\t\tP: "{k}", "int", "Integer", "",{v}\n' for k, v in settings)
    return (
        "; FBX 7.4.0 project file\nFBXHeaderExtension:  {\n\tFBXVersion: 7400\n}\n"
        f"GlobalSettings:  {{\n\tVersion: 1000\n\tProperties70:  {{\n{lines}"
        f'\t\tP: "UnitScaleFactor", "double", "Number", "",{unit}\n\t}}\n}}\n'
        f'Objects:  {{\n{mesh}\tModel: 200, "Model::Box", "Mesh" {{\n\t\tVersion: 232\n\t}}\n}}\n'
        'Connections:  {\n\tC: "OO",200,0\n\tC: "OO",100,200\n}\n'
    ).encode()


def _properties(props: Props) -> bytes:
    out = b""
    for code, value in props:
        if code in "SR":
            out += code.encode() + struct.pack("<I", len(value)) + value
        elif code in "di":
            raw = struct.pack(f"<{len(value)}{code}", *value)
            out += code.encode() + struct.pack("<III", len(value), 0, len(raw)) + raw
        else:
            out += code.encode() + struct.pack("<" + {"I": "i", "L": "q", "D": "d"}[code], value)
    return out


def _record(start: int, node: FbxNode) -> bytes:
    name, props, children = node
    body = _properties(props)
    position = start + 13 + len(name) + len(body)
    nested = b""
    for child in children:
        nested += _record(position + len(nested), child)
    if children:
        nested += bytes(13)
    end = position + len(nested)
    return struct.pack("<IIIB", end, len(props), len(body), len(name)) + name + body + nested


def binary_fbx(nodes: list[FbxNode]) -> bytes:
    out = b"Kaydara FBX Binary  \x00\x1a\x00" + struct.pack("<I", 7400)
    for node in nodes:
        out += _record(len(out), node)
    return out + bytes(13) + bytes(16)


def _p(name: bytes, kind: bytes, *values: tuple[str, Any]) -> FbxNode:
    return (b"P", [("S", name), ("S", kind), ("S", b""), ("S", b""), *values], [])


def binary_box(up_axis: int = 1, unit: float = 1.0, image: bytes | None = None,
               texture: bytes | None = None) -> bytes:
    """A unit box with a material; `texture` names its diffuse map, `image` embeds it."""
    front = (2, 1) if up_axis == 1 else (1, -1)
    verts = [float(c) for corner in CORNERS for c in corner]
    objects: list[FbxNode] = [
        (b"Geometry", [("L", 100), ("S", b"Box\x00\x01Geometry"), ("S", b"Mesh")], [
            (b"Vertices", [("d", verts)], []), (b"PolygonVertexIndex", [("i", POLYGONS)], []),
            (b"LayerElementMaterial", [("I", 0)], [
                (b"MappingInformationType", [("S", b"AllSame")], []),
                (b"ReferenceInformationType", [("S", b"IndexToDirect")], []),
                (b"Materials", [("i", [0])], []),
            ]),
            (b"Layer", [("I", 0)], [(b"LayerElement", [], [
                (b"Type", [("S", b"LayerElementMaterial")], []), (b"TypedIndex", [("I", 0)], []),
            ])]),
        ]),
        (b"Model", [("L", 200), ("S", b"Box\x00\x01Model"), ("S", b"Mesh")],
         [(b"Version", [("I", 232)], [])]),
        (b"Material", [("L", 300), ("S", b"Paint\x00\x01Material"), ("S", b"")], [
            (b"Properties70", [], [_p(b"DiffuseColor", b"Color", ("D", 0.25), ("D", 0.5),
                                      ("D", 1.0))]),
        ]),
    ]
    links = [(b"OO", 200, 0), (b"OO", 100, 200), (b"OO", 300, 200)]
    if texture is not None:
        names: list[FbxNode] = [(b"FileName", [("S", b"C:\\art\\" + texture)], []),
                 (b"RelativeFilename", [("S", b"..\\art\\" + texture)], [])]
        objects.append((b"Texture", [("L", 400), ("S", b"Tex\x00\x01Texture"), ("S", b"")], names))
        links.append((b"OP", 400, 300))
        if image is not None:
            video = [("L", 500), ("S", b"Vid\x00\x01Video"), ("S", b"Clip")]
            objects.append((b"Video", video, [*names, (b"Content", [("R", image)], [])]))
            links.append((b"OO", 500, 400))
    connections: list[FbxNode] = [
        (b"C", [("S", kind), ("L", a), ("L", b)] + ([("S", b"DiffuseColor")] * (kind == b"OP")),
         []) for kind, a, b in links
    ]
    settings = [_p(name, b"int", ("I", value)) for name, value in (
        (b"UpAxis", up_axis), (b"UpAxisSign", 1), (b"FrontAxis", front[0]),
        (b"FrontAxisSign", front[1]), (b"CoordAxis", 0), (b"CoordAxisSign", 1))]
    return binary_fbx([
        (b"FBXHeaderExtension", [], [(b"FBXVersion", [("I", 7400)], [])]),
        (b"GlobalSettings", [], [(b"Properties70", [], [
            *settings, _p(b"UnitScaleFactor", b"double", ("D", unit))])]),
        (b"Objects", [], objects),
        (b"Connections", [], connections),
    ])


def png(size: tuple[int, int], colour: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def load(tmp_path: Path, data: bytes, **limits: int) -> FbxModel:
    source = tmp_path / "source"  # no extension, as the integrator stores uploads
    source.write_bytes(data)
    return load_fbx(source, **limits)


def refused(tmp_path: Path, data: bytes, kind: type[TaskError], **limits: int) -> str:
    with pytest.raises(kind) as caught:
        load(tmp_path, data, **limits)
    message = caught.value.message
    assert "/" not in message and str(tmp_path) not in message and message.isprintable()
    return message


def close(found: Any, expected: list[list[float]]) -> bool:
    return bool(np.allclose(found, expected, atol=1e-6))


def only_mesh(model: FbxModel) -> trimesh.Trimesh:
    (mesh,) = model.scene.geometry.values()
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def look(model: FbxModel) -> tuple[TextureVisuals, PBRMaterial]:
    """The only mesh's visuals and material, as a renderer would take them."""
    visual = only_mesh(model).visual
    assert isinstance(visual, TextureVisuals) and isinstance(visual.material, PBRMaterial)
    return visual, visual.material


# --- the corpus --------------------------------------------------------------------------------


def test_blender_box_is_placed_by_its_nodes_in_metres() -> None:
    model = load_fbx(corpus("FBX/box.fbx"))
    mesh = only_mesh(model)
    # 12 triangles; welding the 36 corners keeps one vertex per face corner: 6 faces x 4
    assert (len(mesh.vertices), len(mesh.faces)) == (24, 12)
    assert (model.unit_scale, model.up_axis) == (1.0, "Y")  # UnitScaleFactor 100: metres
    assert model.materials == ["Material_50"] and model.textures == []
    # the mesh spans +-100 units; Blender's geometric scale and rotation nodes make it 0.35 m
    placed = model.scene.to_mesh()
    extents = sorted(placed.bounding_box_oriented.primitive.extents)
    assert extents == pytest.approx([0.31816, 0.31816, 0.35362], abs=1e-4)
    assert placed.volume == pytest.approx(0.035796, rel=1e-4)


def test_maya_cube_of_one_centimetre() -> None:
    model = load_fbx(corpus("FBX/phong_cube.fbx"))
    mesh = only_mesh(model)
    assert (len(mesh.vertices), len(mesh.faces)) == (24, 12)
    assert model.unit_scale == 0.01  # UnitScaleFactor 1: the unit is a centimetre
    assert close(model.scene.bounds, [[-0.005] * 3, [0.005] * 3])
    visual, material = look(model)
    assert material.name == "phong1" and material.baseColorTexture is None
    # the file's diffuse (0.5, 0.25, 0.25) and opacity 0.5
    assert material.baseColorFactor.tolist() == [128, 64, 64, 128]
    assert material.alphaMode == "BLEND"
    assert visual.uv.shape == (24, 2)


def test_spider_matches_its_obj_twin_and_lists_its_external_textures() -> None:
    model = load_fbx(corpus("FBX/spider.fbx"))
    assert len(model.scene.geometry) == 19
    assert sum(len(g.faces) for g in model.scene.geometry.values()) == 1368
    assert sum(len(g.vertices) for g in model.scene.geometry.values()) == 958
    # Blender wrote 1 unit = 1 cm and scaled its nodes by 100: the OBJ export's numbers, in m
    twin = trimesh.load_scene(corpus("OBJ/spider.obj"))
    assert model.scene.extents == pytest.approx(twin.extents, rel=1e-5)
    assert model.materials == ["BeinTex", "Skin", "Augentex", "HLeibTex"]
    expected = ["drkwood2.jpg", "wal67ar_small.jpg", "engineflare1.jpg", "SpiderTex.jpg"]
    assert model.textures == expected and model.missing_textures == expected
    assert model.embedded_textures == 0


def test_embedded_ascii_box_is_z_up_in_inches_turned_to_y_up_metres() -> None:
    model = load_fbx(corpus("FBX/embedded_ascii/box.FBX"))
    mesh = only_mesh(model)
    assert (len(mesh.vertices), len(mesh.faces)) == (24, 12)
    assert (model.up_axis, model.unit_scale) == ("Z", 1.0)
    # a 3ds Max box of 47.24 inches, standing on the ground: 1.2 m along Y
    assert close(model.scene.bounds, [[-0.6, 0, -0.6], [0.6, 1.2, 0.6]])
    assert model.textures == ["uv_test.png"] and model.missing_textures == []
    assert model.embedded_textures == 1
    visual, material = look(model)
    assert material.baseColorTexture.size == (512, 512)
    assert visual.uv.shape == (24, 2)


# --- units and axes ----------------------------------------------------------------------------


def test_z_up_ascii_file_is_turned_y_up(tmp_path: Path) -> None:
    model = load(tmp_path, ascii_box(up_axis=2, unit=100.0, size=(1, 2, 3)))
    assert model.up_axis == "Z"
    # file Z (3 m) becomes Y; file Y (2 m) becomes -Z: a rotation, not a mirror
    assert close(model.scene.bounds, [[0, 0, -2], [1, 3, 0]])
    matrix, _ = model.scene.graph[model.scene.graph.nodes_geometry[0]]
    assert np.linalg.det(matrix[:3, :3]) == pytest.approx(1.0)
    upright = load(tmp_path, ascii_box(up_axis=1, unit=100.0, size=(1, 2, 3)))
    assert upright.up_axis == "Y"
    assert close(upright.scene.bounds, [[0, 0, 0], [1, 2, 3]])


def test_unit_scale_factor_is_applied_once(tmp_path: Path) -> None:
    model = load(tmp_path, ascii_box(up_axis=1, unit=2.54, size=(1, 1, 1)))
    assert model.unit_scale == pytest.approx(0.0254)
    assert model.scene.extents == pytest.approx([0.0254] * 3)


def test_binary_settings_are_read(tmp_path: Path) -> None:
    model = load(tmp_path, binary_box(up_axis=2, unit=2.54))
    assert model.up_axis == "Z" and model.unit_scale == pytest.approx(0.0254)
    assert close(model.scene.bounds, [[0, 0, -0.0254], [0.0254, 0.0254, 0]])
    assert look(model)[1].baseColorFactor.tolist() == [64, 128, 255, 255]


# --- textures ----------------------------------------------------------------------------------


def test_binary_embedded_texture_is_decoded(tmp_path: Path) -> None:
    model = load(tmp_path, binary_box(image=png((4, 2)), texture=b"paint.png"))
    assert model.textures == ["paint.png"] and model.missing_textures == []
    assert model.embedded_textures == 1
    image = look(model)[1].baseColorTexture
    assert image.size == (4, 2) and image.getpixel((0, 0)) == (255, 0, 0)


def test_external_texture_is_listed_never_opened(tmp_path: Path) -> None:
    (tmp_path / "paint.png").write_bytes(png((4, 4)))  # a companion the loader must not read
    model = load(tmp_path, binary_box(texture=b"paint.png"))
    assert model.missing_textures == ["paint.png"] and model.embedded_textures == 0
    assert look(model)[1].baseColorTexture is None


def test_embedded_texture_over_the_pixel_cap_is_too_large(tmp_path: Path) -> None:
    data = binary_box(image=png((64, 64)), texture=b"paint.png")
    assert "pixels" in refused(tmp_path, data, TooLarge, max_pixels=1000)


def test_undecodable_embedded_texture_leaves_the_model(tmp_path: Path) -> None:
    model = load(tmp_path, binary_box(image=b"not an image at all", texture=b"paint.png"))
    assert model.unreadable_textures == ["paint.png"]
    assert look(model)[1].baseColorTexture is None


# --- refusals ----------------------------------------------------------------------------------


def test_truncated_binary_is_corrupt(tmp_path: Path) -> None:
    data = corpus("FBX/box.fbx").read_bytes()
    refused(tmp_path, data[:10_000], CorruptFile)


def test_random_bytes_after_the_magic_are_corrupt(tmp_path: Path) -> None:
    noise = random.Random(7).randbytes(4000)
    refused(tmp_path, b"Kaydara FBX Binary  \x00\x1a\x00" + struct.pack("<I", 7400) + noise,
            CorruptFile)


def test_assimps_own_refusal_is_reported_without_paths(tmp_path: Path) -> None:
    data = bytearray(corpus("FBX/box.fbx").read_bytes())
    data[0x25E] ^= 0xFF  # inside a record the bounded reader skips; assimp's tokenizer reads it
    message = refused(tmp_path, bytes(data), CorruptFile)
    assert message.startswith("The file could not be read as FBX: ") and "model" not in message


def test_invalid_axis_is_refused_before_assimp(tmp_path: Path) -> None:
    # assimp would index its 3-vector with 5: refused before it runs
    data = ascii_box().replace(b'"UpAxis", "int", "Integer", "",2', b'"UpAxis", "int", "", "",5')
    assert "axis" in refused(tmp_path, data, CorruptFile)


def test_file_without_meshes_has_no_geometry(tmp_path: Path) -> None:
    refused(tmp_path, ascii_box(geometry=False), NoGeometry)


def test_text_that_is_not_fbx_is_corrupt(tmp_path: Path) -> None:
    refused(tmp_path, b"solid cube\nendsolid cube\n", CorruptFile)


def test_limits(tmp_path: Path) -> None:
    assert "faces" in refused(tmp_path, ascii_box(), TooLarge, max_faces=11)
    assert "bytes" in refused(tmp_path, ascii_box(), TooLarge, max_bytes=100)


FUZZ = """
import json, random, sys
from pathlib import Path
from tasks.errors import TaskError
from tasks.fbx import load_fbx
original = Path(sys.argv[1]).read_bytes()
rng = random.Random(11)
outcomes = []
for case in range(40):
    data = bytearray(original)
    for _ in range(rng.choice([1, 4, 16])):
        data[rng.randrange(27, len(data))] = rng.randrange(256)
    source = Path(sys.argv[2]) / f"case{case}"
    source.write_bytes(bytes(data[: rng.randrange(len(data) // 2, len(data) + 1)]))
    try:
        load_fbx(source)
        outcomes.append("ok")
    except TaskError as error:
        outcomes.append(error.code)
print(json.dumps(outcomes))
"""


def test_damaged_files_fail_cleanly_in_a_child(tmp_path: Path) -> None:
    # a child process: were assimp to crash on some input, this test would fail, not the run
    done = subprocess.run(
        [sys.executable, "-c", FUZZ, str(corpus("FBX/box.fbx")), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout)
    assert len(outcomes) == 40 and set(outcomes) <= {"ok", "corrupt_file", "no_geometry"}
    assert outcomes.count("corrupt_file") >= 30
