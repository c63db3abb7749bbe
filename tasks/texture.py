"""The texture pipeline: open an image through an allow-list of decoders; describe, thumbnail it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tasks.errors import UnsupportedFormat
from tasks.imaging import ALPHA_MODES, PILLOW_FORMATS, open_image, to_display
from tasks.progress import Payload, Progress, Result

THUMBNAIL_NAME = "thumbnail.png"
THUMBNAIL_SIZE = (256, 256)


def describe(payload: Payload, progress: Progress) -> Result:
    """Describe the image at `payload["source"]` and write its thumbnail into `artifacts_dir`."""
    fmt = str(payload["format"])
    if fmt not in PILLOW_FORMATS:
        raise UnsupportedFormat(f"{fmt.upper()} images are not supported.")
    source = Path(payload["source"])
    max_pixels = int(payload["max_pixels"])
    progress("open", 0.0)
    with open_image(source, max_pixels, [fmt]) as image:
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


def _stats(image: Image.Image, fmt: str, source: Path) -> dict[str, Any]:
    width, height = image.size
    has_alpha = image.mode in ALPHA_MODES or "transparency" in image.info
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
    if image.mode in ALPHA_MODES:
        alpha = image.getchannel("A")
    else:  # palette or colour-key transparency
        alpha = image.convert("RGBA").getchannel("A")
    low = alpha.getextrema()[0]
    return isinstance(low, (int, float)) and low < 255


def _thumbnail(image: Image.Image) -> Image.Image:
    """An RGB or RGBA copy of the first frame that fits in THUMBNAIL_SIZE, keeping the aspect."""
    if image.tell():
        image.seek(0)
    small = to_display(image)
    small.thumbnail(THUMBNAIL_SIZE)
    return small
