"""Hostile uploads built by the tests themselves: each ends as a coded failure, and a canary file
beside the upload never shows up in any output, artifact or error text."""

from __future__ import annotations

import base64
import io
import json
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tasks.errors import TaskError
from tasks.material import process as process_material
from tasks.mesh import process as process_mesh
from tests.conftest import corpus
from tests.helpers.payloads import as_payload
from tests.helpers.payloads import limits as all_limits

SECRET = "kiln-canary-7f3a9c"
TRIANGLE = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    """tmp/task/files is the upload; canaries sit one and two directories above it."""
    files = tmp_path / "task" / "files"
    files.mkdir(parents=True)
    for directory in (tmp_path, tmp_path / "task"):
        for name in ("canary.mtl", "canary.png", "canary.bin", "canary.txt"):
            (directory / name).write_text(f"newmtl {SECRET}\nmap_Kd {SECRET}.png\n")
    return files


def run(upload_dir: Path, files: dict[str, bytes], fmt: str, kind: str = "mesh",
        limits: dict[str, int] | None = None) -> TaskError:
    for name, data in files.items():
        (upload_dir / name).write_bytes(data)
    task = upload_dir.parent
    payload = {"source": str(upload_dir / next(iter(files))), "files_dir": str(upload_dir),
               "main": next(iter(files)), "files": list(files), "format": fmt,
               "artifacts_dir": str(task / "artifacts"), "work_dir": str(task / "work"),
               "max_pixels": 10_000_000,
               "limits": all_limits(**(limits or {}))}
    pipeline = process_mesh if kind == "mesh" else process_material
    with pytest.raises(TaskError) as caught:
        pipeline(as_payload(payload), lambda stage, fraction: None)
    error = caught.value
    assert SECRET not in error.message and "canary" not in error.message
    assert str(task) not in error.message
    for produced in task.rglob("*"):  # nothing written anywhere holds the canary's contents
        if produced.is_file() and produced.parent.name in ("artifacts", "work", "unzipped"):
            assert SECRET.encode() not in produced.read_bytes()
    return error


@pytest.mark.parametrize("library", ["/etc/passwd", "../canary.mtl", "../../canary.mtl",
                                     "..\\canary.mtl", "file:///etc/passwd", "C:\\canary.mtl"])
def test_obj_naming_a_library_outside_its_upload(upload_dir: Path, library: str) -> None:
    obj = f"mtllib {library}\n".encode() + TRIANGLE
    error = run(upload_dir, {"model.obj": obj}, "obj")
    assert error.code == "unsafe_reference"


@pytest.mark.parametrize("texture", ["../canary.png", "/tmp/canary.png", "http://evil/x.png"])
def test_mtl_naming_a_texture_outside_its_upload(upload_dir: Path, texture: str) -> None:
    files = {"model.obj": b"mtllib model.mtl\nusemtl skin\n" + TRIANGLE,
             "model.mtl": f"newmtl skin\nmap_Kd -s 1 1 1 {texture}\n".encode()}
    assert run(upload_dir, files, "obj").code == "unsafe_reference"


def _gltf(uri: str, section: str = "buffers") -> bytes:
    tree: dict[str, Any] = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": 4,
                            "uri": "data:application/octet-stream;base64,AAAAAA=="}]}
    if section == "buffers":
        tree["buffers"] = [{"byteLength": 36, "uri": uri}]
    else:
        tree["images"] = [{"uri": uri}]
    return json.dumps(tree).encode()


@pytest.mark.parametrize("uri", ["../../canary.bin", "../canary.bin", "file:///etc/passwd",
                                 "file://../canary.bin", "https://example.com/a.bin",
                                 "/etc/passwd"])
@pytest.mark.parametrize("section", ["buffers", "images"])
def test_gltf_uris_outside_the_upload(upload_dir: Path, uri: str, section: str) -> None:
    error = run(upload_dir, {"model.gltf": _gltf(uri, section)}, "gltf")
    assert error.code == "unsafe_reference"


def test_gltf_data_uri_over_the_cap_is_too_large(upload_dir: Path) -> None:
    from tasks import gltf

    payload = base64.b64encode(bytes(2048)).decode()
    tree = {"asset": {"version": "2.0"},
            "buffers": [{"byteLength": 2048, "uri": f"data:;base64,{payload}"}]}
    with pytest.raises(TaskError) as caught:
        gltf.self_contained_glb(json.dumps(tree).encode(), "gltf", _resolver(upload_dir),
                                max_data_uri_bytes=1024)
    assert caught.value.code == "too_large"


def _resolver(directory: Path) -> Any:
    from tasks.resolver import UploadResolver

    return UploadResolver(directory, [], max_pixels=1000)


def test_collada_with_an_external_entity_is_refused(upload_dir: Path) -> None:
    dae = (b'<?xml version="1.0"?>\n<!DOCTYPE c [<!ENTITY x SYSTEM "../canary.txt">]>\n'
           b'<COLLADA xmlns="http://www.collada.org/2005/11/COLLADASchema" version="1.4.1">'
           b"<asset><title>&x;</title></asset></COLLADA>")
    assert run(upload_dir, {"model.dae": dae}, "dae").code == "corrupt_file"


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "../../canary.txt")
    return buffer.getvalue()


@pytest.mark.parametrize("members,symlink", [
    ({"../evil.obj": TRIANGLE}, None),
    ({"model/../../evil.obj": TRIANGLE}, None),
    ({"/abs/evil.obj": TRIANGLE}, None),
    ({"model.obj": TRIANGLE, "MODEL.OBJ": TRIANGLE}, None),
    ({"model.obj": TRIANGLE}, "skin.png"),
])
def test_zip_slip_and_links_are_rejected(upload_dir: Path, members: dict[str, bytes],
                                         symlink: str | None) -> None:
    error = run(upload_dir, {"upload.zip": _zip(members, symlink)}, "zip")
    assert error.code == "archive_rejected"
    assert not (upload_dir.parent.parent / "evil.obj").exists()


def test_zip_bomb_is_rejected_before_it_is_unpacked(upload_dir: Path) -> None:
    bomb = _zip({"model.obj": TRIANGLE, "padding.bin": bytes(20 * 1024**2)})
    assert len(bomb) < 100_000
    error = run(upload_dir, {"upload.zip": bomb}, "zip")
    assert error.code == "archive_rejected" and "zip bomb" in error.message
    assert not (upload_dir.parent / "work" / "unzipped" / "padding.bin").exists()


@pytest.mark.parametrize("limits,words", [
    ({"archive_max_members": 2}, "3 files"),
    ({"archive_max_bytes": 10}, "unpacks to"),
])
def test_zip_caps_are_configurable(upload_dir: Path, limits: dict[str, int], words: str) -> None:
    archive = _zip({"model.obj": TRIANGLE, "a.txt": b"a", "b.txt": b"b"})
    error = run(upload_dir, {"upload.zip": archive}, "zip", limits=limits)
    assert error.code == "archive_rejected" and words in error.message


def png_bomb(side: int = 5000) -> bytes:
    """A real 1-bit PNG of 25 million pixels in a few kilobytes (the tests cap at 10 million)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_png_decompression_bomb_as_an_obj_texture(upload_dir: Path) -> None:
    files = {"model.obj": b"mtllib model.mtl\nusemtl skin\nvt 0 0\n" + TRIANGLE,
             "model.mtl": b"newmtl skin\nmap_Kd skin.png\n", "skin.png": png_bomb()}
    assert run(upload_dir, files, "obj").code == "too_large"


@pytest.mark.parametrize("fake", [b"8BPS\x00\x01" + bytes(200),
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n"])
def test_psd_and_eps_named_png_as_textures(upload_dir: Path, fake: bytes) -> None:
    files = {"model.obj": b"mtllib model.mtl\nusemtl skin\n" + TRIANGLE,
             "model.mtl": b"newmtl skin\nmap_Kd skin.png\n", "skin.png": fake}
    assert run(upload_dir, files, "obj").code == "corrupt_file"


def test_a_good_zip_with_one_model_and_its_files_loads(tmp_path: Path) -> None:
    members = {f"spider/{n}": corpus(f"OBJ/{n}").read_bytes()
               for n in ("spider.obj", "spider.mtl", "SpiderTex.jpg", "drkwood2.jpg")}
    upload = tmp_path / "files"
    upload.mkdir()
    (upload / "spider.zip").write_bytes(_zip(members))
    payload = {"files_dir": str(upload), "main": "spider.zip", "files": ["spider.zip"],
               "format": "zip", "artifacts_dir": str(tmp_path / "out"),
               "work_dir": str(tmp_path / "work"), "max_pixels": 10_000_000,
               "limits": all_limits(turntable_frames=0)}
    stats = process_mesh(as_payload(payload), lambda stage, fraction: None)["stats"]
    assert (stats["format"], stats["faces"]) == ("obj", 1368)
    assert sorted(stats["missing_textures"]) == ["engineflare1.jpg", "wal67ar_small.jpg",
                                                 "wal69ar_small.jpg"]


def test_a_texture_in_a_format_outside_the_allow_list_is_refused(upload_dir: Path) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buffer, format="PCX")
    files = {"model.obj": b"mtllib model.mtl\nusemtl skin\nvt 0 0\n" + TRIANGLE,
             "model.mtl": b"newmtl skin\nmap_Kd skin.pcx\n", "skin.pcx": buffer.getvalue()}
    assert run(upload_dir, files, "obj").code == "corrupt_file"


@pytest.mark.parametrize("tree", [
    {"asset": {"version": "2.0"}, "buffers": [5]},
    {"asset": {"version": "2.0"}, "bufferViews": {}, "images": [{"uri": "data:;base64,AA=="}]},
    {"asset": {"version": "2.0"}, "bufferViews": [[1]], "images": [{"bufferView": 0}]},
    {"asset": {"version": "2.0"}, "images": "none", "meshes": 3},
])
def test_gltf_json_of_the_wrong_shape_is_corrupt(upload_dir: Path, tree: dict[str, Any]) -> None:
    assert run(upload_dir, {"m.gltf": json.dumps(tree).encode()}, "gltf").code == "corrupt_file"
