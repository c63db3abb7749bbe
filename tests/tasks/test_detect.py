"""Upload detection decides from the bytes: real files are recognised, hostile ones refused."""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.detect import FORMATS, HEAD_BYTES, SUPPORTED, Detection, sniff
from tests.conftest import CORPUS

CORPUS_EXPECTED = {
    "3MF/box.3mf": ("mesh", "3mf"),
    "Collada/duck.dae": ("mesh", "dae"),
    "Collada/duckCM.tga": ("texture", "tga"),
    "FBX/box.fbx": ("mesh", "fbx"),
    "FBX/embedded_ascii/box.FBX": ("mesh", "fbx"),
    "FBX/phong_cube.fbx": ("mesh", "fbx"),
    "FBX/spider.fbx": ("mesh", "fbx"),
    "OBJ/SpiderTex.jpg": ("texture", "jpeg"),
    "OBJ/WusonOBJ.obj": ("mesh", "obj"),
    "OBJ/box.obj": ("mesh", "obj"),
    "OBJ/cube_usemtl.obj": ("mesh", "obj"),
    "OBJ/drkwood2.jpg": ("texture", "jpeg"),
    "OBJ/engineflare1.jpg": ("texture", "jpeg"),
    "OBJ/point_cloud.obj": ("mesh", "obj"),
    "OBJ/spider.obj": ("mesh", "obj"),
    "OBJ/wal67ar_small.jpg": ("texture", "jpeg"),
    "OBJ/wal69ar_small.jpg": ("texture", "jpeg"),
    "PLY/Wuson.ply": ("mesh", "ply"),
    "PLY/cube.ply": ("mesh", "ply"),
    "PLY/cube_binary.ply": ("mesh", "ply"),
    "STL/Spider_ascii.stl": ("mesh", "stl"),
    "STL/Spider_binary.stl": ("mesh", "stl"),
    "STL/sphereWithHole.stl": ("mesh", "stl"),
    "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb": ("mesh", "glb"),
    "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb": ("mesh", "glb"),
    "glTF2/BoxTextured-glTF/BoxTextured.gltf": ("mesh", "gltf"),
    "glTF2/BoxTextured-glTF/CesiumLogoFlat.png": ("texture", "png"),
    "invalid/OutOfMemory.off": ("mesh", "off"),
    "invalid/crash-30d6d0f7c529b3b66b4131700b7a4580cd7082df.ply": ("mesh", "ply"),
    "invalid/malformed.obj": ("mesh", "obj"),
}
# side files that are not models or images on their own
CORPUS_REFUSED = [
    "OBJ/cube_usemtl.mtl",
    "OBJ/spider.mtl",
    "glTF2/BoxTextured-glTF/BoxTextured0.bin",
    "invalid/empty.obj",
    "README.md",
]


def sniff_bytes(tmp_path: Path, data: bytes, name: str = "source") -> Detection | None:
    path = tmp_path / name
    path.write_bytes(data)
    return sniff(path)


def image_bytes(mode: str, fmt: str, size: tuple[int, int] = (16, 8), **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def zip_bytes(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"v 0 0 0\n")
    return buffer.getvalue()


@pytest.mark.parametrize("relative", sorted(CORPUS_EXPECTED))
def test_every_corpus_file_is_recognised_from_its_bytes(tmp_path: Path, relative: str) -> None:
    source = tmp_path / "source"
    shutil.copyfile(CORPUS / relative, source)
    detection = sniff(source)
    assert detection is not None
    assert (detection.kind, detection.format) == CORPUS_EXPECTED[relative]
    assert detection.label


@pytest.mark.parametrize("relative", CORPUS_REFUSED)
def test_corpus_side_files_are_refused(tmp_path: Path, relative: str) -> None:
    source = tmp_path / "source"
    shutil.copyfile(CORPUS / relative, source)
    assert sniff(source) is None


def test_ascii_and_binary_fbx_have_their_own_labels() -> None:
    binary = sniff(CORPUS / "FBX/box.fbx")
    ascii_ = sniff(CORPUS / "FBX/embedded_ascii/box.FBX")
    assert binary is not None and ascii_ is not None
    assert "binary" in binary.label and "ASCII" in ascii_.label


HOSTILE = {
    "psd": b"8BPS\x00\x01" + bytes(20) + b"\x00\x03" + bytes(200),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nv 1 2 3\n",
    "dos-eps": b"\xc5\xd0\xd3\xc6" + struct.pack("<IIII", 30, 100, 0, 0) + bytes(200),
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
    "elf": b"\x7fELF\x02\x01\x01" + bytes(200),
    "exe": b"MZ\x90\x00" + bytes(200),
    "script": b"#!/bin/sh\nv 1 2 3\n",
    "html": b"<!DOCTYPE html>\n<html><body><p>v 1 2 3</p></body></html>\n",
    "svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>\n',
    "empty": b"",
    "whitespace": b" \n\n\t\n",
    "random": random.Random(1234).randbytes(4096),
    "text": b"Dear reader,\nthis is a letter, not a model.\n",
    "mtl": b"newmtl red\nKd 1 0 0\n",
    "json": b'{"name": "not a model", "version": 2}',
    "glb-v1": b"glTF\x01\x00\x00\x00" + struct.pack("<I", 20) + bytes(8),
    "nested-json": b"[" * 50_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_named_png_are_refused(tmp_path: Path, name: str) -> None:
    assert sniff_bytes(tmp_path, HOSTILE[name], "upload.png") is None


def test_a_png_named_obj_is_a_texture(tmp_path: Path) -> None:
    detection = sniff_bytes(tmp_path, image_bytes("RGB", "PNG"), "model.obj")
    assert detection == Detection("texture", "png", "PNG")


@pytest.mark.parametrize(
    ("mode", "fmt", "expected", "options"),
    [
        ("RGBA", "PNG", "png", {}),
        ("RGB", "JPEG", "jpeg", {}),
        ("RGBA", "TIFF", "tiff", {}),
        ("RGB", "TIFF", "tiff", {"compression": "tiff_lzw"}),
        ("RGBA", "WEBP", "webp", {"lossless": True}),
        ("RGB", "BMP", "bmp", {}),
        ("P", "BMP", "bmp", {}),
        ("P", "GIF", "gif", {}),
        ("RGBA", "TGA", "tga", {}),
        ("L", "TGA", "tga", {}),
        ("RGB", "TGA", "tga", {"compression": "tga_rle"}),
    ],
)
def test_images_made_by_pillow_are_textures(
    tmp_path: Path, mode: str, fmt: str, expected: str, options: dict[str, Any]
) -> None:
    detection = sniff_bytes(tmp_path, image_bytes(mode, fmt, **options))
    assert detection is not None
    assert (detection.kind, detection.format) == ("texture", expected)


def test_tga_is_recognised_by_its_header_without_the_footer(tmp_path: Path) -> None:
    data = image_bytes("RGB", "TGA", (8, 4))
    assert data.endswith(b"TRUEVISION-XFILE.\x00")
    detection = sniff_bytes(tmp_path, data[:-26])
    assert detection is not None and detection.format == "tga"


def test_tga_with_an_inconsistent_header_is_refused(tmp_path: Path) -> None:
    data = bytearray(image_bytes("RGB", "TGA", (8, 4))[:-26])
    data[16] = 7  # no TGA has 7 bits per pixel
    assert sniff_bytes(tmp_path, bytes(data)) is None


def test_exr_is_a_texture(tmp_path: Path) -> None:
    detection = sniff_bytes(tmp_path, b"\x76\x2f\x31\x01\x02\x00\x00\x00" + bytes(64))
    assert detection is not None and (detection.kind, detection.format) == ("texture", "exr")


OBJ = b"# cube corner\no corner\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\nf 1 2 3\n"


def test_obj_with_bom_and_crlf_is_recognised(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + OBJ.replace(b"\n", b"\r\n")
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None and detection.format == "obj"


def test_obj_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, OBJ + b"v 1 1\x00 1\n") is None


def test_obj_without_vertices_is_refused(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, b"# only comments\ng group\n") is None


def test_obj_with_foreign_statements_is_refused(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, OBJ + b"import os\n") is None


def test_large_obj_is_judged_from_its_head(tmp_path: Path) -> None:
    data = OBJ + b"v 0.125 0.25 0.5\n" * (3 * HEAD_BYTES // 16)
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None and detection.format == "obj"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"solid cube\n  facet normal 0 0 1\n    outer loop\n", "stl"),
        (b"solid empty\nendsolid empty\n", "stl"),
        (b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "off"),
        (b"# comment\nOFF 3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "off"),
        (b"COFF\r\n3 1 0\r\n", "off"),
        (b"ply\r\nformat ascii 1.0\r\nelement vertex 0\r\nend_header\r\n", "ply"),
        (b'{"asset": {"version": "2.0"}, "meshes": []}', "gltf"),
        (b'<?xml version="1.0"?>\n<!-- made by hand -->\n<COLLADA version="1.4.1"/>', "dae"),
        (b"; FBX 7.4.0 project file\nFBXHeaderExtension:  {\n}\n", "fbx"),
    ],
)
def test_text_formats_are_recognised(tmp_path: Path, data: bytes, expected: str) -> None:
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None
    assert (detection.kind, detection.format) == ("mesh", expected)


def test_gltf_larger_than_the_head_is_recognised(tmp_path: Path) -> None:
    padding = "A" * (2 * HEAD_BYTES)
    tree = {"buffers": [{"uri": f"data:application/octet-stream;base64,{padding}"}]}
    data = json.dumps({**tree, "asset": {"version": "2.0"}}).encode()
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None and detection.format == "gltf"


def test_gltf_whose_asset_is_neither_at_the_head_nor_the_tail_is_recognised(
    tmp_path: Path,
) -> None:
    padding = "A" * (2 * HEAD_BYTES)
    tree = {"buffers": [{"uri": f"data:application/octet-stream;base64,{padding}"}],
            "asset": {"version": "2.0", "generator": "a \" } trap"},
            "images": [{"uri": f"data:image/png;base64,{padding}"}]}
    detection = sniff_bytes(tmp_path, json.dumps(tree).encode())
    assert detection is not None and detection.format == "gltf"


@pytest.mark.parametrize("tree", [
    # "asset" only nested, or only as a string, or of version 1: not a glTF
    {"meshes": [{"asset": {"version": "2.0"}}], "pad": "A" * (2 * HEAD_BYTES)},
    {"pad": "A" * (2 * HEAD_BYTES), "note": '"asset": {"version": "2.0"}'},
    {"pad": "A" * (2 * HEAD_BYTES), "asset": {"version": "1.0"}},
])
def test_large_json_without_a_top_level_asset_is_refused(
    tmp_path: Path, tree: dict[str, Any]
) -> None:
    assert sniff_bytes(tmp_path, json.dumps(tree).encode()) is None


def test_the_scan_for_a_member_is_bounded(tmp_path: Path) -> None:
    from tasks.json_scan import MISSING, top_level_member

    path = tmp_path / "large.json"
    path.write_bytes(json.dumps({"pad": "A" * 10_000, "asset": {"version": "2.0"}}).encode())
    with path.open("rb") as file:
        assert top_level_member(file, "asset") == {"version": "2.0"}
        assert top_level_member(file, "asset", scan_bytes=5_000) is MISSING
        assert top_level_member(file, "asset", seconds=-1.0) is MISSING
        assert top_level_member(file, "missing") is MISSING


@pytest.mark.parametrize("data", [
    b'{"a":"' + b'\\"' * 500_000,  # a string never closed, full of escaped quotes
    b'{"a":"' + b"x" * 20_000_000 + b'", "asset": 1}',  # one long string
])
def test_the_scan_is_linear_in_the_bytes_it_reads(tmp_path: Path, data: bytes) -> None:
    # a pattern that backtracked took 17 s on 64 KB of the first, 2.3 GB on 20 MB of the
    # second: pytest's timeout would stop these long before
    from tasks.json_scan import MISSING, top_level_member

    path = tmp_path / "odd.json"
    path.write_bytes(data)
    with path.open("rb") as file:
        assert top_level_member(file, "asset") in (MISSING, 1)
    assert sniff(path) is None


def test_gltf_version_one_is_refused(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, b'{"asset": {"version": "1.0"}}') is None


def test_binary_stl_is_recognised_by_its_size_even_with_a_solid_header(tmp_path: Path) -> None:
    header = b"solid written by a careless exporter".ljust(80, b" ")
    data = header + struct.pack("<I", 2) + bytes(100)
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None and detection.format == "stl"
    assert sniff_bytes(tmp_path, data + b"\x00") is None


def test_glb_needs_version_two(tmp_path: Path) -> None:
    glb = b"glTF" + struct.pack("<II", 2, 12)
    assert sniff_bytes(tmp_path, glb) == Detection("mesh", "glb", "glTF binary (GLB)")


def test_zip_holding_one_model_is_a_mesh(tmp_path: Path) -> None:
    data = zip_bytes(["robot/robot.obj", "robot/robot.mtl", "robot/skin.png", "__MACOSX/._a.obj"])
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None
    assert (detection.kind, detection.format) == ("mesh", "zip")


def test_zip_holding_one_texture_set_is_a_material(tmp_path: Path) -> None:
    data = zip_bytes(["rock/Rock_BaseColor.png", "rock/Rock_Normal.png", "rock/readme.txt"])
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None
    assert (detection.kind, detection.format) == ("material", "zip")


@pytest.mark.parametrize("names", [["a.obj", "b.fbx"], ["skin.png"], []])
def test_zip_without_exactly_one_model_is_refused(tmp_path: Path, names: list[str]) -> None:
    assert sniff_bytes(tmp_path, zip_bytes(names)) is None


def test_zip_with_a_3d_model_part_is_3mf(tmp_path: Path) -> None:
    data = zip_bytes(["[Content_Types].xml", "_rels/.rels", "3D/3DModel.model"])
    detection = sniff_bytes(tmp_path, data)
    assert detection is not None and detection.format == "3mf"


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    assert sniff_bytes(tmp_path, zip_bytes(["a.obj"])[:-30]) is None


def test_substance_files_are_materials(tmp_path: Path) -> None:
    sbsar = sniff_bytes(tmp_path, b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(32))
    assert sbsar is not None and (sbsar.kind, sbsar.format) == ("material", "sbsar")
    sbs = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<package><identifier v="Unsaved Package"/>'
        b'<formatVersion v="1.1.0.202201"/><content/></package>\n'
    )
    detection = sniff_bytes(tmp_path, sbs)
    assert detection is not None and (detection.kind, detection.format) == ("material", "sbs")
    assert sniff_bytes(tmp_path, b"<package><name>npm?</name></package>") is None


def test_every_recognised_format_has_a_pipeline() -> None:
    assert FORMATS | {"pbr"} == SUPPORTED


def test_truncated_and_mutated_files_never_raise(tmp_path: Path) -> None:
    samples = [
        (CORPUS / relative).read_bytes()[:512]
        for relative in ("3MF/box.3mf", "FBX/box.fbx", "PLY/cube_binary.ply", "OBJ/box.obj")
    ]
    samples += [image_bytes("RGB", fmt) for fmt in ("PNG", "BMP", "TGA", "TIFF", "WEBP", "GIF")]
    samples += [b"glTF\x02\x00\x00\x00", b"BM" + bytes(40), zip_bytes(["a.obj"])]
    rng = random.Random(99)
    for sample in samples:
        for length in range(min(len(sample), 96)):
            sniff_bytes(tmp_path, sample[:length])
        for _ in range(20):
            mutated = bytearray(sample)
            for _ in range(4):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            sniff_bytes(tmp_path, bytes(mutated))


def test_supported_formats_match_the_pipelines() -> None:
    from tasks.imaging import PILLOW_FORMATS
    from tasks.mesh_load import FILE_TYPES

    assert set(FILE_TYPES) | {"fbx", "zip"} == {
        f for f in FORMATS if f in FILE_TYPES or f in ("fbx", "zip")}
    assert set(PILLOW_FORMATS) | {"exr"} == {f for f in FORMATS if f in PILLOW_FORMATS or
                                             f == "exr"}
    meshes = {f for f in FORMATS if f not in PILLOW_FORMATS and f not in ("exr", "sbsar", "sbs")}
    assert meshes == set(FILE_TYPES) | {"fbx", "zip"}


def test_detection_imports_nothing_heavy() -> None:
    """The web process imports this module: it must stay standard-library only."""
    code = "import sys, tasks.detect; print(sorted({'numpy', 'trimesh', 'PIL'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_zip64_records_cannot_hide_a_huge_central_directory(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr("model.obj", b"v 0 0 0\n")
        for i in range(70_000):  # more than a classic end record can count: zipfile writes ZIP64
            archive.writestr(f"part-{i}.txt", b"")
    raw = bytearray(path.read_bytes())
    end = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HHI", raw, end + 8, 1, 1, 100)  # the classic record lies: 1 entry
    path.write_bytes(bytes(raw))
    assert sniff(path) is None
