"""A fast path for the big, plain OBJ files exporters write: one block each of `v`, `vt`, `vn`
and triangular `f` lines, at most one material. Each block is parsed by numpy in one call instead
of line by line; anything else (quads, several materials, relative indices, odd tokens) returns
None and trimesh's general parser reads the file."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray
from trimesh.exchange.obj import parse_mtl

FAST_MIN_BYTES = 4 * 1024**2
"""Smaller files gain nothing worth a second code path: trimesh reads them."""

_TO_SPACES = bytes.maketrans(b"/\r\t", b"   ")
# normals are not read (the renderer computes its own); a `vn` line anywhere else breaks a parse
_KEYWORDS = (b"v", b"vt", b"f")


def load_plain_obj(data: bytes, resolver: Any, *,
                   min_bytes: int = FAST_MIN_BYTES) -> trimesh.Scene | None:
    """The model as one textured mesh, or None when the file is not of the plain shape."""
    if len(data) < min_bytes or data.count(b"usemtl") > 1:
        return None
    text = b"\n" + data
    blocks = {keyword: _block(text, keyword) for keyword in _KEYWORDS}
    if any(block is None for block in blocks.values()):
        return None
    positions = _numbers(blocks[b"v"], 3)
    uvs = _numbers(blocks[b"vt"], 2) if blocks[b"vt"] else np.zeros((0, 2))
    corners = _faces(blocks[b"f"] or b"")
    if positions is None or uvs is None or corners is None or not len(positions):
        return None
    vertex_index, uv_index = corners
    if vertex_index.min() < 1 or vertex_index.max() > len(positions):
        return None
    if uv_index is None or not len(uvs):
        mesh = trimesh.Trimesh(vertices=positions, faces=(vertex_index - 1).reshape(-1, 3),
                               process=False)
        return trimesh.Scene(mesh)
    if uv_index.min() < 1 or uv_index.max() > len(uvs):
        return None
    # one mesh vertex per distinct (position, texture coordinate) pair, as trimesh makes them
    key = vertex_index * (len(uvs) + 1) + uv_index
    unique, inverse = np.unique(key, return_inverse=True)
    visual = trimesh.visual.TextureVisuals(  # type: ignore[no-untyped-call]
        uv=uvs[unique % (len(uvs) + 1) - 1], material=_material(data, resolver))
    mesh = trimesh.Trimesh(vertices=positions[unique // (len(uvs) + 1) - 1],
                           faces=inverse.reshape(-1, 3), visual=visual, process=False)
    return trimesh.Scene(mesh)


def _block(text: bytes, keyword: bytes) -> bytes | None:
    """The lines of `keyword`, when they form one contiguous block (b"" when there are none)."""
    marker = b"\n" + keyword + b" "
    first = text.find(marker)
    if first < 0:
        return b""
    last = text.rfind(marker)
    end = text.find(b"\n", last + 1)
    block = text[first:end if end >= 0 else len(text)]
    # faces need no check: any other statement among them leaves letters that stop the parse
    if keyword != b"f" and block.count(b"\n") != block.count(marker):
        return None  # other lines in between: not a plain file
    return block


def _numbers(block: bytes | None, columns: int) -> NDArray[np.float64] | None:
    if block is None:
        return None
    lines = block.count(b"\n")
    values = _parse(block.translate(_TO_SPACES, b"vtn"))
    if values is None or len(values) != lines * columns:
        return None  # w components, vertex colours, or unreadable numbers
    return values.reshape(-1, columns)


def _faces(block: bytes) -> tuple[NDArray[np.int64], NDArray[np.int64] | None] | None:
    lines = block.count(b"\n")
    first_line = block[1:block.find(b"\n", 1) if block.find(b"\n", 1) > 0 else len(block)]
    corners = first_line.split()[1:]
    if not lines or len(corners) != 3:
        return None
    slashes = corners[0].count(b"/")
    double = b"//" in corners[0]
    if block.count(b"/") != lines * 3 * slashes or (block.count(b"//") > 0) != double:
        return None
    per_corner = 1 if slashes == 0 else (2 if double else slashes + 1)
    values = _parse(block.translate(_TO_SPACES, b"f"), np.int64)  # integers parse 5× faster
    if values is None or len(values) != lines * 3 * per_corner:
        return None  # quads, polygons or mixed corner shapes
    indices = values.astype(np.int64).reshape(-1, per_corner)
    uv_index = indices[:, 1] if per_corner >= 2 and not double else None
    return indices[:, 0], uv_index


def _parse(text: bytes, dtype: type[np.generic] = np.float64) -> NDArray[Any] | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, and stops, at the first unreadable token
        try:
            return np.fromstring(text, dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def _material(data: bytes, resolver: Any) -> trimesh.visual.material.Material | None:
    start = data.find(b"mtllib")
    if start < 0:
        return None
    line = data[start + 6:data.find(b"\n", start)].decode("utf-8", errors="replace").strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            materials = parse_mtl(resolver[line], resolver=resolver)  # type: ignore[no-untyped-call]
    except Exception:  # a missing or unreadable library: the mesh is drawn untextured
        return None
    used = data.find(b"usemtl")
    name = data[used + 6:data.find(b"\n", used)].decode("utf-8", errors="replace").strip() \
        if used >= 0 else ""
    chosen = materials.get(name) or next(iter(materials.values()), None)
    if chosen is None:
        return None
    return trimesh.visual.material.SimpleMaterial(**chosen)  # type: ignore[no-untyped-call]
