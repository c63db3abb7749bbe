"""Image comparison for tests: the structural similarity (SSIM) of two pictures."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy.ndimage import gaussian_filter


def ssim(first: Image.Image | NDArray[np.uint8], second: Image.Image | NDArray[np.uint8]) -> float:
    """Mean SSIM over the channels (Wang et al. 2004: Gaussian window, sigma 1.5, 8-bit range)."""
    a, b = (np.asarray(image, dtype=np.float64) for image in (first, second))
    assert a.shape == b.shape, f"{a.shape} != {b.shape}"
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for channel in range(a.shape[2]):
        x, y = a[..., channel], b[..., channel]
        mx, my = gaussian_filter(x, 1.5), gaussian_filter(y, 1.5)
        vx = gaussian_filter(x * x, 1.5) - mx * mx
        vy = gaussian_filter(y * y, 1.5) - my * my
        cov = gaussian_filter(x * y, 1.5) - mx * my
        score = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        scores.append(float(score.mean()))
    return float(np.mean(scores))
