"""The texture pipeline: describe an image or OpenEXR file, judge it as a normal map, thumbnail and
mip it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tasks.errors import UnsupportedFormat
from tasks.imaging import (
    ALPHA_MODES,
    PILLOW_FORMATS,
    ExrImage,
    open_exr,
    open_image,
    safe_label,
    to_display,
    tone_map,
)
from tasks.mips import write_mips
from tasks.normal_map import normal_map_verdict
from tasks.progress import Artifact, Payload, Progress, Result

THUMBNAIL_NAME = "thumbnail.png"
THUMBNAIL_SIZE = (256, 256)


def describe(payload: Payload, progress: Progress) -> Result:
    """Describe the image at `payload["source"]`; write its thumbnail and mips into `artifacts_dir`
    (the largest mip's side at most the limit `mip_top_size`)."""
    fmt = str(payload["format"])
    if fmt != "exr" and fmt not in PILLOW_FORMATS:
        raise UnsupportedFormat(f"{safe_label(fmt.upper())} images are not supported.")
    source = Path(payload["source"])
    max_pixels = int(payload["max_pixels"])
    mip_top_size = payload["limits"]["mip_top_size"]
    progress("open", 0.0)
    if fmt == "exr":
        exr = open_exr(source, max_pixels, what="texture")
        display, exposure = tone_map(exr)
        progress("open", 1.0)
        progress("analyse", 0.0)
        stats = _exr_stats(exr, exposure)
        encoded = np.round(np.clip(exr.colour, 0.0, 1.0) * 255.0).astype(np.uint8)
        stats["normal_map"] = normal_map_verdict(Image.fromarray(encoded))
    else:
        with open_image(source, max_pixels, [fmt], what="texture") as image:
            progress("open", 1.0)
            progress("analyse", 0.0)
            stats = _stats(image, fmt, source)
            if image.tell():
                image.seek(0)
            display = to_display(image)
        stats["normal_map"] = normal_map_verdict(display)
    progress("analyse", 1.0)
    progress("thumbnail", 0.0)
    artifacts_dir = Path(payload["artifacts_dir"])
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    target = artifacts_dir / THUMBNAIL_NAME
    thumbnail = display.copy()
    thumbnail.thumbnail(THUMBNAIL_SIZE)
    thumbnail.save(target, format="PNG", optimize=True)
    progress("thumbnail", 1.0)
    artifact: Artifact = {"name": THUMBNAIL_NAME, "media_type": "image/png",
                          "size": target.stat().st_size}
    mips, mip_artifacts = write_mips(display, artifacts_dir, progress, mip_top_size)
    stats["mips"] = mips
    return {"stats": stats, "artifacts": [artifact, *mip_artifacts]}


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
        "icc": _icc(image.info.get("icc_profile")),
    }


def _exr_stats(exr: ExrImage, exposure: float) -> dict[str, Any]:
    kinds = {kind for _, kind in exr.channels}
    alpha = exr.alpha
    return {
        "format": "exr",
        "width": exr.width,
        "height": exr.height,
        "mode": "RGB" if alpha is None else "RGBA",
        "bands": len(exr.channels),
        "bit_depth": 16 if kinds == {"half"} else 32,
        "pixel_type": kinds.pop() if len(kinds) == 1 else "mixed",
        "channels": [{"name": name, "type": kind} for name, kind in exr.channels],
        "has_alpha": alpha is not None,
        "alpha_used": alpha is not None and bool((alpha < 1.0 - 0.5 / 255.0).any()),
        "power_of_two": _power_of_two(exr.width) and _power_of_two(exr.height),
        "frames": 1,
        "parts": exr.parts,
        "exposure": round(exposure, 3),
        "icc": None,
    }


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _bit_depth(image: Image.Image, fmt: str, source: Path) -> int:
    """Bits per sample as stored (Pillow reads 16-bit colour PNG and TIFF into 8-bit modes);
    for BMP, bits per pixel as stored (1, 4, 8, 16, 24 or 32), as BMP tools report it."""
    if fmt == "png":
        with source.open("rb") as file:
            ihdr = file.read(25)
        return ihdr[24]  # the IHDR chunk always comes first; byte 24 is its bit depth
    if fmt == "bmp":  # bits per pixel as stored: Pillow reads 4-bit as 8, 16-bit as 24
        with source.open("rb") as file:
            header = file.read(30)
        size = int.from_bytes(header[14:18], "little")
        at = 24 if size == 12 else 28  # OS/2's BITMAPCOREHEADER, else BITMAPINFOHEADER and up
        return int.from_bytes(header[at:at + 2], "little")
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


def _icc(data: object) -> dict[str, str] | None:
    """The embedded ICC profile's description and colour space; a broken one is reported."""
    if not isinstance(data, bytes) or not data:
        return None
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
        description = ImageCms.getProfileDescription(profile).strip()
        colour_space = str(profile.profile.xcolor_space).strip()
    except Exception:  # littlecms refuses damaged profiles in several ways
        return {"error": "unreadable profile"}
    return {"description": safe_label(description), "color_space": safe_label(colour_space)}
