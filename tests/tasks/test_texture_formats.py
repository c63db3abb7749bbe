"""Texture formats beyond the everyday: OpenEXR (half and float, alpha, layers, parts, damaged
headers), BMP depths as stored, and BigTIFF."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.errors import TaskError
from tests.tasks.test_texture import describe_bytes, describe_file, thumbnail


def write_exr(path: Path, channels: dict[str, Any]) -> Path:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, channels).write(str(path))
    return path


def test_exr_rgb_half(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0.0, 4.0, 64, dtype=np.float16), (32, 1))
    source = write_exr(tmp_path / "source.exr", {"RGB": np.dstack([ramp, ramp * 0.5, ramp * 0])})
    result, events = describe_file(tmp_path, source, fmt="exr")
    stats = result["stats"]
    assert (stats["format"], stats["width"], stats["height"]) == ("exr", 64, 32)
    assert stats["mode"] == "RGB"
    assert stats["pixel_type"] == "half" and stats["bit_depth"] == 16 and stats["bands"] == 3
    assert sorted(c["name"] for c in stats["channels"]) == ["B", "G", "R"]
    assert stats["has_alpha"] is False and stats["power_of_two"] is True
    assert stats["exposure"] < -1.5  # HDR values up to 4: brought down before clamping
    assert stats["normal_map"]["likely"] is False
    assert [m["width"] for m in stats["mips"]] == [64, 32, 16, 8, 4, 2, 1]
    small = thumbnail(tmp_path)
    assert small.size == (64, 32) and small.mode == "RGB"
    left, right = small.getpixel((0, 16)), small.getpixel((63, 16))
    assert isinstance(left, tuple) and isinstance(right, tuple)
    assert left[0] < 20 and right[0] > 200 and right[2] == 0  # a ramp of red-orange
    assert [stage for stage, _ in events][:6] == [
        *("open", "open", "analyse", "analyse", "thumbnail", "thumbnail")
    ]


def test_exr_rgba_float_with_alpha(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16, 4), dtype=np.float32)
    pixels[..., 0] = 0.5
    pixels[..., 3] = 1.0
    pixels[:4, :4, 3] = 0.25
    source = write_exr(tmp_path / "source.exr", {"RGBA": pixels})
    stats = describe_file(tmp_path, source, fmt="exr")[0]["stats"]
    assert stats["pixel_type"] == "float" and stats["bit_depth"] == 32 and stats["mode"] == "RGBA"
    assert stats["has_alpha"] is True and stats["alpha_used"] is True and stats["exposure"] == 0
    small = thumbnail(tmp_path)
    assert small.mode == "RGBA" and small.getpixel((0, 0)) == (188, 0, 0, 64)
    assert small.getpixel((10, 10)) == (188, 0, 0, 255)  # 0.5 linear is 188 in sRGB


def test_exr_header_claiming_a_huge_data_window_is_too_large(tmp_path: Path) -> None:
    source = write_exr(tmp_path / "source.exr", {"RGB": np.zeros((6, 8, 3), dtype=np.float16)})
    data = source.read_bytes()
    window = data.index(b"dataWindow\x00box2i\x00") + len(b"dataWindow\x00box2i\x00") + 4
    assert struct.unpack_from("<4i", data, window) == (0, 0, 7, 5)
    huge = struct.pack("<4i", 0, 0, 99_999, 99_999)
    source.write_bytes(data[:window] + huge + data[window + 16 :])
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, fmt="exr")  # would need 56 GiB if its pixels were read
    assert caught.value.code == "too_large"
    assert "10,000,000,000 pixels" in caught.value.message
    assert not (tmp_path / "artifacts").exists()


def test_truncated_exr_is_corrupt(tmp_path: Path) -> None:
    noise = np.random.default_rng(2).random((32, 32, 3)).astype(np.float16)
    source = write_exr(tmp_path / "source.exr", {"RGB": noise})
    source.write_bytes(source.read_bytes()[:-40])
    with pytest.raises(TaskError) as caught:
        describe_file(tmp_path, source, fmt="exr")
    assert caught.value.code == "corrupt_file"


def bmp(bits: int, width: int = 5, height: int = 3) -> bytes:
    """A BMP (BITMAPINFOHEADER, uncompressed) of `bits` per pixel, as old tools write them:
    Pillow writes only some depths itself."""
    colours = 2**bits if bits <= 8 else 0
    row = (width * bits + 31) // 32 * 4
    pixels = bytes(range(row * height))
    palette = b"".join(bytes([(i * 37) % 256, (i * 91) % 256, (i * 13) % 256, 0])
                       for i in range(colours))
    offset = 14 + 40 + len(palette)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, len(pixels), 2835,
                          2835, colours, 0)
            + palette + pixels)


@pytest.mark.parametrize("bits", [1, 4, 8, 16, 24, 32])
def test_bmp_bit_depth_is_the_stored_one(tmp_path: Path, bits: int) -> None:
    stats = describe_bytes(tmp_path, bmp(bits), "bmp")
    assert stats["bit_depth"] == bits and (stats["width"], stats["height"]) == (5, 3)


def test_bigtiff_is_accepted(tmp_path: Path) -> None:
    import imagecodecs

    pixels = np.zeros((8, 12, 3), dtype=np.uint8)
    pixels[..., 0] = 200
    stats = describe_bytes(tmp_path, bytes(imagecodecs.tiff_encode(pixels, bigtiff=True)), "tiff")
    assert (stats["format"], stats["width"], stats["height"]) == ("tiff", 12, 8)


def test_a_layered_exr_shows_its_colour_layer_not_its_alpha(tmp_path: Path) -> None:
    import OpenEXR

    red = np.zeros((8, 8), dtype=np.float32)
    red[:] = 0.5
    zero, one = np.zeros_like(red), np.ones_like(red)
    source = tmp_path / "layers.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"A": one, "depth.Z": one * 7, "diffuse.R": red, "diffuse.G": zero,
                          "diffuse.B": zero}).write(str(source))
    stats = describe_file(tmp_path, source, fmt="exr")[0]["stats"]
    assert len(stats["channels"]) == 5
    assert thumbnail(tmp_path).getpixel((4, 4)) == (188, 0, 0)  # 0.5 linear red, not white


def test_a_multi_part_exr_shows_the_part_with_colour(tmp_path: Path) -> None:
    import OpenEXR

    colour = np.zeros((4, 6, 3), dtype=np.float32)
    colour[..., 2] = 0.5
    source = tmp_path / "parts.exr"
    OpenEXR.File([OpenEXR.Part({"type": OpenEXR.scanlineimage},
                               {"Z": np.ones((4, 6), dtype=np.float32) * 3}, "depth"),
                  OpenEXR.Part({"type": OpenEXR.scanlineimage}, {"RGB": colour}, "beauty"),
                  ]).write(str(source))
    stats = describe_file(tmp_path, source, fmt="exr")[0]["stats"]
    assert stats["parts"] == 2 and (stats["width"], stats["height"]) == (6, 4)
    assert thumbnail(tmp_path).getpixel((3, 2)) == (0, 0, 188)
