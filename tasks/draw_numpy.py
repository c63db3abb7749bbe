"""Views drawn with numpy alone: the fallback where OpenGL is not available, and the reference.

A vectorised rasteriser (`tasks.raster`) finds the nearest face at each pixel centre; shading is
set up per visible face and interpolated per pixel, a block of pixels at a time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tasks.raster import barycentric, barycentric_planes, downsample, interpolate, rasterize
from tasks.scene import (
    AMBIENT,
    DIFFUSE,
    LIGHT,
    MARGIN,
    Frame,
    Scene,
    corner_normals,
    project,
)

SHADE_CHUNK = 262_144  # pixels shaded per pass: bounds memory

def draw(
    scene: Scene, rotation: NDArray[np.float64], frame: Frame, size: int, factor: int
) -> NDArray[np.uint8]:
    """One view as (size, size, 4) RGBA, drawn `factor` times as large and averaged down."""
    big = size * factor
    centre_x, centre_y, extent = frame
    scale = big * (0.5 - MARGIN) / extent
    x = big / 2 + (project(scene.coords, rotation, 0) - centre_x) * scale
    y = big / 2 - (project(scene.coords, rotation, 1) - centre_y) * scale
    depth = project(scene.coords, rotation, 2)
    depth_range = max(float(np.abs(depth[scene.used]).max()), 1e-12)
    depth = (depth_range - depth) / (2 * depth_range)
    nearest = rasterize(x, y, depth, scene.faces, big).reshape(-1)
    pixels = np.flatnonzero(nearest >= 0)
    # shading is set up per visible face, then interpolated per pixel, a block at a time
    seen, which = _visible(nearest[pixels], len(scene.faces))
    del nearest
    visible = _VisibleFaces(scene, seen, x, y, rotation)
    if factor == 1:
        image = np.zeros((size * size, 4), dtype=np.uint8)
        image[pixels, 3] = 255
        for block in _blocks(len(pixels)):
            rgb = visible.shade(which[block], pixels[block], big)
            image[pixels[block], :3] = np.clip(np.rint(rgb), 0, 255)
        return image.reshape(size, size, 4)
    samples = np.zeros((big * big, 4), dtype=np.float32)
    samples[pixels, 3] = 1.0
    for block in _blocks(len(pixels)):
        samples[pixels[block], :3] = visible.shade(which[block], pixels[block], big)
    averaged = downsample(samples.reshape(big, big, 4), factor)
    averaged[..., 3] *= 255.0
    return np.clip(np.rint(averaged), 0, 255).astype(np.uint8)


def _blocks(count: int) -> list[slice]:
    return [slice(first, first + SHADE_CHUNK) for first in range(0, count, SHADE_CHUNK)]


class _VisibleFaces:
    """What shading needs of the faces seen in one view, laid out for per-pixel lookups."""

    def __init__(
        self, scene: Scene, seen: NDArray[np.int64], x: NDArray[np.float64],
        y: NDArray[np.float64], rotation: NDArray[np.float64],
    ) -> None:
        corners = scene.faces[seen]
        self.planes = barycentric_planes(x, y, corners)
        table = np.concatenate([corner_normals(scene, corners), scene.colors[corners]], axis=2)
        self.corners = [np.ascontiguousarray(table[:, corner]) for corner in range(3)]
        self.light = (rotation.T @ (np.asarray(LIGHT) / np.linalg.norm(LIGHT))).astype(np.float32)
        self.textures = scene.textures
        self.part = np.searchsorted(scene.part_starts, seen, side="right") - 1
        self.uv = [] if scene.uv is None else [scene.uv[corners[:, i]] for i in range(3)]

    def shade(
        self, which: NDArray[np.int64], pixels: NDArray[np.int64], size: int
    ) -> NDArray[np.float32]:
        """Lit colour (k, 3) of flat `pixels` lying on visible faces `which`."""
        weights = barycentric(self.planes, which, pixels, size)
        mixed = interpolate(self.corners, which, weights)
        rgb = mixed[:, 3:]
        if self.uv:
            part = self.part.take(which)
            for index, texture in self.textures.items():
                chosen = np.flatnonzero(part == index)
                if len(chosen):
                    uv = interpolate(self.uv, which[chosen], weights[chosen])
                    rgb[chosen] = _sample(texture, uv)
        rgb *= _lambert(mixed[:, :3], self.light)[:, None]
        return rgb


def _visible(face: NDArray[np.int64], count: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The distinct faces in `face` and where each entry is among them: np.unique, unsorted."""
    shown = np.zeros(count, dtype=bool)
    shown[face] = True
    seen = np.flatnonzero(shown)
    position = np.empty(count, dtype=np.int64)
    position[seen] = np.arange(len(seen))
    return seen, position[face]


def _lambert(normal: NDArray[np.float32], light: NDArray[np.float32]) -> NDArray[np.float32]:
    """Ambient plus two-sided Lambert from the light near the camera, per pixel."""
    x, y, z = normal[:, 0], normal[:, 1], normal[:, 2]
    length = np.sqrt(x * x + y * y + z * z)
    lambert: NDArray[np.float32] = np.abs(x * light[0] + y * light[1] + z * light[2])
    lambert /= np.maximum(length, np.float32(1e-12))
    return np.float32(AMBIENT) + np.float32(DIFFUSE) * np.nan_to_num(lambert)


def _sample(texture: NDArray[np.uint8], uv: NDArray[np.float64]) -> NDArray[np.float32]:
    """Bilinear lookup with repeat addressing; v=0 is the image's bottom row."""
    height, width = texture.shape[:2]
    u = np.mod(uv[:, 0], 1.0) * width - 0.5
    v = (1.0 - np.mod(uv[:, 1], 1.0)) * height - 0.5
    left, top = np.floor(u), np.floor(v)
    fu = (u - left).astype(np.float32)[:, None]
    fv = (v - top).astype(np.float32)[:, None]
    x0 = left.astype(np.int64) % width
    y0 = top.astype(np.int64) % height
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    upper = texture[y0, x0] * (1 - fu) + texture[y0, x1] * fu
    lower = texture[y1, x0] * (1 - fu) + texture[y1, x1] * fu
    return np.asarray(upper * (1 - fv) + lower * fv, dtype=np.float32)
