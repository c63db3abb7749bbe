"""Welding by position, and the surface facts of a welded triangle mesh in one pass over its
faces and one sort of its edges: area, watertightness, winding, enclosed volume, bodies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

WELD_DECIMALS = 8
"""Positions equal to this many decimals are one vertex (trimesh's own merge tolerance)."""
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def weld(vertices: NDArray[np.float64], faces: NDArray[np.int64]
         ) -> tuple[NDArray[np.float64], NDArray[np.int64]] | None:
    """One vertex per distinct position among those the faces use, and the faces renumbered;
    None in the (astronomically rare) case of a hash collision, for the caller's slower path."""
    rounded = np.round(vertices, WELD_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    bits = np.ascontiguousarray(rounded).view(np.uint64)
    hashed = _hashed(bits)
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    if not np.array_equal(rounded[first][inverse], rounded, equal_nan=True):
        return None
    # number the welded vertices in the order they first appear, as the file had them: the
    # edge sort and every gather below run several times faster on that locality
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    renumbered = rank[inverse.reshape(-1)][faces]
    used = np.zeros(len(order), dtype=bool)
    used[renumbered] = True  # positions only unreferenced vertices had are dropped
    compact = np.cumsum(used) - 1
    return vertices[first[order][used]], compact[renumbered]


def _hashed(bits: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """A 64-bit hash of each row of three: every bit of each word reaches every bit of the hash.

    (Multiplying alone would not: flipping two signs, as +x+y against -x-y, changes only the
    top bit of two products, and they cancel; a box centred on the origin collided everywhere.)
    """
    hashed = np.zeros(len(bits), dtype=np.uint64)
    for axis, mix in enumerate(_MIX):
        hashed ^= bits[:, axis]
        hashed *= mix
        hashed ^= hashed >> np.uint64(31)
    return hashed


@dataclass(frozen=True)
class SurfaceFacts:
    area: float
    watertight: bool  # every edge is shared by exactly two faces
    winding_consistent: bool  # ... and the two faces run along it in opposite directions
    volume: float | None  # only for a closed surface, where it means something
    bodies: int  # connected groups of vertices (as trimesh's body_count counts them)


def surface_facts(vertices: NDArray[np.float64], faces: NDArray[np.int64]) -> SurfaceFacts:
    """The facts of the mesh (vertices already welded: topology is about shared indices)."""
    a = vertices[faces[:, 0]]
    normals = np.cross(vertices[faces[:, 1]] - a, vertices[faces[:, 2]] - a)
    area = 0.5 * float(np.sqrt(np.einsum("ij,ij->i", normals, normals)).sum())
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    watertight, winding = _closed(edges, len(vertices))
    volume = None
    if watertight and winding:
        # divergence theorem: a·((b−a)×(c−a)) = a·(b×c), so the area's cross products serve
        volume = abs(float(np.einsum("ij,ij->", a, normals))) / 6.0
    bodies, _ = _bodies(edges, len(vertices))
    return SurfaceFacts(area, watertight, winding, volume, bodies)


def facing(vertices: NDArray[np.float64], faces: NDArray[np.int64]) -> int:
    """1 when the faces close every body with their fronts (counter-clockwise) outwards, -1 when
    every body is closed inside out, 0 otherwise (open, inconsistently wound, or mixed).

    Seen from outside, a closed body's faces that turn away from the viewer are always behind
    its others: with 1 (or -1), a drawing may skip them (or the others) unseen.
    """
    welded = weld(vertices, faces)
    if welded is None or not len(welded[1]):
        return 0
    points, triangles = welded
    edges = triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    if _closed(edges, len(points)) != (True, True):
        return 0
    count, labels = _bodies(edges, len(points))
    a, b, c = (points[triangles[:, i]] for i in range(3))
    signed = np.einsum("ij,ij->i", a, np.cross(b, c))  # six times each face's signed volume
    volumes = np.bincount(labels[triangles[:, 0]], signed, count)  # welded: no bare vertex
    if (volumes > 0).all():
        return 1
    if (volumes < 0).all():
        return -1
    return 0


def _closed(edges: NDArray[np.int64], vertex_count: int) -> tuple[bool, bool]:
    low = np.minimum(edges[:, 0], edges[:, 1])
    high = np.maximum(edges[:, 0], edges[:, 1])
    key = low * np.int64(vertex_count) + high
    order = np.argsort(key)
    ordered = key[order]
    if len(ordered) % 2:
        return False, False
    pairs = ordered[0::2] == ordered[1::2]
    distinct = ordered[2::2] != ordered[1:-1:2]  # no edge shared by more than two faces
    if not (pairs.all() and distinct.all()):
        return False, False
    first, second = edges[order[0::2]], edges[order[1::2]]
    return True, bool((first[:, 0] == second[:, 1]).all())


def _bodies(edges: NDArray[np.int64], vertex_count: int) -> tuple[int, NDArray[np.int32]]:
    """How many connected groups of vertices there are, and each vertex's group."""
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(vertex_count, vertex_count))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels
