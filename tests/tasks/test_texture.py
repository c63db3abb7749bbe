"""The texture pipeline describes images, thumbnails any mode, and refuses bombs and strangers."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.detect import sniff
from tasks.errors import TaskError
from tasks.progress import Result
from tasks.texture import describe
from tests.conftest import CORPUS
from tests.helpers.payloads import as_payload
from tests.helpers.payloads import limits as all_limits

LIMIT = 50_000_000

Events = list[tuple[str, float]]


def describe_file(
    tmp_path: Path, source: Path, fmt: str | None = None, max_pixels: int = LIMIT
) -> tuple[Result, Events]:
    if fmt is None:
        detection = sniff(source)
        assert detection is not None and detection.kind == "texture"
        fmt = detection.format
    events: Events = []
    payload = {
        "source": str(source),
        "format": fmt,
        "artifacts_dir": str(tmp_path / "artifacts"),
        "max_pixels": max_pixels, "limits": all_limits(),
    }
    result = describe(as_payload(payload),
                      lambda stage, fraction: events.append((stage, fraction)))
    return result, events


def save(tmp_path: Path, image: Image.Image, fmt: str, **options: Any) -> Path:
    """Save under the name `source`: the pipeline must not need an extension."""
    source = tmp_path / "source"
    image.save(source, format=fmt, **options)
    return source


def describe_bytes(tmp_path: Path, data: bytes, expected: str) -> dict[str, Any]:
    """The stats of the bytes as a texture, recognised as the upload would (as `expected`)."""
    source = tmp_path / "source"
    source.write_bytes(data)
    detection = sniff(source)
    assert detection is not None and detection.format == expected
    stats: dict[str, Any] = describe_file(tmp_path, source)[0]["stats"]
    return stats


def thumbnail(tmp_path: Path) -> Image.Image:
    with Image.open(tmp_path / "artifacts" / "thumbnail.png") as image:
        image.load()
        return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", header),
            png_chunk(b"IDAT", rows),
            png_chunk(b"IEND", b""),
        )
    )


def half_transparent(size: tuple[int, int] = (512, 256)) -> Image.Image:
    image = Image.new("RGBA", size, (200, 100, 50, 255))
    image.putpixel((3, 3), (0, 0, 0, 10))
    return image


@pytest.mark.parametrize(
    ("fmt", "options", "expected"),
    [
        ("PNG", {}, "png"),
        ("TGA", {}, "tga"),
        ("TGA", {"compression": "tga_rle"}, "tga"),
        ("TIFF", {}, "tiff"),
        ("WEBP", {"lossless": True}, "webp"),
    ],
)
def test_alpha_formats_report_used_alpha(
    tmp_path: Path, fmt: str, options: dict[str, Any], expected: str
) -> None:
    result, events = describe_file(tmp_path, save(tmp_path, half_transparent(), fmt, **options))
    stats = result["stats"]
    assert stats["format"] == expected
    assert (stats["width"], stats["height"], stats["mode"], stats["bands"]) == (512, 256, "RGBA", 4)
    assert stats["bit_depth"] == 8
    assert stats["has_alpha"] is True and stats["alpha_used"] is True
    assert stats["power_of_two"] is True and stats["frames"] == 1
    artifact = result["artifacts"][0]
    assert artifact["name"] == "thumbnail.png" and artifact["media_type"] == "image/png"
    assert artifact["size"] == (tmp_path / "artifacts" / "thumbnail.png").stat().st_size
    small = thumbnail(tmp_path)
    assert small.size == (256, 128) and small.mode == "RGBA"
    stages = [stage for stage, _ in events]
    assert stages[:6] == ["open", "open", "analyse", "analyse", "thumbnail", "thumbnail"]
    assert set(stages[6:]) == {"mips"}
    assert events[6] == ("mips", 0.0) and events[-1] == ("mips", 1.0)


def test_opaque_alpha_channel_is_not_used(tmp_path: Path) -> None:
    source = save(tmp_path, Image.new("RGBA", (64, 64), (1, 2, 3, 255)), "PNG")
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert stats["has_alpha"] is True and stats["alpha_used"] is False


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"), [("RGB", "JPEG", "jpeg"), ("RGB", "BMP", "bmp")]
)
def test_opaque_formats(tmp_path: Path, mode: str, fmt: str, expected: str) -> None:
    source = save(tmp_path, Image.new(mode, (300, 200), (10, 200, 30)), fmt)
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["format"], stats["width"], stats["height"]) == (expected, 300, 200)
    assert stats["has_alpha"] is False and stats["alpha_used"] is False
    assert stats["power_of_two"] is False
    assert thumbnail(tmp_path).size == (256, 171)


def test_cmyk_jpeg_gets_an_rgb_thumbnail(tmp_path: Path) -> None:
    source = save(tmp_path, Image.new("CMYK", (64, 32), (0, 200, 200, 0)), "JPEG")
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["mode"], stats["bands"]) == ("CMYK", 4)
    small = thumbnail(tmp_path)
    assert small.mode == "RGB" and small.size == (64, 32)


def test_sixteen_bit_grey_png(tmp_path: Path) -> None:
    ramp = np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) * 3
    source = save(tmp_path, Image.fromarray(ramp), "PNG")
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert stats["mode"].startswith("I") and stats["bit_depth"] == 16
    small = thumbnail(tmp_path)
    assert small.mode == "RGB"
    assert small.getextrema()[0] == (0, 191)  # scaled from 16 bits, not clipped at 255


def test_sixteen_bit_grey_tiff_keeps_its_tones(tmp_path: Path) -> None:
    import imagecodecs

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 8).astype(np.uint16)
    source = tmp_path / "source"
    source.write_bytes(bytes(imagecodecs.tiff_encode(ramp)))
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert stats["bit_depth"] == 16
    extrema = thumbnail(tmp_path).getextrema()[0]
    assert isinstance(extrema, tuple) and extrema[0] == 0
    assert 120 <= extrema[1] <= 130  # 32760 of 65535: mid grey, not stretched to white


def test_sixteen_bit_colour_png_reports_its_stored_depth(tmp_path: Path) -> None:
    samples = (np.random.default_rng(7).random((16, 16, 3)) * 65535).astype(">u2")
    rows = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in samples))
    source = tmp_path / "source"
    source.write_bytes(png_bytes(16, 16, 16, 2, rows))
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["mode"], stats["bit_depth"]) == ("RGB", 16)


def test_float_tiff_thumbnail(tmp_path: Path) -> None:
    values = np.linspace(-1.0, 1.0, 64 * 32, dtype=np.float32).reshape(32, 64)
    source = save(tmp_path, Image.fromarray(values), "TIFF")
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["mode"], stats["bit_depth"]) == ("F", 32)
    assert thumbnail(tmp_path).size == (64, 32)


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    stats = describe_file(tmp_path, save(tmp_path, image, "PNG", transparency=0))[0]["stats"]
    assert stats["mode"] == "P" and stats["has_alpha"] is True and stats["alpha_used"] is True
    assert thumbnail(tmp_path).mode == "RGBA"


def test_one_bit_png(tmp_path: Path) -> None:
    stats = describe_file(tmp_path, save(tmp_path, Image.new("1", (8, 8)), "PNG"))[0]["stats"]
    assert (stats["mode"], stats["bit_depth"], stats["bands"]) == ("1", 1, 1)
    assert thumbnail(tmp_path).mode == "RGB"


def test_animated_gif_counts_frames(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (40, 20), (60 * i, 0, 0)) for i in range(3)]
    source = tmp_path / "source"
    frames[0].save(source, format="GIF", save_all=True, append_images=frames[1:])
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["format"], stats["frames"]) == ("gif", 3)
    assert thumbnail(tmp_path).size == (40, 20)


def test_corpus_tga_texture(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copyfile(CORPUS / "Collada/duckCM.tga", source)
    stats = describe_file(tmp_path, source)[0]["stats"]
    assert (stats["format"], stats["width"], stats["height"]) == ("tga", 512, 512)
    assert stats["power_of_two"] is True and stats["has_alpha"] is False


def bomb(tmp_path: Path, side: int) -> Path:
    """A valid 1-bit PNG of side × side pixels that compresses to almost nothing."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    rows = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    source = tmp_path / "source"
    source.write_bytes(png_bytes(side, side, 1, 0, rows))
    return source


@pytest.mark.parametrize("max_pixels", [1_000_000, 600_000_000])
def test_decompression_bomb_is_too_large(tmp_path: Path, max_pixels: int) -> None:
    """Both Pillow's warning (> limit) and its error (> twice the limit) become too_large."""
    source = bomb(tmp_path, 30_000)
    assert source.stat().st_size < 200_000
    previous = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, max_pixels=max_pixels)
    assert caught.value.code == "too_large"
    assert "900,000,000 pixels" in caught.value.message
    assert f"{max_pixels:,}" in caught.value.message
    assert previous == Image.MAX_IMAGE_PIXELS
    assert not (tmp_path / "artifacts").exists()


def test_psd_is_not_an_image_kiln_opens(tmp_path: Path) -> None:
    source = tmp_path / "source"
    header = struct.pack(">HIIHH", 3, 8, 8, 8, 3)  # channels, height, width, depth, RGB
    source.write_bytes(b"8BPS\x00\x01" + bytes(6) + header + bytes(64))
    assert sniff(source) is None
    with pytest.raises(TaskError) as unsupported:
        describe_file(tmp_path, source, fmt="psd")
    assert unsupported.value.code == "unsupported_format"
    with pytest.raises(TaskError) as disguised:
        describe_file(tmp_path, source, fmt="png")
    assert disguised.value.code == "corrupt_file"


def test_truncated_png_is_corrupt(tmp_path: Path) -> None:
    source = save(tmp_path, Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    source.write_bytes(source.read_bytes()[:200])
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, fmt="png")
    assert caught.value.code == "corrupt_file"
    assert str(tmp_path) not in caught.value.message


def test_damaged_exr_is_corrupt(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"\x76\x2f\x31\x01" + bytes(64))
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, fmt="exr")
    assert caught.value.code == "corrupt_file"
    assert str(tmp_path) not in caught.value.message


def test_eps_disguised_as_png_is_corrupt(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, fmt="png")
    assert caught.value.code == "corrupt_file"


def mips_on_disk(tmp_path: Path, result: Result) -> list[tuple[int, int]]:
    """Sizes of the mip artifacts, decoded, after checking they match the stats."""
    artifacts = {a["name"]: a for a in result["artifacts"]}
    sizes = []
    for mip in result["stats"]["mips"]:
        assert mip["name"] == f"mip-{mip['level']}-{mip['width']}x{mip['height']}.webp"
        path = tmp_path / "artifacts" / mip["name"]
        assert artifacts[mip["name"]] == {
            "name": mip["name"], "media_type": "image/webp", "size": path.stat().st_size
        }
        with Image.open(path) as image:
            assert image.format == "WEBP" and image.size == (mip["width"], mip["height"])
        sizes.append(image.size)
    return sizes


def test_mip_chain_of_a_non_square_texture(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 200), (10, 200, 30))
    result = describe_file(tmp_path, save(tmp_path, image, "PNG"))[0]
    assert mips_on_disk(tmp_path, result) == [
        *((256, 128), (128, 64), (64, 32), (32, 16), (16, 8), (8, 4), (4, 2), (2, 1), (1, 1))
    ]
    assert [mip["level"] for mip in result["stats"]["mips"]] == list(range(9))
    with Image.open(tmp_path / "artifacts" / "mip-3-32x16.webp") as level:
        assert level.convert("RGB").getpixel((5, 5)) == (10, 200, 30)  # lossless


def test_mip_chain_is_capped(tmp_path: Path) -> None:
    source = save(tmp_path, Image.new("RGBA", (4096, 16), (100, 150, 200, 160)), "PNG")
    result = describe_file(tmp_path, source)[0]
    sizes = mips_on_disk(tmp_path, result)
    assert sizes[0] == (2048, 8) and sizes[-1] == (1, 1) and len(sizes) == 12
    with Image.open(tmp_path / "artifacts" / result["stats"]["mips"][0]["name"]) as top:
        pixel = top.getpixel((0, 0))
        assert top.mode == "RGBA" and isinstance(pixel, tuple)
        # resized premultiplied (no dark fringes), so colour comes back within rounding
        assert np.abs(np.subtract(pixel, (100, 150, 200, 160))).max() <= 1
    events: Events = []
    payload = {
        "source": str(source), "format": "png", "artifacts_dir": str(tmp_path / "small"),
        "max_pixels": LIMIT, "limits": all_limits(mip_top_size=64),
    }
    capped = describe(as_payload(payload),
                      lambda stage, fraction: events.append((stage, fraction)))
    assert [(m["width"], m["height"]) for m in capped["stats"]["mips"]][:2] == [(64, 1), (32, 1)]


def test_icc_profiles(tmp_path: Path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.new("RGB", (16, 16), (5, 6, 7))
    stats = describe_file(tmp_path, save(tmp_path, image, "PNG", icc_profile=srgb))[0]["stats"]
    assert stats["icc"] == {"description": "sRGB built-in", "color_space": "RGB"}
    broken = describe_file(tmp_path, save(tmp_path, image, "PNG", icc_profile=b"\x00junk" * 40))
    assert broken[0]["stats"]["icc"] == {"error": "unreadable profile"}
    assert describe_file(tmp_path, save(tmp_path, image, "JPEG"))[0]["stats"]["icc"] is None


def test_normal_map_verdict_in_the_description(tmp_path: Path) -> None:
    from tests.tasks.test_normal_map import bumps, encode_normals

    normal = encode_normals(bumps(size=128), "directx")
    stats = describe_file(tmp_path, save(tmp_path, normal, "PNG"))[0]["stats"]
    assert stats["normal_map"]["likely"] is True
    assert stats["normal_map"]["convention"] == "directx"
    photo = Image.effect_noise((128, 128), 40).convert("RGB")
    stats = describe_file(tmp_path, save(tmp_path, photo, "JPEG"))[0]["stats"]
    assert stats["normal_map"]["likely"] is False and stats["normal_map"]["convention"] is None
