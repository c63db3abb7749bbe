"""The normal-map verdict: maps of a known height field in both conventions; other images not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from tasks.normal_map import normal_map_verdict


def bumps(size: int = 256, seed: int = 3) -> NDArray[np.float64]:
    """A height field (rows, columns) of random Gaussian bumps and dents."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64)
    height = np.zeros((size, size))
    for _ in range(12):
        row, column = rng.uniform(0, size, 2)
        spread, amplitude = rng.uniform(8, 30), rng.uniform(-8, 8)
        height += amplitude * np.exp(-((rows - row) ** 2 + (columns - column) ** 2) / spread**2 / 2)
    return height


def encode_normals(height: NDArray[np.float64], convention: str) -> Image.Image:
    """The tangent-space normal map of `height`: green up the image (OpenGL) or down (DirectX)."""
    d_row, d_column = np.gradient(height)
    # rows grow downward, so in OpenGL's y-up frame dh/dy = -dh/drow and ny = -dh/dy = dh/drow
    green = d_row if convention == "opengl" else -d_row
    normals = np.dstack([-d_column, green, np.ones_like(height)])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return Image.fromarray(np.round((normals + 1.0) * 127.5).astype(np.uint8))


def jpeg_round_trip(image: Image.Image, quality: int = 80) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        decoded.load()
        return decoded.copy()


@pytest.mark.parametrize("convention", ["opengl", "directx"])
def test_normal_maps_and_their_convention(convention: str) -> None:
    image = encode_normals(bumps(), convention)
    verdict = normal_map_verdict(image)
    assert verdict["likely"] is True and verdict["convention"] == convention
    assert verdict["confidence"] > 0.9
    # lossy compression keeps the verdict: the curl comparison cancels pixel noise
    assert normal_map_verdict(jpeg_round_trip(image))["convention"] == convention
    # an alpha channel (a packed height, say) changes nothing
    assert normal_map_verdict(image.convert("RGBA"))["convention"] == convention


def test_flipping_green_flips_the_convention() -> None:
    red, green, blue = encode_normals(bumps(seed=11), "opengl").split()
    flipped = Image.merge("RGB", (red, green.point(lambda value: 255 - value), blue))
    assert normal_map_verdict(flipped)["convention"] == "directx"


def test_large_map_is_judged_on_a_reduced_copy() -> None:
    image = encode_normals(bumps(size=1024, seed=5), "directx")
    verdict = normal_map_verdict(image, analysis_size=256)
    assert verdict["likely"] is True and verdict["convention"] == "directx"


def test_flat_normal_map_is_likely_without_a_convention() -> None:
    verdict = normal_map_verdict(Image.new("RGB", (64, 64), (128, 128, 255)))
    assert verdict["likely"] is True and verdict["convention"] is None


@pytest.mark.parametrize(
    "image",
    [
        Image.effect_noise((256, 256), 60).convert("RGB"),
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)),
        Image.new("RGB", (64, 64), (128, 128, 128)),
        Image.new("RGB", (64, 64), (40, 80, 250)),
        Image.linear_gradient("L").convert("RGB"),
    ],
    ids=["grey-noise", "colour-noise", "flat-grey", "sky-blue", "gradient"],
)
def test_other_images_are_not_normal_maps(image: Image.Image) -> None:
    verdict = normal_map_verdict(image)
    assert verdict["likely"] is False and verdict["convention"] is None
    assert verdict["confidence"] < 0.5


def test_photo_like_image_is_not_a_normal_map() -> None:
    """Smooth colour fields with texture, the way a photo of stone is."""
    rng = np.random.default_rng(4)
    base = np.asarray(Image.effect_noise((64, 64), 80).resize((256, 256)), dtype=np.float64)
    colour = np.dstack([base * 0.8 + 30, base * 0.7 + 20, base * 0.5 + 10])
    colour += rng.normal(0, 6, colour.shape)
    image = Image.fromarray(np.clip(colour, 0, 255).astype(np.uint8))
    assert normal_map_verdict(image)["likely"] is False
