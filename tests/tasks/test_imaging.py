"""The safe image opener: allowed decoders only, a pixel cap, a coded error for hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.errors import TaskError, TooLarge
from tasks.imaging import (
    PILLOW_FORMATS,
    ExrImage,
    open_image,
    pixel_limit,
    sniff_image_format,
    to_display,
    tone_map,
)
from tests.conftest import corpus

LIMIT = 50_000_000
PSD = b"8BPS\x00\x01" + bytes(6) + struct.pack(">HIIHH", 3, 8, 8, 8, 3) + bytes(64)
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side × side pixels, zlib-compressed zeros: a few tens of kilobytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    rows = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


SAMPLE = Image.new("RGBA", (24, 16), (200, 100, 50, 128))
ENCODED = {
    "png": encode(SAMPLE, "PNG"),
    "jpeg": encode(SAMPLE.convert("RGB"), "JPEG"),
    "tga": encode(SAMPLE, "TGA"),
    "tiff": encode(SAMPLE, "TIFF"),
    "webp": encode(SAMPLE, "WEBP", lossless=True),
    "bmp": encode(SAMPLE.convert("RGB"), "BMP"),
    "gif": encode(SAMPLE.convert("RGB"), "GIF"),
}


@pytest.mark.parametrize("fmt", sorted(PILLOW_FORMATS))
def test_every_allowed_format_opens_and_is_sniffed(fmt: str) -> None:
    data = ENCODED[fmt]
    assert sniff_image_format(data) == fmt
    for formats in ([fmt], None):
        image = open_image(data, LIMIT, formats)
        assert image.size == (24, 16)
        assert image.format == PILLOW_FORMATS[fmt]


def test_path_source_and_corpus_tga(tmp_path: Path) -> None:
    image = open_image(corpus("Collada/duckCM.tga"), LIMIT, ["tga"])
    assert image.size == (512, 512)
    source = tmp_path / "wood.png"
    source.write_bytes(ENCODED["png"])
    assert open_image(source, LIMIT).mode == "RGBA"


def test_a_format_not_allowed_is_corrupt() -> None:
    with pytest.raises(TaskError) as single:
        open_image(ENCODED["jpeg"], LIMIT, ["png"], what="texture wood.png")
    assert single.value.code == "corrupt_file"
    assert "texture wood.png" in single.value.message and "PNG" in single.value.message
    with pytest.raises(TaskError) as several:
        open_image(ENCODED["jpeg"], LIMIT, ["png", "webp"])
    assert several.value.code == "corrupt_file"


@pytest.mark.parametrize("data", [PSD, EPS], ids=["psd", "eps"])
@pytest.mark.parametrize("formats", [["png"], ["tga"], None], ids=["png", "tga", "any"])
def test_psd_and_eps_are_refused(data: bytes, formats: list[str] | None) -> None:
    assert sniff_image_format(data) is None
    with pytest.raises(TaskError) as caught:
        open_image(data, LIMIT, formats)
    assert caught.value.code == "corrupt_file"


def test_png_bomb_is_too_large_and_the_limit_is_restored() -> None:
    data = png_bomb()
    assert len(data) < 200_000
    previous = Image.MAX_IMAGE_PIXELS
    for max_pixels in (1_000_000, 600_000_000):  # Pillow's error, then its warning, at the cap
        with pytest.raises(TaskError) as caught:
            open_image(data, max_pixels, ["png"], what="texture bomb.png")
        assert caught.value.code == "too_large"
        assert "texture bomb.png has 900,000,000 pixels" in caught.value.message
        assert f"{max_pixels:,}" in caught.value.message
        assert previous == Image.MAX_IMAGE_PIXELS


def test_pixel_limit_turns_the_bomb_warning_into_too_large() -> None:
    with pytest.raises(TooLarge), pixel_limit(100):
        Image.open(io.BytesIO(ENCODED["png"]))  # 384 pixels: over the limit, under twice it


def test_truncated_and_garbage_bytes_are_corrupt() -> None:
    noisy = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    for data in (noisy[:200], b"", b"\x89PNG\r\n\x1a\n" + bytes(40)):
        with pytest.raises(TaskError) as caught:
            open_image(data, LIMIT, ["png"])
        assert caught.value.code == "corrupt_file"


def test_labels_are_sanitised() -> None:
    with pytest.raises(TaskError) as caught:
        open_image(PSD, LIMIT, ["png"], what="texture \x1b[31mred\n" + "x" * 300)
    message = caught.value.message
    assert "\x1b" not in message and "\n" not in message and len(message) < 160


def test_first_frame_of_an_animation() -> None:
    frames = [Image.new("RGB", (8, 8), (80 * i, 0, 0)) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = open_image(data, LIMIT, ["gif"])
    assert image.tell() == 0 and getattr(image, "n_frames", 1) == 3
    assert to_display(image).getpixel((0, 0)) == (0, 0, 0)


def test_tga_is_sniffed_only_from_a_consistent_header() -> None:
    data = ENCODED["tga"]
    assert sniff_image_format(data) == "tga"
    assert sniff_image_format(data[:18] + bytes(5)) is None  # the size does not fit the header


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (Image.new("I;16", (4, 4), 65535), "RGB"),
        (Image.new("F", (4, 4), 0.5), "RGB"),
        (Image.new("LA", (4, 4), (9, 100)), "RGBA"),
        (Image.new("CMYK", (4, 4)), "RGB"),
        (Image.new("1", (4, 4), 1), "RGB"),
    ],
)
def test_to_display_gives_eight_bit_rgb_or_rgba(image: Image.Image, mode: str) -> None:
    assert to_display(image).mode == mode


def test_tone_map_keeps_texture_range_and_brings_hdr_down() -> None:
    ramp = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(4, 4)
    colour = np.dstack([ramp, ramp, ramp])
    image, exposure = tone_map(ExrImage(4, 4, (), 1, colour, None))
    assert exposure == 0.0 and image.mode == "RGB"
    assert image.getpixel((3, 3)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 0)
    # 0.2159 linear is 128/255 in sRGB: the transfer curve is applied
    mid = np.full((2, 2, 3), 0.2159, dtype=np.float32)
    assert tone_map(ExrImage(2, 2, (), 1, mid, None))[0].getpixel((0, 0)) == (128, 128, 128)
    hdr, exposure = tone_map(ExrImage(4, 4, (), 1, colour * 8.0, np.full((4, 4), 0.5, "f")))
    assert exposure == pytest.approx(-3.0, abs=0.1) and hdr.mode == "RGBA"
    assert hdr.getpixel((0, 0)) == (0, 0, 0, 128)
