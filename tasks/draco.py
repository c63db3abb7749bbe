"""Draco-compressed glTF: decode KHR_draco_mesh_compression into plain accessors; pack a GLB."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from tasks.errors import CorruptFile, TooLarge, UnsupportedFormat

EXTENSION = "KHR_draco_mesh_compression"
MAX_POINTS = 50_000_000
MAX_FACES = 50_000_000

_COMPONENT_TYPES: dict[str, int] = {
    "int8": 5120, "uint8": 5121, "int16": 5122, "uint16": 5123, "uint32": 5125, "float32": 5126,
}
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_NORMALIZED_PREFIXES = ("COLOR_", "TEXCOORD_", "WEIGHTS_")
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = b"glTF", 0x4E4F534A, 0x004E4942


class _Invalid(Exception):
    """A reason the compressed data cannot be trusted, told to the user after a fixed prefix."""


def uses_draco(tree: dict[str, Any]) -> bool:
    """Whether the glTF JSON declares or uses Draco mesh compression."""
    used = tree.get("extensionsUsed") if isinstance(tree, dict) else None
    return (isinstance(used, list) and EXTENSION in used) or any(
        True for _ in _draco_primitives(tree)
    )


def decode_draco(
    tree: dict[str, Any],
    buffers: list[bytes],
    *,
    max_points: int = MAX_POINTS,
    max_faces: int = MAX_FACES,
) -> tuple[dict[str, Any], list[bytes]]:
    """Return a copy of the glTF JSON `tree` and its buffers where every primitive with
    KHR_draco_mesh_compression is replaced by plain accessors (POSITION, NORMAL, TEXCOORD_0,
    COLOR_0 when decoded; indices as uint32), the extension removed from the primitive, from
    extensionsUsed and from extensionsRequired; new data appended as ONE extra buffer at the end
    of the list. A tree without Draco is returned as it is, with its buffers.
    Raises CorruptFile, TooLarge, or UnsupportedFormat without DracoPy."""
    if not uses_draco(tree):
        return tree, buffers
    try:
        import DracoPy  # only Draco files need it: its absence is a refusal, not a crash
    except ImportError as error:
        raise UnsupportedFormat(
            "Draco-compressed glTF needs DracoPy, which is not installed on this server."
        ) from error
    out = copy.deepcopy(tree)
    writer = BufferWriter(len(buffers), len(out.get("bufferViews") or []))
    try:
        _decode_all(out, buffers, writer, DracoPy.decode, max_points, max_faces)
    except _Invalid as error:
        raise CorruptFile(
            f"The glTF's Draco-compressed mesh could not be decoded: {error}"
        ) from error
    for key in ("extensionsUsed", "extensionsRequired"):
        if isinstance(out.get(key), list):
            out[key] = [name for name in out[key] if name != EXTENSION]
            if not out[key]:
                del out[key]
    out.setdefault("bufferViews", []).extend(writer.views)
    out.setdefault("buffers", []).append({"byteLength": len(writer.blob)})
    return out, [*buffers, bytes(writer.blob)]


def _draco_primitives(tree: Any) -> Any:
    meshes = tree.get("meshes") if isinstance(tree, dict) else None
    for mesh in meshes if isinstance(meshes, list) else []:
        primitives = mesh.get("primitives") if isinstance(mesh, dict) else None
        for primitive in primitives if isinstance(primitives, list) else []:
            extensions = primitive.get("extensions") if isinstance(primitive, dict) else None
            if isinstance(extensions, dict) and EXTENSION in extensions:
                yield primitive


class BufferWriter:
    """The one new buffer: aligned views of decoded arrays, described as glTF bufferViews."""

    def __init__(self, buffer_index: int, first_view: int) -> None:
        self.buffer_index = buffer_index
        self.first_view = first_view
        self.blob = bytearray()
        self.views: list[dict[str, Any]] = []

    def add(self, array: NDArray[Any], target: int) -> int:
        self.blob.extend(bytes(-len(self.blob) % 4))
        self.views.append({"buffer": self.buffer_index, "byteOffset": len(self.blob),
                           "byteLength": array.nbytes, "target": target})
        self.blob.extend(np.ascontiguousarray(array).tobytes())
        return self.first_view + len(self.views) - 1


def _decode_all(
    tree: dict[str, Any], buffers: list[bytes], writer: BufferWriter, decode: Any,
    max_points: int, max_faces: int,
) -> None:
    accessors = tree.get("accessors")
    if not isinstance(accessors, list):
        raise _Invalid("the file has no accessor list.")
    points = faces = 0
    decoded_views: dict[int, Any] = {}  # primitives may share one compressed mesh
    written: dict[int, tuple[int, str]] = {}  # accessor -> (bufferView, semantic) written into it
    for primitive in list(_draco_primitives(tree)):
        extension = primitive["extensions"].pop(EXTENSION)
        if not primitive["extensions"]:
            del primitive["extensions"]
        semantics = _checked_semantics(primitive, extension, accessors)
        if "POSITION" not in semantics:
            raise _Invalid("a compressed mesh has no positions.")
        count = accessors[semantics["POSITION"][0]]["count"]
        points += count
        faces += _count(accessors, primitive.get("indices")) // 3
        if points > max_points or faces > max_faces:
            raise TooLarge(
                f"The Draco-compressed meshes have {points:,} points and {faces:,} faces; the "
                f"limits are {max_points:,} and {max_faces:,}."
            )
        view = extension.get("bufferView")
        if not _is_index(view, 1 << 31):
            raise _Invalid("it names no bufferView.")
        if view not in decoded_views:
            decoded_views[view] = _decode(_view_bytes(tree, buffers, view), decode)
        decoded = decoded_views[view]
        for name, (index, unique_id) in semantics.items():
            if _claim(written, index, (view, name)):
                data = _attribute(decoded, unique_id, accessors[index], name)
                _replace(accessors[index], data, writer.add(data, _ARRAY_BUFFER), name)
        indices = primitive.get("indices")
        if indices is None or _claim(written, indices, (view, "indices")):
            _write_indices(primitive, accessors, decoded, count, writer)


def _claim(written: dict[int, tuple[int, str]], accessor: int, source: tuple[int, str]) -> bool:
    """Whether `accessor` still has to be written from `source`; one accessor, one source."""
    if accessor in written:
        if written[accessor] != source:
            raise _Invalid("two compressed meshes share one accessor.")
        return False
    written[accessor] = source
    return True


def _checked_semantics(
    primitive: dict[str, Any], extension: Any, accessors: list[Any]
) -> dict[str, tuple[int, int]]:
    """semantic -> (accessor index, Draco unique id), each one checked to exist."""
    attributes = primitive.get("attributes")
    ids = extension.get("attributes") if isinstance(extension, dict) else None
    if not isinstance(attributes, dict) or not isinstance(ids, dict):
        raise _Invalid("a compressed primitive has no attribute map.")
    semantics: dict[str, tuple[int, int]] = {}
    for name, unique_id in ids.items():
        accessor = attributes.get(name)
        if not _is_index(unique_id, 1 << 31) or not _is_index(accessor, len(accessors)):
            raise _Invalid("an attribute refers to data that does not exist.")
        if not isinstance(accessors[accessor], dict) or not _is_index(
            accessors[accessor].get("count"), 1 << 32
        ):
            raise _Invalid("an attribute's accessor has no valid count.")
        semantics[str(name)] = (accessor, unique_id)
    return semantics


def _count(accessors: list[Any], index: Any) -> int:
    if index is None:
        return 0
    if not _is_index(index, len(accessors)) or not isinstance(accessors[index], dict):
        raise _Invalid("the indices refer to an accessor that does not exist.")
    count = accessors[index].get("count")
    if not _is_index(count, 1 << 32):
        raise _Invalid("the indices accessor has no valid count.")
    return int(count)


def _view_bytes(tree: dict[str, Any], buffers: list[bytes], index: Any) -> bytes:
    views = tree.get("bufferViews")
    if not isinstance(views, list) or not _is_index(index, len(views)):
        raise _Invalid("its bufferView does not exist.")
    view = views[index]
    buffer = view.get("buffer") if isinstance(view, dict) else None
    if not _is_index(buffer, len(buffers)):
        raise _Invalid("its bufferView refers to a buffer that does not exist.")
    offset, length = view.get("byteOffset", 0), view.get("byteLength")
    if not _is_index(offset, len(buffers[buffer]) + 1) or not _is_index(length, 1 << 62):
        raise _Invalid("its bufferView has an invalid offset or length.")
    if offset + length > len(buffers[buffer]):
        raise _Invalid("its bufferView lies outside its buffer.")
    return buffers[buffer][offset : offset + length]


def _decode(data: bytes, decode: Any) -> Any:
    try:
        decoded = decode(data)
    except MemoryError as error:
        message = "The Draco-compressed mesh needs more memory than a task may use."
        raise TooLarge(message) from error
    except Exception as error:  # DracoPy raises several kinds on damaged bytes
        raise _Invalid("the compressed bytes are damaged.") from error
    points = np.asarray(decoded.points)
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise _Invalid("its positions are not finite 3D points.")
    return decoded


def _attribute(decoded: Any, unique_id: int, accessor: dict[str, Any], name: str) -> NDArray[Any]:
    found = decoded.get_attribute_by_unique_id(unique_id)
    data = np.asarray(found["data"]) if isinstance(found, dict) else None
    if data is None or data.ndim not in (1, 2):
        raise _Invalid(f"its {name} attribute is missing.")
    data = data.reshape(len(data), -1)
    if len(data) != accessor["count"]:
        raise _Invalid(f"it holds {len(data):,} {name} values where the file declares "
                       f"{accessor['count']:,}.")
    if _TYPES.get(data.shape[1]) != accessor.get("type", _TYPES.get(data.shape[1])):
        raise _Invalid(f"its {name} values do not have the components the file declares.")
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype.name not in _COMPONENT_TYPES:
        raise _Invalid(f"its {name} values have a type glTF cannot store.")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise _Invalid(f"its {name} values are not finite.")
    return data


def _replace(accessor: dict[str, Any], data: NDArray[Any], view: int, name: str) -> None:
    accessor.update(bufferView=view, byteOffset=0, componentType=_COMPONENT_TYPES[data.dtype.name],
                    type=_TYPES[data.shape[1]])
    accessor.pop("sparse", None)
    accessor.pop("normalized", None)
    if data.dtype.kind != "f" and name.startswith(_NORMALIZED_PREFIXES):
        accessor["normalized"] = True
    if name == "POSITION":  # glTF requires bounds on positions; they must be the decoded ones
        accessor["min"], accessor["max"] = data.min(axis=0).tolist(), data.max(axis=0).tolist()
    else:
        accessor.pop("min", None)
        accessor.pop("max", None)


def _write_indices(
    primitive: dict[str, Any], accessors: list[Any], decoded: Any, count: int, writer: BufferWriter
) -> None:
    faces = getattr(decoded, "faces", None)  # a DracoPointCloud has none
    faces = np.asarray(faces if faces is not None else [])
    if faces.size == 0:
        if primitive.get("mode", 4) != 0:
            raise _Invalid("a compressed triangle mesh holds no faces.")
        return
    if faces.ndim != 2 or faces.shape[1] != 3 or int(faces.min()) < 0 or int(faces.max()) >= count:
        raise _Invalid("its faces refer to points it does not have.")
    indices = faces.reshape(-1).astype(np.uint32)
    declared = _count(accessors, primitive.get("indices"))
    if "indices" in primitive and declared != len(indices):
        raise _Invalid(f"it holds {len(indices):,} indices where the file declares {declared:,}.")
    accessor = {"bufferView": writer.add(indices, _ELEMENT_ARRAY_BUFFER), "byteOffset": 0,
                "componentType": 5125, "count": len(indices), "type": "SCALAR"}
    if "indices" in primitive:
        accessors[primitive["indices"]] = accessor
    else:
        accessors.append(accessor)
        primitive["indices"] = len(accessors) - 1


def _is_index(value: object, limit: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit


def pack_glb(tree: dict[str, Any], buffers: list[bytes]) -> bytes:
    """A GLB holding `tree` with every buffer merged into its one BIN chunk (uris dropped)."""
    declared = tree.get("buffers") or []
    if len(buffers) < len(declared):
        raise CorruptFile("The glTF refers to more buffers than it has.")
    out = copy.deepcopy(tree)
    starts: list[int] = []
    blob = bytearray()
    for data in buffers[: len(declared)]:
        blob.extend(bytes(-len(blob) % 4))
        starts.append(len(blob))
        blob.extend(data)
    for view in out.get("bufferViews") or []:
        index = view.get("buffer") if isinstance(view, dict) else None
        if not _is_index(index, len(starts)):
            raise CorruptFile("The glTF has a bufferView that refers to no buffer.")
        view["buffer"] = 0
        view["byteOffset"] = starts[index] + int(view.get("byteOffset", 0))
    if starts:
        out["buffers"] = [{"byteLength": len(blob)}]
    else:
        out.pop("buffers", None)
    text = json.dumps(out, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % 4)
    blob.extend(bytes(-len(blob) % 4))
    chunks = struct.pack("<II", len(text), _JSON_CHUNK) + text
    if starts:
        chunks += struct.pack("<II", len(blob), _BIN_CHUNK) + bytes(blob)
    return _GLB_MAGIC + struct.pack("<II", 2, 12 + len(chunks)) + chunks
