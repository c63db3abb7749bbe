"""Vectorised rasterisation: the nearest triangle at each pixel, and per-pixel interpolation."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# Faces set up per pass and candidate fragments tested per pass: together they bound peak memory
CHUNK_FACES = 200_000
CHUNK_FRAGMENTS = 1_000_000
# Triangles whose screen box is wider or taller than this are cut into tiles of this size
TILE = 32

_DEPTH_LEVELS = float(1 << 24)  # depth resolution; a float32 interpolant holds 24 bits exactly
_EMPTY = np.iinfo(np.int64).max

Jobs = dict[str, NDArray[Any]]
# pixel centres on a shared edge belong to both triangles: no cracks
_INSIDE_SLACK = np.float32(1e-5)
_CLASSES = TILE.bit_length()  # size classes 1, 2, 4, ... TILE per axis
# pixel extent -> its size class, the power of two that holds it (small ints: a radix sort)
_CLASS_OF = np.ceil(np.log2(np.arange(TILE + 1).clip(1))).astype(np.int16)


def rasterize(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    depth: NDArray[np.float64],
    faces: NDArray[np.int64],
    size: int,
    chunk_fragments: int = CHUNK_FRAGMENTS,
) -> NDArray[np.int64]:
    """The index of the nearest face covering each pixel centre (-1 where none), shape (size, size).

    `x`, `y` are per-vertex pixel coordinates (x right, y down, pixel i spans [i, i+1));
    `depth` is per vertex in [0, 1], smaller is nearer. Both windings are drawn; faces that are
    degenerate, non-finite or cover no pixel centre are skipped. Ties go to the lower face index.
    """
    zbuffer = np.full(size * size, _EMPTY, dtype=np.int64)
    if not np.isfinite(depth).all():
        x = np.where(np.isfinite(depth), x, np.nan)
    for first in range(0, len(faces), CHUNK_FACES):
        jobs = _jobs(x, y, depth, faces[first:first + CHUNK_FACES], first, size)
        if jobs is None:
            continue
        order = np.argsort(jobs["class"], kind="stable")
        bounds = np.searchsorted(jobs["class"][order], np.arange(_CLASSES * _CLASSES + 1))
        for cls in range(_CLASSES * _CLASSES):
            chosen = order[bounds[cls]:bounds[cls + 1]]
            if len(chosen):
                part = {name: values[chosen] for name, values in jobs.items()}
                _scan(part, 1 << (cls // _CLASSES), 1 << (cls % _CLASSES), size, zbuffer,
                      chunk_fragments)
        del jobs
    empty = zbuffer == _EMPTY
    zbuffer &= 0xFFFFFFFF
    zbuffer[empty] = -1
    return zbuffer.reshape(size, size)


def barycentric_planes(
    x: NDArray[np.float64], y: NDArray[np.float64], corners: NDArray[np.int64]
) -> NDArray[np.float64]:
    """(u, 6) planes of the weights of corners 1 and 2 over the pixel grid, for `barycentric`."""
    x0, x1, x2 = (x[corners[:, i]] for i in range(3))
    y0, y1, y2 = (y[corners[:, i]] for i in range(3))
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    area[area == 0] = 1.0
    b1x, b1y = (y2 - y0) / area, -(x2 - x0) / area
    b2x, b2y = -(y1 - y0) / area, (x1 - x0) / area
    b1c, b2c = -(x0 * b1x + y0 * b1y), -(x0 * b2x + y0 * b2y)
    return np.stack([b1x, b1y, b1c, b2x, b2y, b2c], axis=1)


def barycentric(
    planes: NDArray[np.float64], which: NDArray[np.int64], pixels: NDArray[np.int64], size: int
) -> NDArray[np.float32]:
    """Barycentric weights (k, 3) at the centres of flat `pixels`, each in face planes[which]."""
    plane = planes.take(which, axis=0)
    px = (pixels % size) + 0.5
    py = (pixels // size) + 0.5
    weights = np.empty((len(pixels), 3), dtype=np.float32)
    weights[:, 1] = plane[:, 0] * px + plane[:, 1] * py + plane[:, 2]
    weights[:, 2] = plane[:, 3] * px + plane[:, 4] * py + plane[:, 5]
    weights[:, 0] = 1 - weights[:, 1] - weights[:, 2]
    # the inside test allows a little slack: clamp back onto the triangle
    np.clip(weights, 0.0, 1.0, out=weights)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-12))
    return weights


def interpolate(
    corners: list[NDArray[Any]], which: NDArray[np.int64], weights: NDArray[np.float32]
) -> NDArray[Any]:
    """(k, c) values at pixels from three (u, c) tables of values at their faces' corners."""
    mixed = corners[0].take(which, axis=0)
    mixed *= weights[:, :1]
    for corner in (1, 2):
        mixed += corners[corner].take(which, axis=0) * weights[:, corner:corner + 1]
    return mixed


def downsample(image: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Box-filter blocks of (colour, coverage): colour averages over the covered samples."""
    total = sum(image[i::factor, j::factor] for i in range(factor) for j in range(factor))
    out = np.asarray(total, dtype=np.float32)
    coverage = out[..., 3:]
    np.divide(out[..., :3], coverage, out=out[..., :3], where=coverage > 0)
    coverage /= factor * factor
    return out


def _jobs(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    depth: NDArray[np.float64],
    faces: NDArray[np.int64],
    first: int,
    size: int,
) -> Jobs | None:
    """Per triangle (or per tile of a large triangle): its pixel box and its plane equations."""
    x0, x1, x2 = (x[faces[:, i]] for i in range(3))
    y0, y1, y2 = (y[faces[:, i]] for i in range(3))
    with np.errstate(all="ignore"):
        low_x = np.ceil(np.minimum(np.minimum(x0, x1), x2) - 0.5)
        high_x = np.floor(np.maximum(np.maximum(x0, x1), x2) - 0.5)
        low_y = np.ceil(np.minimum(np.minimum(y0, y1), y2) - 0.5)
        high_y = np.floor(np.maximum(np.maximum(y0, y1), y2) - 0.5)
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        # NaN fails every comparison: non-finite faces drop out here
        keep = (
            (low_x <= high_x) & (low_y <= high_y) & (high_x >= 0) & (high_y >= 0)
            & (low_x < size) & (low_y < size) & (np.abs(area) > 1e-12)
        )
    index = np.flatnonzero(keep)
    if not len(index):
        return None
    area, x0, x1, x2, y0, y1, y2 = (a[index] for a in (area, x0, x1, x2, y0, y1, y2))
    left = np.clip(low_x[index], 0, size - 1).astype(np.int64)
    top = np.clip(low_y[index], 0, size - 1).astype(np.int64)
    width = np.clip(high_x[index], 0, size - 1).astype(np.int64) - left + 1
    height = np.clip(high_y[index], 0, size - 1).astype(np.int64) - top + 1
    z0, z1, z2 = (depth[faces[index, i]] * _DEPTH_LEVELS for i in range(3))
    # barycentric weights of corners 1 and 2, and depth, as planes over the pixel grid
    b1x, b1y = (y2 - y0) / area, -(x2 - x0) / area
    b2x, b2y = -(y1 - y0) / area, (x1 - x0) / area
    zx = b1x * (z1 - z0) + b2x * (z2 - z0)
    zy = b1y * (z1 - z0) + b2y * (z2 - z0)
    index += first
    if width.max() > TILE or height.max() > TILE:
        job, left, top, width, height = _tiles(left, top, width, height)
        index, x0, y0, z0 = index[job], x0[job], y0[job], z0[job]
        b1x, b1y, b2x, b2y, zx, zy = (a[job] for a in (b1x, b1y, b2x, b2y, zx, zy))
    cx = left + 0.5 - x0
    cy = top + 0.5 - y0
    f32 = np.float32
    return {
        "class": _CLASS_OF[width] * _CLASSES + _CLASS_OF[height], "face": index,
        "pixel": top * size + left, "width": width, "height": height,
        "b1": (b1x * cx + b1y * cy).astype(f32), "b1x": b1x.astype(f32), "b1y": b1y.astype(f32),
        "b2": (b2x * cx + b2y * cy).astype(f32), "b2x": b2x.astype(f32), "b2y": b2y.astype(f32),
        "z": (z0 + zx * cx + zy * cy).astype(f32), "zx": zx.astype(f32), "zy": zy.astype(f32),
    }


def _tiles(
    left: NDArray[np.int64], top: NDArray[np.int64], width: NDArray[np.int64],
    height: NDArray[np.int64],
) -> tuple[NDArray[np.int64], ...]:
    """Cut boxes into TILE x TILE tiles: (box of each tile, left, top, width, height)."""
    across = (width + TILE - 1) // TILE
    count = across * ((height + TILE - 1) // TILE)
    job = np.repeat(np.arange(len(left)), count)
    rank = np.arange(len(job)) - np.repeat(np.cumsum(count) - count, count)
    column, row = rank % across[job], rank // across[job]
    return (
        job, left[job] + column * TILE, top[job] + row * TILE,
        np.minimum(width[job] - column * TILE, TILE), np.minimum(height[job] - row * TILE, TILE),
    )


def _scan(
    jobs: Jobs,
    width: int,
    height: int,
    size: int,
    zbuffer: NDArray[np.int64],
    chunk_fragments: int,
) -> None:
    """Test a width x height block of pixel centres per job; keep the nearest fragment per pixel."""
    cells = width * height
    shift = cells.bit_length() - 1
    dx = np.tile(np.arange(width), height)
    dy = np.repeat(np.arange(height), width)
    fx, fy = dx.astype(np.float32), dy.astype(np.float32)
    offset = dy * size + dx
    per_chunk = max(1, chunk_fragments // cells)
    for first in range(0, len(jobs["face"]), per_chunk):
        part = {name: values[first:first + per_chunk] for name, values in jobs.items()}
        b1 = _plane(part, "b1", fx, fy)
        b2 = _plane(part, "b2", fx, fy)
        inside = b1 >= -_INSIDE_SLACK
        inside &= b2 >= -_INSIDE_SLACK
        b1 += b2
        inside &= b1 <= 1 + _INSIDE_SLACK
        del b1, b2
        if width > 1:
            inside &= dx < part["width"][:, None]
        if height > 1:
            inside &= dy < part["height"][:, None]
        hits = np.flatnonzero(inside)
        if not len(hits):
            continue
        job, cell = hits >> shift, hits & (cells - 1)
        z = part["z"][job] + part["zx"][job] * fx[cell] + part["zy"][job] * fy[cell]
        np.clip(z, 0, _DEPTH_LEVELS, out=z)
        key = (z.astype(np.int64) << 32) | part["face"][job].astype(np.int64)
        pixel = part["pixel"][job].astype(np.int64) + offset[cell]
        np.minimum.at(zbuffer, pixel, key)


def _plane(
    part: Jobs, name: str, fx: NDArray[np.float32],
    fy: NDArray[np.float32],
) -> NDArray[np.float32]:
    value: NDArray[np.float32] = part[name + "x"][:, None] * fx
    value += part[name + "y"][:, None] * fy
    value += part[name][:, None]
    return value

