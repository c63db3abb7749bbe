"""What trimesh would misread in a glTF, rewritten before it reads it (`normalised`).

- Sparse accessors are applied: trimesh reads them as zeros.
- Quantised vertex attributes (KHR_mesh_quantization) become float32, normalised ones scaled:
  trimesh would read a normalised short as the integer it stores.
- Triangle strips and fans become triangle lists: trimesh drops fans.
- Every instance becomes a node of its own (`tasks.gltf_nodes`): GPU instancing, and a node
  with two parents.
- Points and lines are counted: trimesh keeps them apart from the meshes, so a file of nothing
  else has nothing to measure, and a mixed one would lose them without a word.
- A required extension Kiln cannot honour, meshopt compression among them (also when only its
  fallback buffers are left empty), is named in an UnsupportedFormat rather than read as
  damage.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from tasks.draco import BufferWriter
from tasks.errors import CorruptFile, NoGeometry, TooLarge, UnsupportedFormat
from tasks.gltf_nodes import spelled_out

HONOURED = ("KHR_draco_mesh_compression", "KHR_mesh_quantization", "KHR_texture_transform",
            "KHR_lights_punctual", "KHR_materials_", "EXT_mesh_gpu_instancing",
            "EXT_texture_webp", "EXT_texture_avif")
"""Required extensions Kiln reads (or may ignore without changing the geometry: image formats
its allow-list decodes, material parameters); a name that ends in "_" stands for every
extension it begins."""
MESHOPT = ("EXT_meshopt_compression", "KHR_meshopt_compression")
MAX_VALUES = 64 * 1024**2
"""Numbers (a VEC3 element holds three) Kiln reads to rewrite a file, in all, at most: a few
bytes of JSON may declare a count with no data behind it (a sparse accessor starts from
zeros)."""
STRIP_CHUNK = 1 << 20
"""Indices of a strip or fan turned into triangles at a time: bounds the temporaries."""

_DTYPES: dict[Any, type[np.generic]] = {
    5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32,
    5126: np.float32,
}
_WIDTHS: dict[Any, int] = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_FLOAT_ATTRIBUTES = ("POSITION", "NORMAL", "TANGENT", "TEXCOORD_")
_TRIANGLES, _STRIP, _FAN = 4, 5, 6
_POINTS, _LINE_MODES = 0, (1, 2, 3)
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass
class Skipped:
    """Primitives trimesh does not make meshes of."""

    points: int = 0  # vertices drawn as points
    lines: int = 0  # line primitives (lines, loops, strips)
    notes: dict[str, Any] = field(default_factory=dict)


def check_extensions(tree: dict[str, Any]) -> None:
    """Refuse, naming them, the extensions a file needs that Kiln cannot read."""
    required = [name for name in _names(tree.get("extensionsRequired"))
                if not any(name == h or (h.endswith("_") and name.startswith(h))
                           for h in HONOURED)]
    refused = sorted(set(required) | set(_meshopt_without_fallback(tree)))
    if refused:
        names = ", ".join(refused)
        raise UnsupportedFormat(
            f"The glTF needs {'extensions' if len(refused) > 1 else 'the extension'} {names}, "
            "which Kiln cannot read.")


def _meshopt_without_fallback(tree: dict[str, Any]) -> list[str]:
    """Meshopt extensions whose compressed views have no plain data to fall back on: their
    buffer is marked `fallback` (it holds nothing). Without the mark, the buffer holds the
    plain data, which is read instead."""
    views, buffers = tree.get("bufferViews"), tree.get("buffers")
    if not isinstance(views, list) or not isinstance(buffers, list):
        return []
    found = set()
    for view in views:
        extensions = view.get("extensions") if isinstance(view, dict) else None
        for name in MESHOPT:
            if not isinstance(extensions, dict) or name not in extensions:
                continue
            index = view.get("buffer")
            buffer = buffers[index] if _is_index(index, buffers) else None
            marks = buffer.get("extensions") if isinstance(buffer, dict) else None
            mark = marks.get(name) if isinstance(marks, dict) else None
            if isinstance(mark, dict) and mark.get("fallback"):
                found.add(name)
    return sorted(found)


def normalised(tree: dict[str, Any], buffers: list[bytes]) -> tuple[dict[str, Any], list[bytes],
                                                                     Skipped]:
    """A copy of the tree and its buffers as trimesh reads them right (see the module), new data
    in one buffer appended; and what was left for trimesh to skip. Raises NoGeometry when the
    file draws only points or lines, CorruptFile for accessors outside their buffers."""
    out = copy.deepcopy(tree)
    accessors = out.get("accessors")
    if not isinstance(accessors, list):
        return tree, buffers, _skipped(out, [])
    writer = BufferWriter(len(buffers), len(out.get("bufferViews") or []))
    reader = _Reader(tree, buffers)  # the file as it came: `out` gains views only at the end
    for index in _float_attributes(out):
        accessor = accessors[index]
        if accessor.get("componentType") != 5126 or "sparse" in accessor:
            _replace(accessor, _as_float(accessor, reader.read(index)), writer, _ARRAY_BUFFER)
    for index, accessor in enumerate(accessors):  # the rest (matrices are not geometry)
        if isinstance(accessor, dict) and "sparse" in accessor and accessor.get("type") in _WIDTHS:
            _replace(accessor, reader.read(index), writer, _ARRAY_BUFFER)
    def floats(index: Any) -> NDArray[np.float32]:
        values = reader.read(index)
        return _as_float(reader.tree["accessors"][index], values)

    nodes_changed = spelled_out(out, floats)
    triangles = 0
    for primitive in _primitives(out):
        mode = primitive.get("mode", _TRIANGLES)
        if mode in (_STRIP, _FAN):
            faces = _listed(reader, primitive, mode)
            primitive["indices"] = len(accessors)
            accessors.append({"componentType": 5125, "type": "SCALAR"})
            _replace(accessors[-1], faces.reshape(-1, 1), writer, _ELEMENT_ARRAY_BUFFER)
            primitive["mode"] = _TRIANGLES
            mode = _TRIANGLES
        triangles += mode == _TRIANGLES
    skipped = _skipped(out, accessors)
    if not triangles and (skipped.points or skipped.lines):
        raise NoGeometry(_only(skipped))
    if not writer.views:
        return (out if nodes_changed else tree), buffers, skipped
    out.setdefault("bufferViews", []).extend(writer.views)
    out.setdefault("buffers", []).append({"byteLength": len(writer.blob)})
    return out, [*buffers, bytes(writer.blob)], skipped


def _only(skipped: Skipped) -> str:
    if skipped.points and skipped.lines:
        return (f"The file draws only points ({skipped.points:,}) and lines "
                f"({skipped.lines:,} primitives): it has no faces to measure.")
    if skipped.lines:
        return (f"The file draws only lines ({skipped.lines:,} primitives): it has no faces to "
                "measure.")
    return f"The file is a point cloud with {skipped.points:,} points and no faces."


def _skipped(tree: dict[str, Any], accessors: list[Any]) -> Skipped:
    skipped = Skipped()
    for primitive in _primitives(tree):
        mode = primitive.get("mode", _TRIANGLES)
        if mode == _POINTS:
            position = (primitive.get("attributes") or {}).get("POSITION")
            count = accessors[position].get("count", 0) if _is_index(position, accessors) else 0
            skipped.points += int(count) if isinstance(count, int) else 0
        elif mode in _LINE_MODES:
            skipped.lines += 1
    if skipped.points or skipped.lines:
        skipped.notes["skipped_primitives"] = {"points": skipped.points, "lines": skipped.lines}
    return skipped


class _Reader:
    """Accessors' values as numpy arrays (count, width), in the accessor's own type."""

    def __init__(self, tree: dict[str, Any], buffers: list[bytes]) -> None:
        self.tree = tree
        self.buffers = buffers
        self.budget = MAX_VALUES

    def read(self, index: Any) -> NDArray[Any]:
        accessors = self.tree["accessors"]
        if not _is_index(index, accessors) or not isinstance(accessors[index], dict):
            raise CorruptFile("A glTF primitive refers to an accessor that does not exist.")
        accessor = accessors[index]
        dtype, width = _layout(accessor)
        count = self.spend(accessor.get("count"), width)
        if "bufferView" in accessor:
            values = self._view(accessor["bufferView"], _offset(accessor.get("byteOffset", 0)),
                                dtype, width, count)
        else:
            values = np.zeros((count, width), dtype=dtype)
        sparse = accessor.get("sparse")
        if isinstance(sparse, dict):
            values = values.copy()
            hits = self.spend(sparse.get("count"), width + 1)
            where, given = sparse.get("indices") or {}, sparse.get("values") or {}
            index_type = _DTYPES.get(where.get("componentType"))
            if index_type not in (np.uint8, np.uint16, np.uint32):
                raise CorruptFile("A sparse accessor of the glTF has indices of no integer type.")
            rows = self._view(where.get("bufferView"), _offset(where.get("byteOffset", 0)),
                              np.dtype(index_type), 1, hits, tight=True).reshape(-1)
            if rows.size and int(rows.max()) >= count:
                raise CorruptFile("A sparse accessor of the glTF points past its own end.")
            values[rows.astype(np.int64)] = self._view(
                given.get("bufferView"), _offset(given.get("byteOffset", 0)), dtype, width, hits,
                tight=True)
        return values

    def spend(self, count: Any, width: int) -> int:
        """`count` elements of `width` numbers, taken from the budget (TooLarge past it)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise CorruptFile("A glTF accessor has no valid count.")
        self.budget -= count * width
        if self.budget < 0:
            raise TooLarge(f"The glTF's accessors hold more than {MAX_VALUES:,} numbers to "
                           "rewrite, the limit.")
        return count

    def _view(self, index: Any, offset: int, dtype: np.dtype[Any], width: int, count: int,
              tight: bool = False) -> NDArray[Any]:
        views = self.tree.get("bufferViews")
        if not isinstance(views, list) or not _is_index(index, views):
            raise CorruptFile("A glTF accessor refers to a bufferView that does not exist.")
        view = views[index]
        buffer = view.get("buffer")
        if not _is_index(buffer, self.buffers):
            raise CorruptFile("A glTF bufferView refers to a buffer that does not exist.")
        start = _offset(view.get("byteOffset", 0)) + offset
        length = _offset(view.get("byteLength", 0)) - offset
        item = dtype.itemsize * width
        stride = item if tight else _offset(view.get("byteStride") or item)
        needed = (count - 1) * stride + item if count else 0
        data = self.buffers[buffer]
        if stride < item or needed > length or start + needed > len(data):
            raise CorruptFile("A glTF accessor runs past the end of its bufferView.")
        raw = np.frombuffer(data, dtype=np.uint8, count=needed, offset=start)
        rows = np.lib.stride_tricks.as_strided(raw, (count, item), (stride, 1))
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)


def _listed(reader: _Reader, primitive: dict[str, Any], mode: int) -> NDArray[np.uint32]:
    """The triangles (k, 3) a strip or fan draws, as the glTF specification numbers them;
    triangles that repeat a vertex (a strip's restarts) draw nothing and are left out."""
    if "indices" in primitive:
        order = reader.read(primitive["indices"]).reshape(-1).astype(np.uint32)
    else:
        position = (primitive.get("attributes") or {}).get("POSITION")
        accessors = reader.tree["accessors"]
        count = accessors[position].get("count") if _is_index(position, accessors) else 0
        order = np.arange(reader.spend(count, 1), dtype=np.uint32)
    parts = [_triangles(order, first, mode)
             for first in range(0, max(len(order) - 2, 0), STRIP_CHUNK)]
    listed: NDArray[np.uint32] = (np.concatenate(parts) if parts
                                  else np.zeros((0, 3), dtype=np.uint32))
    return listed


def _triangles(order: NDArray[np.uint32], first: int, mode: int) -> NDArray[np.uint32]:
    steps = np.arange(first, min(first + STRIP_CHUNK, len(order) - 2))
    if mode == _STRIP:  # p_i = (v_i, v_{i+1+i%2}, v_{i+2-i%2})
        odd = steps % 2
        faces = np.stack([order[steps], order[steps + 1 + odd], order[steps + 2 - odd]], axis=1)
    else:  # fan: p_i = (v_{i+1}, v_{i+2}, v_0)
        faces = np.stack([order[steps + 1], order[steps + 2],
                          np.full(len(steps), order[0], dtype=np.uint32)], axis=1)
    drawn = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (
        faces[:, 0] != faces[:, 2])
    kept: NDArray[np.uint32] = faces[drawn]
    return kept


def _as_float(accessor: dict[str, Any], values: NDArray[Any]) -> NDArray[np.float32]:
    """Values as float32: a normalised integer type scaled to [0, 1] or [-1, 1]."""
    if not accessor.get("normalized") or values.dtype.kind == "f":
        return values.astype(np.float32)
    info = np.iinfo(values.dtype)
    scaled = values.astype(np.float32) / np.float32(info.max)
    return np.maximum(scaled, np.float32(-1.0)) if info.min < 0 else scaled


def _replace(accessor: dict[str, Any], values: NDArray[Any], writer: BufferWriter,
             target: int) -> None:
    accessor["bufferView"] = writer.add(values, target)
    accessor["byteOffset"] = 0
    accessor["count"] = len(values)
    accessor.pop("sparse", None)
    if values.dtype == np.float32:
        accessor["componentType"] = 5126
        accessor.pop("normalized", None)
        accessor.pop("min", None)
        accessor.pop("max", None)
        if len(values) and np.isfinite(values).all():
            accessor["min"] = values.min(axis=0).tolist()
            accessor["max"] = values.max(axis=0).tolist()


def _float_attributes(tree: dict[str, Any]) -> list[int]:
    """Accessors that primitives (and their morph targets) use as float vertex attributes."""
    accessors = tree["accessors"]
    found: set[int] = set()
    for primitive in _primitives(tree):
        sets = [primitive.get("attributes"), *(primitive.get("targets") or [])]
        for attributes in sets:
            if not isinstance(attributes, dict):
                continue
            for name, index in attributes.items():
                if (isinstance(name, str) and name.startswith(_FLOAT_ATTRIBUTES)
                        and _is_index(index, accessors) and isinstance(accessors[index], dict)):
                    found.add(index)
    return sorted(found)


def _primitives(tree: dict[str, Any]) -> list[dict[str, Any]]:
    meshes = tree.get("meshes")
    return [primitive for mesh in (meshes if isinstance(meshes, list) else [])
            if isinstance(mesh, dict) and isinstance(mesh.get("primitives"), list)
            for primitive in mesh["primitives"] if isinstance(primitive, dict)]


def _layout(accessor: dict[str, Any]) -> tuple[np.dtype[Any], int]:
    dtype = _DTYPES.get(accessor.get("componentType"))
    width = _WIDTHS.get(accessor.get("type"))
    if dtype is None or width is None:
        raise CorruptFile("A glTF accessor has a component type or shape Kiln cannot read.")
    return np.dtype(dtype), width


def _offset(value: Any) -> int:
    """A byte offset, length or stride: a whole number, not negative (CorruptFile otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CorruptFile("A glTF bufferView or accessor has an offset, length or stride that is "
                          "not a whole number of bytes.")
    return value


def _names(value: Any) -> list[str]:
    return [name for name in value if isinstance(name, str)] if isinstance(value, list) else []


def _is_index(value: Any, items: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(items)
