"""What every view of a model needs, computed once: the parts joined, centred and given normals.

Shared by both ways of drawing (`tasks.draw_gl`, `tasks.draw_numpy`): the camera (`rotation`),
the framing (`view_frame`, `turntable_frame`) and the lighting constants live here, so both draw
the same picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

AnyType = TypeVar("AnyType", bound=np.generic)

MARGIN = 0.05  # of the image size, on every side
AMBIENT = 0.3
DIFFUSE = 0.7
# the light sits near the camera, a little up and to the left (view space: x right, y up, z to us)
LIGHT = (-0.3, 0.4, 1.0)
# a corner uses its vertex's smooth normal only within this angle of its face's normal
SMOOTH_ANGLE = 40.0
NORMAL_CHUNK = 200_000  # faces per pass when summing vertex normals: bounds memory

Frame = tuple[float, float, float]
"""(centre x, centre y, half side) in view space of the square a view shows."""

SHADE_CHUNK = 262_144  # pixels shaded per pass: bounds memory


@dataclass(frozen=True)
class Surface:
    """One drawable part of a model, already placed in model space (Y up)."""

    vertices: NDArray[np.float64]  # (n, 3)
    faces: NDArray[np.int64]  # (m, 3) triangles, indices into vertices
    # (n, 2) per-vertex texture coordinates (glTF/OBJ convention: v=0 at the image BOTTOM)
    uv: NDArray[np.float64] | None = None
    texture: NDArray[np.uint8] | None = None  # (h, w, 3|4) base-colour image, row 0 = top
    vertex_colors: NDArray[np.uint8] | None = None  # (n, 3|4)
    color: tuple[int, int, int] = (200, 200, 205)  # flat base colour when nothing else is given


@dataclass(frozen=True)
class Scene:
    """All parts as one mesh, with what every view needs computed once."""

    coords: NDArray[np.float64]  # (3, n): x, y, z rows, relative to the centre
    faces: NDArray[np.int64]
    part_starts: NDArray[np.int64]  # index of each included part's first face
    vertex_normals: NDArray[np.float32]
    colors: NDArray[np.uint8]  # per vertex: its own colour or its part's flat colour
    uv: NDArray[np.float64] | None  # per vertex (zeros where the part has none), if any texture
    textures: dict[int, NDArray[np.uint8]]  # included part -> (h, w, 3)
    used: NDArray[np.int64]  # vertices some drawable face refers to


def view_rotation(yaw: float, pitch: float) -> NDArray[np.float64]:
    """Model space -> view space (x right, y up, z towards the camera)."""
    a, b = math.radians(yaw), math.radians(pitch)
    back = np.array([math.sin(a) * math.cos(b), math.sin(b), math.cos(a) * math.cos(b)])
    right = np.array([math.cos(a), 0.0, -math.sin(a)])
    up = np.cross(back, right)
    return np.stack([right, up, back])


def view_frame(scene: Scene, rotation: NDArray[np.float64]) -> Frame:
    """(centre x, centre y, half side) of the square that holds the model in this view."""
    x, y = (project(scene.coords[:, scene.used], rotation, axis) for axis in (0, 1))
    low_x, high_x, low_y, high_y = x.min(), x.max(), y.min(), y.max()
    return _checked((low_x + high_x) / 2, (low_y + high_y) / 2,
                    max(high_x - low_x, high_y - low_y) / 2)


def turntable_frame(
    scene: Scene, rotations: Sequence[NDArray[np.float64]]
) -> Frame:
    """One frame for every view: centred on the model's bounding-box centre, the widest extent."""
    used = scene.coords[:, scene.used]
    extent = max(float(np.abs(project(used, r, axis)).max())
                 for r in rotations for axis in (0, 1))
    return _checked(0.0, 0.0, extent)


def _checked(x: float, y: float, extent: float) -> Frame:
    if not all(math.isfinite(v) for v in (x, y, extent)):
        return 0.0, 0.0, 1.0  # coordinates too large to frame: nothing sensible will show
    return float(x), float(y), float(extent) if extent > 0 else 1.0


def prepare(parts: Sequence[Surface], max_faces: int | None) -> Scene | None:
    """Concatenate the parts, dropping unusable faces; None when nothing is left to draw."""
    total = sum(np.asarray(part.faces).size // 3 for part in parts)
    if max_faces is not None and total > max_faces:
        raise ValueError(f"{total} faces exceed the limit of {max_faces}: simplify first")
    vertices: list[NDArray[np.float64]] = []
    faces: list[NDArray[np.int64]] = []
    colors: list[NDArray[np.uint8]] = []
    uvs: list[NDArray[np.float64]] = []
    starts = [0]
    textures: dict[int, NDArray[np.uint8]] = {}
    offset = 0
    for part in parts:
        points = np.asarray(part.vertices, dtype=np.float64).reshape(-1, 3)
        triangles = _usable_faces(part.faces, points)
        if not len(triangles):
            continue
        texture = _texture(part.texture)
        uv = None if part.uv is None else np.asarray(part.uv, dtype=np.float64)
        if uv is not None and uv.shape == (len(points), 2) and texture is not None:
            textures[len(faces)] = texture
            uvs.append(np.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0))
        else:
            uvs.append(np.zeros((len(points), 2)))
        vertices.append(points)
        faces.append(triangles + offset if offset else triangles)
        colors.append(_vertex_colors(part, len(points)))
        starts.append(starts[-1] + len(triangles))
        offset += len(points)
    if not faces:
        return None
    all_vertices, all_faces = _joined(vertices), _joined(faces)
    used = np.zeros(len(all_vertices), dtype=bool)
    used[all_faces.reshape(-1)] = True
    used_indices = np.flatnonzero(used)
    coords = np.array(all_vertices.T, order="C")  # a copy: centred in place below
    del vertices, all_vertices
    for axis in coords:
        axis -= (axis[used_indices].min() + axis[used_indices].max()) / 2
    return Scene(
        coords=coords, faces=all_faces, part_starts=np.asarray(starts[:-1]),
        vertex_normals=_vertex_normals(coords, all_faces), colors=_joined(colors),
        uv=_joined(uvs) if textures else None, textures=textures, used=used_indices,
    )


def _joined(arrays: list[NDArray[AnyType]]) -> NDArray[AnyType]:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _usable_faces(faces: NDArray[np.int64], points: NDArray[np.float64]) -> NDArray[np.int64]:
    """Faces whose three corners exist and are finite."""
    triangles = np.asarray(faces).reshape(-1, 3).astype(np.int64, copy=False)
    if not len(triangles):
        return triangles
    if triangles.min() < 0 or triangles.max() >= len(points):
        triangles = triangles[((triangles >= 0) & (triangles < len(points))).all(axis=1)]
    finite: NDArray[np.bool_] = np.logical_and.reduce(np.isfinite(points), axis=1)
    if not finite.all():
        triangles = triangles[finite[triangles].all(axis=1)]
    return triangles


def _vertex_colors(part: Surface, count: int) -> NDArray[np.uint8]:
    colors = None if part.vertex_colors is None else np.asarray(part.vertex_colors)
    if colors is not None and colors.ndim == 2 and len(colors) == count and colors.shape[1] >= 3:
        return np.clip(np.nan_to_num(colors[:, :3]), 0, 255).astype(np.uint8)
    flat = np.clip(np.asarray(part.color[:3], dtype=np.float64), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(flat, (count, 3)))


def _texture(texture: NDArray[np.uint8] | None) -> NDArray[np.uint8] | None:
    """The image as (h, w, 3) uint8, or None when it cannot be one."""
    if texture is None:
        return None
    image = np.asarray(texture)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        return None
    image = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if image.dtype != np.uint8:
        image = np.clip(np.nan_to_num(image.astype(np.float64)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def _vertex_normals(coords: NDArray[np.float64], faces: NDArray[np.int64]) -> NDArray[np.float32]:
    """Area-weighted unit vertex normals (zero where undefined), summed a block of faces a time."""
    count = coords.shape[1]
    summed = np.zeros((count, 3))
    for first in range(0, len(faces), NORMAL_CHUNK):
        block = faces[first:first + NORMAL_CHUNK]
        cross = face_cross(coords, block)
        corners = block.reshape(-1)
        for axis in range(3):
            summed[:, axis] += np.bincount(corners, np.repeat(cross[:, axis], 3), count)
    return unit(summed)


def corner_normals(scene: Scene, corners: NDArray[np.int64]) -> NDArray[np.float32]:
    """(u, 3, 3) shading normals at the corners of faces `corners` (u, 3): a corner keeps its
    vertex's smooth normal, turned like its face, within SMOOTH_ANGLE of the face's normal, and
    takes the face's own where the edge is a crease."""
    flat = unit(face_cross(scene.coords, corners))
    normals = scene.vertex_normals[corners]
    agree = np.einsum("kcj,kj->kc", normals, flat)
    smooth = np.abs(agree) >= math.cos(math.radians(SMOOTH_ANGLE))
    # a flipped neighbour's normal points the other way: orient every corner like its face
    normals *= np.sign(agree)[:, :, None]
    return np.where(smooth[:, :, None], normals, flat[:, None, :])


def face_cross(coords: NDArray[np.float64], faces: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each face's edge cross product: its normal scaled by twice its area."""
    a, b, c = (faces[:, i] for i in range(3))
    (ux, uy, uz), (vx, vy, vz) = ((axis[b] - axis[a] for axis in coords),
                                  (axis[c] - axis[a] for axis in coords))
    return np.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], axis=1)


def unit(vectors: NDArray[np.float64]) -> NDArray[np.float32]:
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float64] = np.divide(vectors, length, out=np.zeros_like(vectors),
                                          where=length > 0)
    return np.nan_to_num(unit).astype(np.float32)


def project(
    coords: NDArray[np.float64], rotation: NDArray[np.float64], axis: int
) -> NDArray[np.float64]:
    """One view-space coordinate of every vertex."""
    r = rotation[axis]
    projected: NDArray[np.float64] = r[0] * coords[0] + r[1] * coords[1] + r[2] * coords[2]
    return projected
