"""Headless thumbnails and turntable sprites of a model: orthographic, Lambert-shaded, textured."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tasks.raster import barycentric, barycentric_planes, downsample, interpolate, rasterize

AnyType = TypeVar("AnyType", bound=np.generic)

MAX_SIZE = 4096
MAX_FRAMES = 360
MARGIN = 0.05  # of the image size, on every side
AMBIENT = 0.3
DIFFUSE = 0.7
# the light sits near the camera, a little up and to the left (view space: x right, y up, z to us)
LIGHT = (-0.3, 0.4, 1.0)
# a corner uses its vertex's smooth normal only within this angle of its face's normal
SMOOTH_ANGLE = 40.0
# anti-aliasing: draw this many times larger and average, while the face count is small enough
SUPERSAMPLE = 2
SUPERSAMPLE_MAX_FACES = 500_000
SUPERSAMPLE_MAX_SIZE = 2048  # of the drawn image, before averaging: bounds memory
NORMAL_CHUNK = 200_000  # faces per pass when summing vertex normals: bounds memory
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
class _Scene:
    """All parts as one mesh, with what every view needs computed once."""

    coords: NDArray[np.float64]  # (3, n): x, y, z rows, relative to the centre
    faces: NDArray[np.int64]
    part_starts: NDArray[np.int64]  # index of each included part's first face
    vertex_normals: NDArray[np.float32]
    colors: NDArray[np.uint8]  # per vertex: its own colour or its part's flat colour
    uv: NDArray[np.float64] | None  # per vertex (zeros where the part has none), if any texture
    textures: dict[int, NDArray[np.uint8]]  # included part -> (h, w, 3)
    used: NDArray[np.int64]  # vertices some drawable face refers to


def render_view(
    parts: Sequence[Surface], *, size: int = 512, yaw: float = 35.0, pitch: float = 25.0,
    max_faces: int | None = None,
) -> Image.Image:
    """An RGBA image (transparent background) of all parts, framed so the whole model fits.

    Orthographic projection (so texture interpolation is exactly perspective-correct): the camera
    turns `yaw` degrees around +Y (0 looks from +Z towards -Z, 90 from +X) and looks down
    `pitch` degrees. The model's outline in this view is centred and fills the image but for a
    MARGIN. Raises ValueError for a size outside 1..MAX_SIZE or more faces than `max_faces`:
    the caller passes an already simplified mesh.
    """
    _check_size(size)
    # vertices no face uses may be anything, NaN included: their arithmetic must not warn
    with np.errstate(all="ignore"):
        scene = _prepare(parts, max_faces)
        if scene is None:
            return Image.new("RGBA", (size, size))
        rotation = _rotation(yaw, pitch)
        pixels = _draw(scene, rotation, _frame(scene, rotation), size)
    return Image.fromarray(pixels, "RGBA")


def render_turntable(
    parts: Sequence[Surface], *, frames: int = 24, frame_size: int = 256, columns: int = 6,
    pitch: float = 20.0, max_faces: int | None = None, threads: int = 1,
) -> Image.Image:
    """`frames` views at yaw = 360*i/frames, left-to-right, top-to-bottom in `columns`; RGBA.

    Every frame shares one centre (the model's bounding-box centre) and one scale (its largest
    extent over all frames), so the model turns in place. The sprite's geometry is
    `turntable_layout(frames, frame_size, columns)`; unused cells are transparent. Frames are
    drawn on `threads` threads (numpy lets go of the GIL for most of a frame's work).
    """
    layout = turntable_layout(frames, frame_size, columns)
    sprite = np.zeros((layout["rows"] * frame_size, layout["columns"] * frame_size, 4), np.uint8)
    with np.errstate(all="ignore"):
        scene = _prepare(parts, max_faces)
        if scene is None:
            return Image.fromarray(sprite, "RGBA")
        rotations = [_rotation(360.0 * i / frames, pitch) for i in range(frames)]
        frame = _turntable_frame(scene, rotations)

        def draw(i: int) -> None:
            top, left = (frame_size * n for n in divmod(i, layout["columns"]))
            with np.errstate(all="ignore"):  # error state is per thread
                image = _draw(scene, rotations[i], frame, frame_size)
            sprite[top:top + frame_size, left:left + frame_size] = image

        if threads > 1:
            with ThreadPoolExecutor(min(threads, frames), thread_name_prefix="kiln-frame") as pool:
                list(pool.map(draw, range(frames)))
        else:
            for i in range(frames):
                draw(i)
    return Image.fromarray(sprite, "RGBA")


def turntable_layout(frames: int, frame_size: int, columns: int) -> dict[str, int]:
    """{"frames","frame_width","frame_height","columns","rows"} — the page needs it to scrub."""
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be within 1..{MAX_FRAMES}, not {frames}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    _check_size(frame_size)
    columns = min(columns, frames)
    return {
        "frames": frames, "frame_width": frame_size, "frame_height": frame_size,
        "columns": columns, "rows": -(-frames // columns),
    }


def _check_size(size: int) -> None:
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"image size must be within 1..{MAX_SIZE}, not {size}")


def _rotation(yaw: float, pitch: float) -> NDArray[np.float64]:
    """Model space -> view space (x right, y up, z towards the camera)."""
    a, b = math.radians(yaw), math.radians(pitch)
    back = np.array([math.sin(a) * math.cos(b), math.sin(b), math.cos(a) * math.cos(b)])
    right = np.array([math.cos(a), 0.0, -math.sin(a)])
    up = np.cross(back, right)
    return np.stack([right, up, back])


def _frame(scene: _Scene, rotation: NDArray[np.float64]) -> tuple[float, float, float]:
    """(centre x, centre y, half side) of the square that holds the model in this view."""
    x, y = (_project(scene.coords[:, scene.used], rotation, axis) for axis in (0, 1))
    low_x, high_x, low_y, high_y = x.min(), x.max(), y.min(), y.max()
    return _checked((low_x + high_x) / 2, (low_y + high_y) / 2,
                    max(high_x - low_x, high_y - low_y) / 2)


def _turntable_frame(
    scene: _Scene, rotations: list[NDArray[np.float64]]
) -> tuple[float, float, float]:
    """One frame for every view: centred on the model's bounding-box centre, the widest extent."""
    used = scene.coords[:, scene.used]
    extent = max(float(np.abs(_project(used, r, axis)).max())
                 for r in rotations for axis in (0, 1))
    return _checked(0.0, 0.0, extent)


def _checked(x: float, y: float, extent: float) -> tuple[float, float, float]:
    if not all(math.isfinite(v) for v in (x, y, extent)):
        return 0.0, 0.0, 1.0  # coordinates too large to frame: nothing sensible will show
    return float(x), float(y), float(extent) if extent > 0 else 1.0


def _prepare(parts: Sequence[Surface], max_faces: int | None) -> _Scene | None:
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
    return _Scene(
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
        cross = _face_cross(coords, block)
        corners = block.reshape(-1)
        for axis in range(3):
            summed[:, axis] += np.bincount(corners, np.repeat(cross[:, axis], 3), count)
    return _unit(summed)


def _face_cross(coords: NDArray[np.float64], faces: NDArray[np.int64]) -> NDArray[np.float64]:
    """Each face's edge cross product: its normal scaled by twice its area."""
    a, b, c = (faces[:, i] for i in range(3))
    (ux, uy, uz), (vx, vy, vz) = ((axis[b] - axis[a] for axis in coords),
                                  (axis[c] - axis[a] for axis in coords))
    return np.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], axis=1)


def _unit(vectors: NDArray[np.float64]) -> NDArray[np.float32]:
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: NDArray[np.float64] = np.divide(vectors, length, out=np.zeros_like(vectors),
                                          where=length > 0)
    return np.nan_to_num(unit).astype(np.float32)


def _project(
    coords: NDArray[np.float64], rotation: NDArray[np.float64], axis: int
) -> NDArray[np.float64]:
    """One view-space coordinate of every vertex."""
    r = rotation[axis]
    projected: NDArray[np.float64] = r[0] * coords[0] + r[1] * coords[1] + r[2] * coords[2]
    return projected


def _draw(
    scene: _Scene, rotation: NDArray[np.float64], frame: tuple[float, float, float], size: int
) -> NDArray[np.uint8]:
    """One view as (size, size, 4) RGBA, super-sampled when the model is light enough."""
    cheap = len(scene.faces) <= SUPERSAMPLE_MAX_FACES and size * SUPERSAMPLE <= SUPERSAMPLE_MAX_SIZE
    factor = SUPERSAMPLE if cheap else 1
    big = size * factor
    centre_x, centre_y, extent = frame
    scale = big * (0.5 - MARGIN) / extent
    x = big / 2 + (_project(scene.coords, rotation, 0) - centre_x) * scale
    y = big / 2 - (_project(scene.coords, rotation, 1) - centre_y) * scale
    depth = _project(scene.coords, rotation, 2)
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
        self, scene: _Scene, seen: NDArray[np.int64], x: NDArray[np.float64],
        y: NDArray[np.float64], rotation: NDArray[np.float64],
    ) -> None:
        corners = scene.faces[seen]
        self.planes = barycentric_planes(x, y, corners)
        table = np.concatenate([_corner_normals(scene, corners), scene.colors[corners]], axis=2)
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


def _corner_normals(scene: _Scene, corners: NDArray[np.int64]) -> NDArray[np.float32]:
    """(u, 3, 3) shading normals at the corners of faces: smooth unless the edge is a crease."""
    flat = _unit(_face_cross(scene.coords, corners))
    normals = scene.vertex_normals[corners]
    agree = np.einsum("kcj,kj->kc", normals, flat)
    smooth = np.abs(agree) >= math.cos(math.radians(SMOOTH_ANGLE))
    # a flipped neighbour's normal points the other way: orient every corner like its face
    normals *= np.sign(agree)[:, :, None]
    return np.where(smooth[:, :, None], normals, flat[:, None, :])


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
