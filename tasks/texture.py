"""The texture pipeline: open an image through an allow-list of decoders; describe, thumbnail it."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from tasks.errors import CorruptFile, TooLarge, UnsupportedFormat
from tasks.progress import Payload, Progress, Result

# Kiln format -> the one Pillow decoder allowed to read it
PILLOW_FORMATS: dict[str, str] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "tga": "TGA",
    "tiff": "TIFF",
    "webp": "WEBP",
    "bmp": "BMP",
    "gif": "GIF",
}
THUMBNAIL_NAME = "thumbnail.png"
THUMBNAIL_SIZE = (256, 256)

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def describe(payload: Payload, progress: Progress) -> Result:
    """Describe the image at `payload["source"]` and write its thumbnail into `artifacts_dir`."""
    fmt = str(payload["format"])
    if fmt not in PILLOW_FORMATS:
        raise UnsupportedFormat(f"{fmt.upper()} images are not supported.")
    source = Path(payload["source"])
    max_pixels = int(payload["max_pixels"])
    progress("open", 0.0)
    with _pixel_limit(max_pixels), _decoding(fmt):
        image = Image.open(source, formats=[PILLOW_FORMATS[fmt]])
        with image:
            image.load()
            progress("open", 1.0)
            progress("analyse", 0.0)
            stats = _stats(image, fmt, source)
            progress("analyse", 1.0)
            progress("thumbnail", 0.0)
            thumbnail = _thumbnail(image)
    artifacts = Path(payload["artifacts_dir"])
    artifacts.mkdir(parents=True, exist_ok=True)
    target = artifacts / THUMBNAIL_NAME
    thumbnail.save(target, format="PNG", optimize=True)
    progress("thumbnail", 1.0)
    artifact = {"name": THUMBNAIL_NAME, "media_type": "image/png", "size": target.stat().st_size}
    return {"stats": stats, "artifacts": [artifact]}


@contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's bomb check, at Kiln's limit, raising instead of warning."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        found = _BOMB_PIXELS.search(str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels"
        raise TooLarge(f"The image has {pixels}; the limit is {max_pixels:,} pixels.") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@contextmanager
def _decoding(fmt: str) -> Iterator[None]:
    """Turn any decoder failure into CorruptFile: a bad image is the file's fault, not a crash."""
    try:
        yield
    except (Image.DecompressionBombWarning, Image.DecompressionBombError, MemoryError):
        raise
    except UnidentifiedImageError as error:
        raise CorruptFile(f"The file is not a readable {fmt.upper()} image.") from error
    except Exception as error:  # Pillow's decoders raise many kinds on hostile bytes
        raise CorruptFile(f"The {fmt.upper()} image is damaged and cannot be decoded.") from error


def _stats(image: Image.Image, fmt: str, source: Path) -> dict[str, Any]:
    width, height = image.size
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    return {
        "format": fmt,
        "width": width,
        "height": height,
        "mode": image.mode,
        "bands": len(image.getbands()),
        "bit_depth": _bit_depth(image, fmt, source),
        "has_alpha": has_alpha,
        "alpha_used": has_alpha and _alpha_used(image),
        "power_of_two": _power_of_two(width) and _power_of_two(height),
        "frames": int(getattr(image, "n_frames", 1)),
    }


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _bit_depth(image: Image.Image, fmt: str, source: Path) -> int:
    """Bits per sample as stored: Pillow reads 16-bit colour PNG and TIFF into 8-bit modes."""
    if fmt == "png":
        with source.open("rb") as file:
            ihdr = file.read(25)
        return ihdr[24]  # the IHDR chunk always comes first; byte 24 is its bit depth
    if fmt == "tiff":
        bits = image.getexif().get(258)  # BitsPerSample
        if isinstance(bits, tuple) and bits:
            return int(bits[0])
        if isinstance(bits, int):
            return bits
    if image.mode == "1":
        return 1
    if image.mode.startswith("I;16"):
        return 16
    if image.mode in ("I", "F"):
        return 32
    return 8


def _alpha_used(image: Image.Image) -> bool:
    """True when some pixel is not fully opaque."""
    if image.mode in _ALPHA_MODES:
        alpha = image.getchannel("A")
    else:  # palette or colour-key transparency
        alpha = image.convert("RGBA").getchannel("A")
    low = alpha.getextrema()[0]
    return isinstance(low, (int, float)) and low < 255


def _thumbnail(image: Image.Image) -> Image.Image:
    """An RGB or RGBA copy of the first frame that fits in THUMBNAIL_SIZE, keeping the aspect."""
    if image.tell():
        image.seek(0)
    small = _eight_bit(image)
    small.thumbnail(THUMBNAIL_SIZE)
    return small


def _eight_bit(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        samples = np.asarray(image, dtype=np.float64)
        finite = samples[np.isfinite(samples)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if mode.startswith("I;16"):  # use the full 16-bit scale, like a viewer would
            low, high = 0.0, 65535.0
        scaled = np.nan_to_num((samples - low) * (255.0 / max(high - low, 1e-12)))
        grey = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError:  # a mode Pillow cannot turn into RGB (LAB, HSV...): show its first band
        return image.getchannel(0).convert("RGB")
