"""Simplification by vertex clustering: every vertex in one cell of a grid becomes the cell's
mean, and faces that collapse go. Cruder than quadric simplification, but it reduces anything:
open edges, edges shared by more than two faces and loose parts included, which quadric
collapses must leave alone."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

MAX_CELLS = 4096
"""Cells along the model's largest side at most (the finest grid tried)."""
SEARCH_STEPS = 13
"""Grids tried, halving the range each time (2**13 > MAX_CELLS)."""


def clustered(points: NDArray[np.float32], triangles: NDArray[np.int32], target_faces: int
              ) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """The finest clustering with at most `target_faces` faces and at least one (the coarsest
    tried when none has so few; the mesh itself when every clustering leaves nothing): points
    and faces, unused points dropped."""
    low = points.min(axis=0)
    extent = float((points.max(axis=0) - low).max())
    if extent <= 0.0 or not np.isfinite(extent):
        return points, triangles
    best = None
    fewest, most = 1, MAX_CELLS
    for _ in range(SEARCH_STEPS):
        if fewest > most:
            break
        cells = (fewest + most) // 2
        found = _cluster(points, triangles, low, extent / cells, cells)
        if len(found[1]) <= target_faces:
            if len(found[1]):
                best = found
            fewest = cells + 1
        else:
            most = cells - 1
    if best is None:
        coarsest = _cluster(points, triangles, low, extent, 1)
        best = coarsest if len(coarsest[1]) else (points, triangles)
    return best


def _cluster(points: NDArray[np.float32], triangles: NDArray[np.int32], low: NDArray[np.float32],
             size: float, cells: int) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    index = np.minimum(((points - low) / size).astype(np.int64), cells)  # the far side: last cell
    side = cells + 1
    keys = (index[:, 0] * side + index[:, 1]) * side + index[:, 2]
    _, cluster = np.unique(keys, return_inverse=True)
    cluster = cluster.reshape(-1)
    count = int(cluster.max()) + 1
    weight = np.bincount(cluster, minlength=count).astype(np.float64)
    means = np.stack([np.bincount(cluster, points[:, axis], count) / weight
                      for axis in range(3)], axis=1).astype(np.float32)
    faces = cluster[triangles]
    kept = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (
        faces[:, 0] != faces[:, 2])
    faces = faces[kept]
    # one face per set of three cells (two faces folded onto each other are one)
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    used, compact = np.unique(faces, return_inverse=True)
    return means[used], compact.reshape(-1, 3).astype(np.int32)
