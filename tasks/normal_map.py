"""Tell a tangent-space normal map from other images, and its green-channel convention."""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np
from numpy.typing import NDArray
from PIL import Image

Convention = Literal["opengl", "directx"]
Floats = NDArray[np.float64]

ANALYSIS_SIZE = 512
# a decoded normal within this of unit length counts as a normal (8-bit steps, lossy compression)
UNIT_TOLERANCE = 0.12
MIN_UNIT_FRACTION = 0.85
MAX_MEAN_TILT = 0.25  # |mean (nx, ny)|: tangent-space maps average to straight up
MIN_MEAN_Z = 0.7
# (wrong curl - right curl) / their sum must exceed this to name a convention
MIN_CONTRAST = 0.1
MIN_CURL = 1e-6  # below this mean squared curl the map is too flat to tell


class NormalMapVerdict(TypedDict):
    """Whether an image looks like a tangent-space normal map, and which way its green points."""

    likely: bool
    convention: Convention | None
    confidence: float


def normal_map_verdict(image: Image.Image, analysis_size: int = ANALYSIS_SIZE) -> NormalMapVerdict:
    """Judge an 8-bit RGB(A) image (the first three bands are the encoded normal)."""
    rgb = image.convert("RGB")
    if max(rgb.size) > analysis_size:
        rgb = rgb.copy()
        rgb.thumbnail((analysis_size, analysis_size), Image.Resampling.BOX)
    encoded = np.asarray(rgb, dtype=np.float64) / 255.0
    return verdict_from_encoded(encoded)


def verdict_from_encoded(encoded: Floats) -> NormalMapVerdict:
    """Judge colours in 0..1 of shape (rows, columns, 3), decoded as n = 2c - 1."""
    normals = 2.0 * encoded[..., :3] - 1.0
    length = np.linalg.norm(normals, axis=-1)
    upright = (np.abs(length - 1.0) < UNIT_TOLERANCE) & (normals[..., 2] > 0.0)
    unit_fraction = float(upright.mean()) if upright.size else 0.0
    mean = normals.reshape(-1, 3).mean(axis=0) if upright.size else np.zeros(3)
    tilt = float(np.hypot(mean[0], mean[1]))
    likely = unit_fraction >= MIN_UNIT_FRACTION and tilt <= MAX_MEAN_TILT and mean[2] >= MIN_MEAN_Z
    closeness = max(0.0, 1.0 - tilt / MAX_MEAN_TILT) * min(1.0, max(0.0, float(mean[2])))
    confidence = round(unit_fraction * (0.5 + 0.5 * closeness), 3)
    convention = _convention(normals, upright) if likely else None
    return {"likely": bool(likely), "convention": convention, "confidence": confidence}


def _convention(normals: Floats, upright: NDArray[np.bool_]) -> Convention | None:
    """The Y convention under which the normals are the gradient of a height field (curl-free).

    Rows grow downward. With h the height, n ∝ (-dh/dx, -dh/dy, 1) where y points up in
    OpenGL maps (green = up) and down in DirectX maps. So dh/dcolumn = -nx/nz always, and
    dh/drow = +ny/nz for OpenGL, -ny/nz for DirectX.
    """
    rows, columns = normals.shape[:2]
    if rows < 3 or columns < 3:
        return None
    z = np.where(upright, np.maximum(normals[..., 2], 0.05), 1.0)
    along_columns = np.where(upright, -normals[..., 0] / z, 0.0)
    along_rows_gl = np.where(upright, normals[..., 1] / z, 0.0)
    # both derivatives on the same staggered grid (cell corners), so a gradient gives zero curl
    d_columns_d_row = np.diff(along_columns, axis=0)
    d_columns_d_row = 0.5 * (d_columns_d_row[:, 1:] + d_columns_d_row[:, :-1])
    d_rows_d_column = np.diff(along_rows_gl, axis=1)
    d_rows_d_column = 0.5 * (d_rows_d_column[1:, :] + d_rows_d_column[:-1, :])
    valid = upright[1:, 1:] & upright[:-1, 1:] & upright[1:, :-1] & upright[:-1, :-1]
    if not valid.any():
        return None
    # squared curls: their difference is 4·Σ(a·b), in which pixel noise (JPEG, 8-bit steps) cancels
    curl_gl = float(np.square(d_columns_d_row - d_rows_d_column)[valid].sum())
    curl_dx = float(np.square(d_columns_d_row + d_rows_d_column)[valid].sum())
    total = curl_gl + curl_dx
    if total < MIN_CURL * valid.sum():
        return None
    contrast = (curl_dx - curl_gl) / total
    if contrast > MIN_CONTRAST:
        return "opengl"
    if contrast < -MIN_CONTRAST:
        return "directx"
    return None
