"""A texture's power-of-two mip chain, written as lossless WebP artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from PIL import Image

from tasks.progress import Artifact, Progress

MEDIA_TYPE = "image/webp"
# lossless WebP effort (method 0..6, quality 0..100): Pillow's 4/80 took 7 s on a noisy 2048²
# level; 1/25 takes 0.3 s and its files were within 5 % of the default's on a photo
WEBP_OPTIONS: dict[str, Any] = {"lossless": True, "method": 1, "quality": 25, "exact": True}


class Mip(TypedDict):
    """One level of the chain: level 0 is the largest."""

    level: int
    width: int
    height: int
    name: str


def mip_sizes(width: int, height: int, top_size: int) -> list[tuple[int, int]]:
    """Level sizes: each side rounded down to a power of two, the largest side capped at
    `top_size` (both halved together, so the aspect is kept), then halved down to 1 × 1."""
    if width < 1 or height < 1 or top_size < 1:
        return []
    size = (_floor_power_of_two(width), _floor_power_of_two(height))
    cap = _floor_power_of_two(top_size)
    while max(size) > cap:
        size = (max(size[0] // 2, 1), max(size[1] // 2, 1))
    sizes = [size]
    while size != (1, 1):
        size = (max(size[0] // 2, 1), max(size[1] // 2, 1))
        sizes.append(size)
    return sizes


def mip_name(level: int, width: int, height: int) -> str:
    return f"mip-{level}-{width}x{height}.webp"


def write_mips(
    image: Image.Image,
    artifacts_dir: Path,
    progress: Progress,
    top_size: int,
) -> tuple[list[Mip], list[Artifact]]:
    """Write the chain of an 8-bit RGB or RGBA image; return the levels and their artifacts."""
    progress("mips", 0.0)
    sizes = mip_sizes(image.width, image.height, top_size)
    mips: list[Mip] = []
    artifacts: list[Artifact] = []
    level_image = image
    for level, (width, height) in enumerate(sizes):
        # level 0 from the source with a sharp filter; each next level is the 2 × 2 box average
        # of the previous one, as GPUs build mips (RGBA is resized premultiplied by Pillow)
        resample = Image.Resampling.LANCZOS if level == 0 else Image.Resampling.BOX
        if level_image.size != (width, height):
            level_image = level_image.resize((width, height), resample)
        name = mip_name(level, width, height)
        target = artifacts_dir / name
        level_image.save(target, format="WEBP", **WEBP_OPTIONS)
        mips.append({"level": level, "width": width, "height": height, "name": name})
        artifacts.append({"name": name, "media_type": MEDIA_TYPE, "size": target.stat().st_size})
        progress("mips", (level + 1) / len(sizes))
    progress("mips", 1.0)
    return mips, artifacts


def _floor_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)
