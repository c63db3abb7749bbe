"""The mesh pipeline: load one model with trimesh, reading nothing but its own bytes; measure it."""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray
from trimesh.resolvers import Resolver

from tasks.errors import CorruptFile, NoGeometry, TooLarge, UnsupportedFormat
from tasks.progress import Payload, Progress, Result

# Kiln format -> trimesh file_type: the formats trimesh reads with no optional dependency
FILE_TYPES: dict[str, str] = {
    "obj": "obj",
    "stl": "stl",
    "ply": "ply",
    "off": "off",
    "glb": "glb",
    "gltf": "gltf",
}
_NAMES = {"obj": "OBJ", "stl": "STL", "ply": "PLY", "off": "OFF", "glb": "GLB", "gltf": "glTF"}

MAX_MATERIALS = 256
MAX_NAME_CHARS = 120

_PLY_SIZES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "int32", "uint32", "float", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}
_PLY_PLURALS = {"vertex": "vertices", "face": "faces", "edge": "edges"}
_USEMTL = re.compile(rb"^[ \t]*usemtl[ \t]+([^\r\n#]*?)[ \t]*\r?$", re.MULTILINE)


class RefusingResolver(Resolver):
    """A trimesh resolver that reads no other file and remembers what the model asked for."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def get(self, name: str) -> bytes:
        if name not in self.refused:
            self.refused.append(name)
        raise FileNotFoundError("external references are not resolved")

    def write(self, name: str, data: Any) -> None:
        raise PermissionError("the resolver is read-only")

    def namespaced(self, namespace: str) -> RefusingResolver:
        return self

    def keys(self) -> Iterator[str]:
        return iter(())


def analyse(payload: Payload, progress: Progress) -> Result:
    """Load the model at `payload["source"]` as `payload["format"]` and return its statistics."""
    fmt = str(payload["format"])
    if fmt not in FILE_TYPES:
        raise UnsupportedFormat(f"{fmt.upper()} models are recognised but not supported yet.")
    progress("load", 0.0)
    data = Path(payload["source"]).read_bytes()
    if not data or data.isspace():
        raise NoGeometry("The file is empty.")
    _check_declared_counts(data, fmt)
    if fmt == "gltf":
        _check_gltf_buffers(data)
    resolver = RefusingResolver()
    scene = _load(data, fmt, resolver)
    progress("load", 1.0)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            stats = _measure(scene, progress)
    except MemoryError as error:
        raise TooLarge("The model needs more memory to measure than a task may use.") from error
    stats["materials"] = _material_names(scene, data, fmt)
    stats["external_references"] = [_display_name(n) for n in resolver.refused]
    return {"stats": stats, "artifacts": []}


def _load(data: bytes, fmt: str, resolver: RefusingResolver) -> trimesh.Scene:
    # an in-memory stream has no `name`: trimesh cannot guess a neighbour path from it
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return trimesh.load_scene(stream, file_type=FILE_TYPES[fmt], resolver=resolver)
    except MemoryError as error:
        raise TooLarge("The model needs more memory to load than a task may use.") from error
    except Exception as error:  # any parser failure is the file's fault, never a crash
        message = f"The file could not be read as {_NAMES[fmt]}: it is damaged or invalid."
        raise CorruptFile(message) from error


def _measure(scene: trimesh.Scene, progress: Progress) -> dict[str, Any]:
    """Statistics of the model as placed by its scene graph, in scene units."""
    instances = list(_mesh_instances(scene))
    if not instances:
        points = sum(len(getattr(g, "vertices", ())) for g in scene.geometry.values())
        if points:
            raise NoGeometry(f"The file is a point cloud with {points} points and no faces.")
        raise NoGeometry("The file holds no vertices.")
    progress("analyse", 0.0)
    vertices, faces = _place(instances, progress)
    # topology is about positions: weld the seams that UVs, normals and materials split apart
    model = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    progress("analyse", 0.75)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    watertight = bool(model.is_watertight)
    closed = watertight and bool(model.is_winding_consistent)
    area = float(model.area)
    volume = abs(float(model.volume)) if closed else None
    if not np.isfinite([*low, *high, area, volume or 0.0]).all():
        raise CorruptFile("The model's coordinates are too large to measure.")
    stats = {
        "meshes": len(instances),
        "vertices": len(vertices),
        "faces": len(faces),
        "bounds": [low.tolist(), high.tolist()],
        "size": (high - low).tolist(),
        "area": area,
        "watertight": watertight,
        "volume": volume,
        "bodies": int(model.body_count),
    }
    progress("analyse", 1.0)
    return stats


def _place(
    instances: list[tuple[NDArray[np.float64], trimesh.Trimesh]], progress: Progress
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """All placed meshes as one vertex array and one face array, as the scene shows them."""
    positions: list[NDArray[np.float64]] = []
    triangles: list[NDArray[np.int64]] = []
    offset = 0
    for done, (matrix, mesh) in enumerate(instances, start=1):
        faces = _checked_faces(mesh)
        positions.append(trimesh.transform_points(mesh.vertices, matrix))
        # a mirroring transform turns faces inside out: flip them back, as renderers do
        mirrored = np.linalg.det(matrix[:3, :3]) < 0
        triangles.append((faces[:, ::-1] if mirrored else faces) + offset)
        offset += len(mesh.vertices)
        progress("analyse", 0.5 * done / len(instances))
    vertices = np.concatenate(positions)
    if not np.isfinite(vertices).all():
        raise CorruptFile("The model has coordinates that are not finite numbers.")
    return vertices, np.concatenate(triangles)


def _checked_faces(mesh: trimesh.Trimesh) -> NDArray[np.int64]:
    """The mesh's faces, once its arrays are known to be consistent: parsers do not all check."""
    shape = np.shape(mesh.vertices)
    if len(shape) != 2 or shape[1] != 3:
        raise CorruptFile("The model has vertices without exactly three coordinates.")
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise CorruptFile("The model has faces that are not triangles.")
    if faces.min() < 0 or faces.max() >= len(mesh.vertices):
        raise CorruptFile("The model has faces that refer to vertices it does not have.")
    return faces


def _mesh_instances(
    scene: trimesh.Scene,
) -> Iterator[tuple[NDArray[np.float64], trimesh.Trimesh]]:
    for node in scene.graph.nodes_geometry:
        matrix, name = scene.graph[node]
        geometry = scene.geometry.get(name)
        if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
            yield np.asarray(matrix, dtype=np.float64), geometry


def _material_names(scene: trimesh.Scene, data: bytes, fmt: str) -> list[str]:
    names: list[str] = []
    if fmt == "obj":  # without its MTL file trimesh forgets the names: read `usemtl` itself
        raw = (m.decode("utf-8", errors="replace") for m in _USEMTL.findall(data))
    elif fmt in ("glb", "gltf"):
        materials = (getattr(g.visual, "material", None) for _, g in _mesh_instances(scene))
        raw = (m.name for m in materials if m is not None and isinstance(m.name, str))
    else:  # trimesh invents "material_0" for formats that have no material names
        return names
    for name in raw:
        shown = _display_name(name)
        if shown and shown not in names:
            names.append(shown)
            if len(names) == MAX_MATERIALS:
                break
    return names


def _display_name(name: str) -> str:
    """A name taken from the file, made safe to show: printable and short."""
    printable = "".join(c for c in name if c.isprintable()).strip()
    return printable[:MAX_NAME_CHARS]


def _check_gltf_buffers(data: bytes) -> None:
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise CorruptFile("The file could not be read as glTF: it is not valid JSON.") from error
    buffers = tree.get("buffers", []) if isinstance(tree, dict) else None
    if not isinstance(buffers, list):
        raise CorruptFile("The file could not be read as glTF: it has no valid buffer list.")
    external = [
        _display_name(buffer["uri"].replace("\\", "/").rsplit("/", 1)[-1])
        for buffer in buffers
        if isinstance(buffer, dict)
        and isinstance(buffer.get("uri"), str)
        and not buffer["uri"].startswith("data:")
    ]
    if external:
        raise UnsupportedFormat(
            f"This glTF keeps its data in separate files ({', '.join(external[:3])}), which are "
            "not read yet: upload it as a single .glb, or with its buffers embedded."
        )


def _check_declared_counts(data: bytes, fmt: str) -> None:
    """Refuse a header whose element counts its file cannot hold, before any parser sizes arrays."""
    minimum_bytes = {"ply": _ply_minimum_bytes, "off": _off_minimum_bytes}.get(fmt)
    declared = minimum_bytes(data) if minimum_bytes else None
    if declared is None:
        return
    counts, minimum = declared
    if minimum > len(data):
        described = " and ".join(f"{count:,} {name}" for name, count in counts)
        raise CorruptFile(
            f"The file declares {described}, more than its {len(data):,} bytes can hold."
        )


def _off_minimum_bytes(data: bytes) -> tuple[list[tuple[str, int]], int] | None:
    tokens: list[bytes] = []
    for line in data[:4096].splitlines():
        tokens.extend(line.split(b"#", 1)[0].split())
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or not tokens[0].endswith(b"OFF"):
        return None
    if not (tokens[1].isdigit() and tokens[2].isdigit()):
        return None
    vertices, faces = int(tokens[1]), int(tokens[2])
    # the shortest vertex line is "0 0 0\n", the shortest face "3 0 0 0\n"
    return [("vertices", vertices), ("faces", faces)], vertices * 6 + faces * 8


def _ply_minimum_bytes(data: bytes) -> tuple[list[tuple[str, int]], int] | None:
    end = data.find(b"end_header", 0, 65536)
    if end < 0:
        return None
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    binary = any(line.startswith("format binary") for line in lines)
    elements: list[tuple[str, int, int]] = []  # name, count, least bytes per item
    for words in (line.split() for line in lines):
        if len(words) == 3 and words[0] == "element" and words[2].isdigit():
            elements.append((words[1], int(words[2]), 0))
        elif len(words) >= 3 and words[0] == "property" and elements:
            # a list may be empty but always stores its length; ASCII needs a digit and a space
            kind = words[2] if words[1] == "list" else words[1]
            name, count, item = elements[-1]
            elements[-1] = (name, count, item + (_PLY_SIZES.get(kind, 1) if binary else 2))
    counts = [(_PLY_PLURALS.get(name, _display_name(name)[:20]), n) for name, n, _ in elements]
    return counts, sum(count * item for _, count, item in elements)
