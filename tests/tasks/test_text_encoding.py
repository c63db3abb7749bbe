"""Text models as their exporters wrote them: UTF-16 with a byte-order mark, and Windows-1252
names, from the upload's grouping through detection to the statistics."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from tasks.detect import sniff
from tasks.grouping import Group, plan
from tasks.text_encoding import as_utf8, decoded
from tests.conftest import CORPUS
from tests.tasks.test_grouping import _upload
from tests.tasks.test_mesh import run

OBJ = """# a tetrahedron with a named material and group
mtllib café.mtl
o Würfel
v 0 0 0
v 1 0 0
v 0 1 0
v 0 0 1
usemtl Café_Crème
f 1 2 3
f 1 2 4
f 1 3 4
f 2 3 4
"""
MTL = "newmtl Café_Crème\nKd 0.8 0.2 0.2\nmap_Kd crème.png\n"
ENCODINGS = {
    "utf-16-le": codecs.BOM_UTF16_LE + OBJ.encode("utf-16-le"),
    "utf-16-be": codecs.BOM_UTF16_BE + OBJ.encode("utf-16-be"),
    "cp1252": OBJ.encode("cp1252"),
    "utf-8": OBJ.encode("utf-8"),
}


def test_decoding_falls_back_from_utf8_to_windows_1252() -> None:
    assert decoded("Crème".encode()) == "Crème"
    assert decoded("Crème".encode()[:-2] + b"\xc3") == "Crè"  # a cut character is left out
    assert decoded(b"Cr\xe8me \x80 \x81") == "Crème € \x81"  # 0x81: undefined, read as Latin-1
    assert as_utf8(b"plain") == b"plain"
    assert as_utf8(codecs.BOM_UTF8 + "é".encode()) == "é".encode()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_text_models_in_any_encoding_are_recognised(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "model"
    path.write_bytes(ENCODINGS[encoding])
    detection = sniff(path)
    assert detection is not None and detection.format == "obj"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_obj_in_any_encoding_takes_its_legacy_material_library(
    tmp_path: Path, encoding: str
) -> None:
    files: dict[str, Path | bytes] = {"model.obj": ENCODINGS[encoding],
                                      "café.mtl": MTL.encode("cp1252"), "other.png": b""}
    groups, _ = plan(_upload(tmp_path, files))
    assert Group("mesh", "obj", "model.obj", ("model.obj", "café.mtl")) in groups
    stats = run(tmp_path, {"model.obj": ENCODINGS[encoding], "café.mtl": MTL.encode("cp1252")},
                "obj")[0]["stats"]
    assert stats["faces"] == 4 and stats["material_names"] == ["Café_Crème"]
    assert stats["missing_textures"] == ["crème.png"]  # the MTL's name, decoded right


def test_utf16_ascii_ply_is_read(tmp_path: Path) -> None:
    ply = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
           "property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
           "end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    data = codecs.BOM_UTF16_LE + ply.encode("utf-16-le")
    path = tmp_path / "model.ply"
    path.write_bytes(data)
    detection = sniff(path)
    assert detection is not None and detection.format == "ply"
    assert run(tmp_path, {"model.ply": data}, "ply")[0]["stats"]["faces"] == 1


def _duck(encoding: str) -> bytes:
    """The corpus's duck naming its texture "duckCMé.tga", in `encoding` (declared in UTF-16;
    undeclared otherwise, as legacy exporters write it)."""
    text = (CORPUS / "Collada" / "duck.dae").read_text("utf-8").replace("duckCM.tga",
                                                                      "duckCMé.tga")
    if encoding == "utf-16":
        text = text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
        return codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    return text.encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252", "utf-8"])
def test_collada_in_any_encoding_finds_its_texture(tmp_path: Path, encoding: str) -> None:
    data = _duck(encoding)
    texture = (CORPUS / "Collada" / "duckCM.tga").read_bytes()
    path = tmp_path / "duck.dae"
    path.write_bytes(data)
    detection = sniff(path)
    assert detection is not None and detection.format == "dae"
    files: dict[str, Path | bytes] = {"duck.dae": data, "duckCMé.tga": texture}
    (tmp_path / "upload").mkdir()
    groups, _ = plan(_upload(tmp_path / "upload", files))
    assert groups == [Group("mesh", "dae", "duck.dae", ("duck.dae", "duckCMé.tga"))]
    stats = run(tmp_path, {"duck.dae": data, "duckCMé.tga": texture}, "dae")[0]["stats"]
    assert stats["faces"] == 4212
    assert stats["texture_names"] == ["duckCMé.tga"] and stats["missing_textures"] == []


def test_collada_names_its_texture_with_percent_escapes(tmp_path: Path) -> None:
    data = (CORPUS / "Collada" / "duck.dae").read_bytes().replace(b"duckCM.tga", b"duck%20CM.tga")
    texture = (CORPUS / "Collada" / "duckCM.tga").read_bytes()
    stats = run(tmp_path, {"duck.dae": data, "duck CM.tga": texture}, "dae")[0]["stats"]
    # present, and so never also missing
    assert stats["texture_names"] == ["duck CM.tga"]
    assert stats["missing_textures"] == [] and stats["missing_files"] == []


def test_a_zae_archive_opens_the_root_its_manifest_names(tmp_path: Path) -> None:
    import io
    import zipfile

    duck = (CORPUS / "Collada" / "duck.dae").read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zae:
        zae.writestr("manifest.xml", '<?xml version="1.0"?><dae_root>./models/duck.dae</dae_root>')
        zae.writestr("models/duck.dae", duck)
        zae.writestr("models/duckCM.tga", (CORPUS / "Collada" / "duckCM.tga").read_bytes())
        zae.writestr("models/lod/duck-low.dae", duck)  # a second document the root may use
    path = tmp_path / "duck.zae"
    path.write_bytes(archive.getvalue())
    detection = sniff(path)
    assert detection is not None and detection.format == "zip"
    stats = run(tmp_path / "run", {"duck.zae": archive.getvalue()}, "zip")[0]["stats"]
    assert stats["format"] == "dae" and stats["faces"] == 4212
    assert stats["texture_names"] == ["models/duckCM.tga"] and stats["missing_textures"] == []


def test_a_missing_percent_escaped_texture_is_named_once(tmp_path: Path) -> None:
    data = (CORPUS / "Collada" / "duck.dae").read_bytes().replace(b"duckCM.tga", b"duck%20CM.tga")
    stats = run(tmp_path, {"duck.dae": data}, "dae")[0]["stats"]
    assert stats["missing_textures"] == ["duck CM.tga"]
    assert stats["missing_files"] == ["duck CM.tga"]
