"""Grouping an upload: which references may be followed, and which files make one task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import stored_names
from tasks.detect import sniff
from tasks.grouping import Group, UploadFile, plan
from tasks.references import FileIndex, Verdict, classify, mtl_maps, obj_libraries
from tests.conftest import corpus


@pytest.mark.parametrize("raw,name", [
    ("spider.mtl", "spider.mtl"), (".\\SpiderTex.jpg", "SpiderTex.jpg"),
    ("./tex/wood.png", "tex/wood.png"), ("tex\\sub\\a.png", "tex/sub/a.png"),
    ('"my texture.png"', "my texture.png"),
])
def test_plain_relative_names_are_followed(raw: str, name: str) -> None:
    reference = classify(raw)
    assert (reference.verdict, reference.name) == (Verdict.NAME, name)


@pytest.mark.parametrize("raw,why", [
    ("/etc/passwd", "an absolute path"), ("C:\\textures\\a.png", "an absolute path"),
    ("c:/a.png", "an absolute path"), ("../a.png", "a parent directory"),
    ("tex/../../a.png", "a parent directory"), ("..\\a.png", "a parent directory"),
    ("file:///etc/passwd", "a file: URI"), ("https://example.com/a.png", "a web address"),
    ("ftp://x/a.png", "a URI"), ("", "an empty or invalid name"),
])
def test_unsafe_references_are_refused_without_being_repeated(raw: str, why: str) -> None:
    reference = classify(raw)
    assert reference.verdict is Verdict.UNSAFE and why in reference.why
    assert raw == "" or raw not in reference.why


def test_data_uris_are_their_own_kind() -> None:
    assert classify("data:application/octet-stream;base64,AAAA").verdict is Verdict.DATA


def test_obj_and_mtl_references() -> None:
    libraries = obj_libraries(b"# x\nmtllib a.mtl\nv 0 0 0\n  mtllib my lib.mtl\n")
    assert [r.name for r in libraries] == ["a.mtl", "my lib.mtl"]
    two = obj_libraries(b"mtllib a.mtl b.mtl\n")
    assert [r.name for r in two] == ["a.mtl", "b.mtl"]
    maps = mtl_maps("newmtl a\nmap_Kd -s 1 1 1 -o 0 0 0 wood.png\nbump -bm 0.5 n.png\n"
                    "map_Ks spec.png # comment\n")
    assert [r.name for r in maps] == ["wood.png", "n.png", "spec.png"]


def test_file_index_matches_case_and_base_names() -> None:
    index = FileIndex(["Tex/Wood.PNG", "a.mtl"])
    assert index.find(classify("tex/wood.png")) == "Tex/Wood.PNG"
    assert index.find(classify("C:/x/wood.png")) is None  # unsafe: never looked up
    assert index.find(classify("other/WOOD.png")) == "Tex/Wood.PNG"
    assert index.find(classify("b.mtl")) is None


def _upload(tmp_path: Path, files: dict[str, Path | bytes]) -> list[UploadFile]:
    names = stored_names(list(files))
    received: list[UploadFile] = []
    for name, content in zip(names, files.values(), strict=True):
        path = tmp_path / f"{len(received)}.part"
        path.write_bytes(content if isinstance(content, bytes) else content.read_bytes())
        received.append(UploadFile(name, path, path.stat().st_size, sniff(path)))
    return received


def test_obj_takes_its_mtl_and_images_and_leaves_the_rest(tmp_path: Path) -> None:
    files: dict[str, Path | bytes] = {
        n: corpus(f"OBJ/{n}") for n in ("spider.obj", "spider.mtl", "SpiderTex.jpg",
                                        "drkwood2.jpg", "engineflare1.jpg")}
    files["box.obj"] = corpus("OBJ/box.obj")
    files["holiday.png"] = corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png")
    groups, refused = plan(_upload(tmp_path, files))
    assert refused == []
    assert groups == [
        Group("mesh", "obj", "spider.obj", ("spider.obj", "spider.mtl", "SpiderTex.jpg",
                                            "drkwood2.jpg", "engineflare1.jpg")),
        Group("mesh", "obj", "box.obj", ("box.obj",)),
        Group("texture", "png", "holiday.png", ("holiday.png",)),
    ]


def test_gltf_and_collada_take_their_files(tmp_path: Path) -> None:
    files: dict[str, Path | bytes] = {
        n: corpus(f"glTF2/BoxTextured-glTF/{n}")
        for n in ("CesiumLogoFlat.png", "BoxTextured0.bin", "BoxTextured.gltf")}
    files["duckCM.tga"] = corpus("Collada/duckCM.tga")
    files["duck.dae"] = corpus("Collada/duck.dae")
    groups, refused = plan(_upload(tmp_path, files))
    assert refused == []
    assert [(g.kind, g.main, g.files) for g in groups] == [
        ("mesh", "BoxTextured.gltf", ("BoxTextured.gltf", "CesiumLogoFlat.png",
                                      "BoxTextured0.bin")),
        ("mesh", "duck.dae", ("duck.dae", "duckCM.tga")),
    ]


def test_orphan_companions_are_refused_and_unclaimed_images_are_textures(tmp_path: Path) -> None:
    files: dict[str, Path | bytes] = {"spider.mtl": corpus("OBJ/spider.mtl"),
                                      "SpiderTex.jpg": corpus("OBJ/SpiderTex.jpg")}
    groups, refused = plan(_upload(tmp_path, files))
    assert [f.name for f in refused] == ["spider.mtl"]
    assert groups == [Group("texture", "jpeg", "SpiderTex.jpg", ("SpiderTex.jpg",))]


def test_unsafe_references_claim_nothing(tmp_path: Path) -> None:
    gltf = json.dumps({"asset": {"version": "2.0"},
                       "buffers": [{"uri": "../a.bin", "byteLength": 4}]}).encode()
    groups, _ = plan(_upload(tmp_path, {"m.gltf": gltf, "a.bin": b"\x00" * 4}))
    assert groups[0].files == ("m.gltf",)


def test_pbr_maps_become_one_material_task(tmp_path: Path) -> None:
    png = corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png")
    files: dict[str, Path | bytes] = {"Rock_BaseColor.png": png, "Rock_Normal.png": png,
                                      "Rock_Roughness.png": png, "logo.png": png}
    groups, refused = plan(_upload(tmp_path, files))
    assert refused == []
    assert groups == [
        Group("material", "pbr", "Rock_BaseColor.png",
              ("Rock_BaseColor.png", "Rock_Normal.png", "Rock_Roughness.png")),
        Group("texture", "png", "logo.png", ("logo.png",)),
    ]


def test_stored_names_are_unique_safe_and_short() -> None:
    names = stored_names(["a.png", "A.PNG", "../../etc/passwd", "", "x" * 300 + ".obj",
                          "dir\\b.png"])
    assert names[:4] == ["a.png", "A (2).PNG", "passwd", "upload"]
    assert len(names[4].encode()) <= 180 and names[4].endswith(".obj")
    assert names[5] == "b.png"


def test_long_clashing_names_stay_unique_and_short() -> None:
    long = "a" * 200 + ".obj"
    names = stored_names([long, long, long])
    assert len(set(names)) == 3
    assert all(len(n.encode()) <= 180 and n.endswith(".obj") for n in names)
    assert names[1].endswith(" (2).obj")


@pytest.mark.timeout(10)
def test_collada_image_scan_has_no_catastrophic_backtracking() -> None:
    from tasks.references import collada_images

    hostile = (b"<init_from>" + b" " * 4000) * 8
    assert collada_images(hostile) == []
    assert [r.name for r in collada_images(b"<init_from> ./a b.png </init_from>")] == ["a b.png"]


def test_models_are_never_each_others_companions(tmp_path: Path) -> None:
    a = json.dumps({"asset": {"version": "2.0"}, "buffers": [{"uri": "b.gltf"}]}).encode()
    b = json.dumps({"asset": {"version": "2.0"}, "buffers": [{"uri": "a.gltf"}]}).encode()
    obj = b"mtllib box.obj\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    groups, refused = plan(_upload(tmp_path, {"a.gltf": a, "b.gltf": b, "x.obj": obj,
                                              "box.obj": corpus("OBJ/box.obj")}))
    assert refused == []
    assert [g.files for g in groups] == [("a.gltf",), ("b.gltf",), ("x.obj",), ("box.obj",)]


def test_each_mtl_is_read_once_however_it_is_spelled(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spellings = "".join(f"mtllib {'./' * i}m.mtl\n" for i in range(1, 40))
    files: dict[str, Path | bytes] = {
        "m.obj": spellings.encode() + b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n",
        "m.mtl": b"newmtl a\nmap_Kd skin.png\n", "skin.png": corpus("OBJ/SpiderTex.jpg")}
    uploaded = _upload(tmp_path, files)
    opened: list[str] = []
    original = Path.read_bytes

    def counting(path: Path) -> bytes:
        opened.append(path.name)
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    groups, _ = plan(uploaded)
    monkeypatch.undo()
    assert groups[0].files == ("m.obj", "m.mtl", "skin.png")
    assert opened.count(uploaded[1].path.name) == 1


def test_names_written_in_another_unicode_form_still_match(tmp_path: Path) -> None:
    import unicodedata

    nfd = unicodedata.normalize("NFD", "café.mtl")
    obj = f"mtllib {nfd}\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n".encode()
    groups, refused = plan(_upload(tmp_path, {"m.obj": obj, "café.mtl": b"newmtl a\n"}))
    assert refused == [] and groups[0].files == ("m.obj", "café.mtl")
