"""Substance pipelines: real-shaped .sbsar and .sbs are described; hostile ones are refused."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import py7zr
import pytest
from PIL import Image

from tasks.detect import sniff
from tasks.errors import TaskError
from tasks.substance import describe_sbs, describe_sbsar
from tests.helpers.payloads import limits as all_limits
from tests.helpers.substance_files import (
    BILLION_LAUGHS,
    EXTERNAL_ENTITY,
    USAGES,
    icon_png,
    sbs_xml,
    sbsar,
    sbsar_xml,
    write_7z,
)

Events = list[tuple[str, float]]
PIXELS = 16_000_000


def run(
    function: Any, tmp_path: Path, source: Path, max_pixels: int = PIXELS, **limits: int
) -> tuple[dict[str, Any], Events]:
    events: Events = []
    payload: dict[str, Any] = {
        "source": str(source),
        "artifacts_dir": str(tmp_path / "artifacts"),
        "max_pixels": max_pixels, "limits": all_limits(**limits),
    }
    result = function(payload, lambda stage, fraction: events.append((stage, fraction)))
    json.dumps(result)  # the result crosses a process boundary as JSON
    return result, events


def refused(function: Any, tmp_path: Path, source: Path, code: str, **kwargs: Any) -> str:
    with pytest.raises(TaskError) as caught:
        run(function, tmp_path, source, **kwargs)
    assert caught.value.code == code, caught.value.message
    assert str(tmp_path) not in caught.value.message
    return caught.value.message


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_realistic_sbsar_is_described_with_its_icon(tmp_path: Path) -> None:
    source = sbsar(tmp_path / "wood.sbsar", icon=icon_png((1024, 300)))
    detection = sniff(source)
    assert detection is not None and detection.format == "sbsar"
    before = tree(tmp_path)

    result, events = run(describe_sbsar, tmp_path, source)

    stats = result["stats"]
    assert (stats["format"], stats["format_version"]) == ("sbsar", "1.1")
    assert (stats["graphs"], stats["parameters"], stats["image_inputs"]) == (1, 3, 1)
    assert (stats["outputs"], stats["presets"], stats["members"]) == (6, 2, 3)
    assert stats["usages"] == sorted(USAGES)
    assert stats["thumbnail"] is True
    graph = stats["graph_list"][0]
    assert (graph["identifier"], graph["pkgurl"]) == ("wood_planks", "pkg://wood_planks")
    assert graph["presets"] == ["Preset 0", "Preset 1"]
    roughness = next(p for p in graph["parameters"] if p["identifier"] == "roughness_amount")
    assert roughness == {
        "identifier": "roughness_amount", "label": "Roughness", "type": "float1",
        "default": "0.5", "min": "0", "max": "1", "group": "Surface",
    }
    assert next(p for p in graph["parameters"] if p["identifier"] == "tint")["type"] == "float3"
    assert [i["identifier"] for i in graph["image_inputs"]] == ["mask"]
    normal = next(o for o in graph["outputs"] if o["identifier"] == "normal")
    assert (normal["label"], normal["usages"], normal["format"]) == ("normal", ["normal"], "0")

    names = {a["name"]: a for a in result["artifacts"]}
    assert set(names) == {"thumbnail.png", "description.json"}
    for artifact in result["artifacts"]:
        assert (tmp_path / "artifacts" / artifact["name"]).stat().st_size == artifact["size"]
    with Image.open(tmp_path / "artifacts" / "thumbnail.png") as thumb:
        assert thumb.format == "PNG" and thumb.size == (512, 150)
    saved = json.loads((tmp_path / "artifacts" / "description.json").read_text())
    assert saved["graph_count"] == 1 and saved["graphs"][0]["outputs_count"] == 6
    # nothing but the two artifacts appeared: the archive was read into memory only
    assert tree(tmp_path) - before == {"artifacts", "artifacts/thumbnail.png",
                                       "artifacts/description.json"}
    for stage in ("inspect", "extract", "parse", "thumbnail"):
        assert (stage, 0.0) in events and (stage, 1.0) in events


@pytest.mark.parametrize(
    "name",
    # py7zr reads a backslash as "/", so "..\\evil.xml" arrives as "../evil.xml"
    ["../evil.xml", "..\\evil.xml", "assets/../../evil.xml", "/etc/evil.xml", "C:/evil.xml",
     "C:evil.xml", "bell\x07.xml"],
)
def test_unsafe_member_names_are_refused_before_extraction(tmp_path: Path, name: str) -> None:
    source = write_7z(tmp_path / "evil.sbsar", [("wood.xml", sbsar_xml()), (name, b"<x/>")])
    before = tree(tmp_path)
    message = refused(describe_sbsar, tmp_path, source, "archive_rejected")
    assert "unsafe name" in message and "\x07" not in message
    assert tree(tmp_path) == before


def test_duplicate_member_names_are_refused(tmp_path: Path) -> None:
    source = write_7z(tmp_path / "dup.sbsar", [("a.xml", sbsar_xml()), ("a.xml", b"<x/>")])
    assert "two members" in refused(describe_sbsar, tmp_path, source, "archive_rejected")


def test_too_many_members_are_refused_from_the_listing(tmp_path: Path) -> None:
    members = [("wood.xml", sbsar_xml())] + [(f"m/{i}.bin", b"x") for i in range(2999)]
    source = write_7z(tmp_path / "many.sbsar", members)
    message = refused(describe_sbsar, tmp_path, source, "archive_rejected")
    limit = all_limits()["archive_max_members"]  # KILN_ARCHIVE_MAX_MEMBERS's default
    assert "3,000 members" in message and f"the limit is {limit:,}" in message
    run(describe_sbsar, tmp_path, source, archive_max_members=3000)  # the cap is a parameter


def test_compression_bomb_is_refused_by_ratio_and_by_size(tmp_path: Path) -> None:
    zeros = b"\0" * (4 * 1024 * 1024)  # LZMA packs it about 6000 times
    source = write_7z(tmp_path / "bomb.sbsar", [("wood.xml", sbsar_xml()), ("z.bin", zeros)])
    assert "expands" in refused(describe_sbsar, tmp_path, source, "archive_rejected")
    message = refused(describe_sbsar, tmp_path, source, "archive_rejected",
                      archive_max_ratio=100_000, archive_max_bytes=1024 * 1024)
    assert "unpacks to" in message
    result, _ = run(describe_sbsar, tmp_path, source, archive_max_ratio=100_000)
    assert result["stats"]["unpacked_bytes"] == len(zeros) + len(sbsar_xml())


def test_oversized_description_is_refused(tmp_path: Path) -> None:
    source = sbsar(tmp_path / "wood.sbsar")
    refused(describe_sbsar, tmp_path, source, "archive_rejected", xml_max_bytes=1000)


@pytest.mark.parametrize("header_encryption", [False, True])
def test_encrypted_archive_is_refused(tmp_path: Path, header_encryption: bool) -> None:
    target = tmp_path / "secret.sbsar"
    with py7zr.SevenZipFile(
        target, mode="w", password="hunter2", header_encryption=header_encryption
    ) as archive:
        archive.writestr(sbsar_xml(), "wood.xml")
    assert "password" in refused(describe_sbsar, tmp_path, target, "archive_rejected")


def test_billion_laughs_is_refused_without_expansion(tmp_path: Path) -> None:
    source = sbsar(tmp_path / "lol.sbsar", xml=BILLION_LAUGHS)
    assert "DTD" in refused(describe_sbsar, tmp_path, source, "corrupt_file")


def test_archive_without_description_is_not_substance(tmp_path: Path) -> None:
    source = write_7z(tmp_path / "x.sbsar", [("readme.txt", b"hi"), ("nested/a.xml", b"<x/>")])
    message = refused(describe_sbsar, tmp_path, source, "corrupt_file")
    assert message.startswith("This is not a Substance archive")
    other = write_7z(tmp_path / "y.sbsar", [("a.xml", b"<package/>")])
    assert "sbsdescription" in refused(describe_sbsar, tmp_path, other, "corrupt_file")


def test_truncated_damaged_and_foreign_files_are_corrupt(tmp_path: Path) -> None:
    good = sbsar(tmp_path / "good.sbsar").read_bytes()
    cut = tmp_path / "cut.sbsar"
    cut.write_bytes(good[: len(good) // 2])
    refused(describe_sbsar, tmp_path, cut, "corrupt_file")
    damaged = bytearray(good)
    damaged[40] ^= 0xFF  # inside the packed stream, past the 32-byte signature header
    bad = tmp_path / "bad.sbsar"
    bad.write_bytes(bytes(damaged))
    refused(describe_sbsar, tmp_path, bad, "corrupt_file")
    foreign = tmp_path / "foreign.sbsar"
    foreign.write_bytes(os.urandom(2048))
    refused(describe_sbsar, tmp_path, foreign, "corrupt_file")


def test_broken_icon_costs_only_the_thumbnail(tmp_path: Path) -> None:
    source = sbsar(tmp_path / "wood.sbsar", icon=b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    result, _ = run(describe_sbsar, tmp_path, source)
    assert result["stats"]["thumbnail"] is False and result["stats"]["graphs"] == 1
    assert [a["name"] for a in result["artifacts"]] == ["description.json"]
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")  # a real image, but not an allowed format
    source = sbsar(tmp_path / "gif.sbsar", icon=gif.getvalue())
    assert run(describe_sbsar, tmp_path, source)[0]["stats"]["thumbnail"] is False


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size and carries almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.mark.parametrize("max_pixels", [20_000, 40_000])  # beyond twice the cap, and between
def test_icon_decompression_bomb_is_too_large(tmp_path: Path, max_pixels: int) -> None:
    source = sbsar(tmp_path / "bomb.sbsar", icon=png_header_only(250, 250))
    message = refused(describe_sbsar, tmp_path, source, "too_large", max_pixels=max_pixels)
    assert "62,500 pixels" in message


def test_graph_list_and_names_are_bounded(tmp_path: Path) -> None:
    xml = sbsar_xml(graphs=70).replace(
        b'label="Wood Planks 0"', b'label="&#10;' + "\u200b".encode() + b"W" * 300 + b'"'
    )
    result, _ = run(describe_sbsar, tmp_path, sbsar(tmp_path / "w.sbsar", xml=xml))
    stats = result["stats"]
    assert stats["graphs"] == 70 and len(stats["graph_list"]) == 64
    assert stats["outputs"] == 64 * 6  # totals are over the listed graphs
    label = stats["graph_list"][0]["label"]
    assert len(label) <= 120 and label.isprintable() and label.startswith("WWW")


def test_sbs_package_graphs_outputs_and_dependency_names(tmp_path: Path) -> None:
    source = tmp_path / "bricks.sbs"
    source.write_bytes(sbs_xml())
    detection = sniff(source)
    assert detection is not None and detection.format == "sbs"

    result, events = run(describe_sbs, tmp_path, source)

    stats = result["stats"]
    assert (stats["format"], stats["graphs"], stats["outputs"]) == ("sbs", 2, 5)
    assert (stats["parameters"], stats["image_inputs"], stats["presets"]) == (4, 2, 0)
    assert stats["usages"] == ["baseColor", "height", "normal", "roughness"]
    assert [g["identifier"] for g in stats["graph_list"]] == ["bricks", "variants/bricks_mossy"]
    mortar = stats["graph_list"][0]["parameters"][0]
    assert mortar == {
        "identifier": "mortar_width", "label": "Mortar width", "type": "float1",
        "default": "0.15", "min": "0", "max": "1", "group": "Mortar",
    }
    assert stats["graph_list"][0]["parameters"][1]["type"] == "integer2"
    assert stats["dependencies"] == 2
    assert [d["name"] for d in stats["dependency_list"]] == [
        "pattern_tile_generator.sbs", "grunge_maps.sbs"
    ]
    assert "Users" not in json.dumps(result)  # the author's path is reduced to a name
    assert [a["name"] for a in result["artifacts"]] == ["description.json"]
    assert ("parse", 1.0) in events


def test_sbs_caps_and_hostile_xml(tmp_path: Path) -> None:
    source = tmp_path / "bricks.sbs"
    source.write_bytes(sbs_xml())
    refused(describe_sbs, tmp_path, source, "too_large", xml_max_bytes=1000)
    hostile = tmp_path / "xxe.sbs"
    hostile.write_bytes(EXTERNAL_ENTITY)
    assert "not expanded" in refused(describe_sbs, tmp_path, hostile, "corrupt_file")
    laughs = tmp_path / "lol.sbs"
    laughs.write_bytes(BILLION_LAUGHS.replace(b"sbsdescription", b"package"))
    refused(describe_sbs, tmp_path, laughs, "corrupt_file")
    stranger = tmp_path / "other.sbs"
    stranger.write_bytes(b"<COLLADA/>")
    assert "<package>" in refused(describe_sbs, tmp_path, stranger, "corrupt_file")
    broken = tmp_path / "broken.sbs"
    broken.write_bytes(sbs_xml()[:-40])
    refused(describe_sbs, tmp_path, broken, "corrupt_file")
