"""The FBX loader: geometry through assimp; units, axes and embedded images via a bounded reader."""

from __future__ import annotations

import contextlib
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import assimp_py
import numpy as np
import trimesh
from numpy.typing import NDArray
from PIL import Image
from trimesh.visual.material import PBRMaterial

from tasks.errors import CorruptFile, NoGeometry, TooLarge
from tasks.fbx_reader import FileFacts, basename, read_facts
from tasks.imaging import open_image, safe_label
from tasks.names import MAX_NAMES, display_name

MAX_FBX_BYTES = 512 * 1024**2
MAX_PIXELS = 178_956_970
MAX_FACES = 50_000_000
MAX_NODES = 100_000

# Triangulate: assimp_py refuses faces that are not triangles. JoinIdenticalVertices: FBX gives
# one vertex per face corner; welding equal corners keeps UV and normal seams. Validate: assimp
# rejects out-of-range indices itself. Not PreTransformVertices: the node hierarchy is kept in
# the scene graph (instances stay shared), and not GlobalScale: units are applied here, once.
ASSIMP_FLAGS = (
    assimp_py.Process_Triangulate
    | assimp_py.Process_JoinIdenticalVertices
    | assimp_py.Process_ValidateDataStructure
)

_ASSIMP_PREFIX = re.compile(r"^FBX-\w+ \(\w+ [^)]*\)\s*")
_AXES = "XYZ"
_DIFFUSE, _BASE_COLOR = assimp_py.TextureType_DIFFUSE, 12


@dataclass
class FbxModel:
    """A loaded FBX: its meshes in metres with Y up, and what its materials refer to."""

    scene: trimesh.Scene
    materials: list[str]
    textures: list[str]
    embedded_textures: int
    missing_textures: list[str]
    unit_scale: float
    up_axis: str
    unreadable_textures: list[str] = field(default_factory=list)


def load_fbx(
    path: Path,
    *,
    max_pixels: int = MAX_PIXELS,
    max_faces: int = MAX_FACES,
    max_bytes: int = MAX_FBX_BYTES,
) -> FbxModel:
    """Load the FBX at `path` into a scene in metres, Y up; no other file is ever opened.

    Raises CorruptFile, NoGeometry or TooLarge (faces, bytes, or an embedded image's pixels).
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"The FBX file has {size:,} bytes; the limit is {max_bytes:,}.")
    data = path.read_bytes()
    facts = read_facts(data)
    unit_scale, up_axis = _units_and_axes(facts.settings)
    scene_in = _import(data)
    del data
    return _build(scene_in, facts, unit_scale, up_axis, max_pixels, max_faces)


def _import(data: bytes) -> Any:
    """Run assimp on a private copy named .fbx, alone in an empty directory: the extension picks
    the FBX importer only, and a relative reference can reach nothing."""
    with tempfile.TemporaryDirectory(prefix="kiln-fbx-") as directory:
        copy, primer = Path(directory) / "model.fbx", Path(directory) / "primer.none"
        copy.write_bytes(data)
        primer.touch()
        # assimp_py reports a scene without meshes with assimp's *last* error, stale text from an
        # earlier import: a failed import of an empty file makes that last error recognisable
        with contextlib.suppress(Exception):
            assimp_py.import_file(str(primer), 0)
        try:
            return assimp_py.import_file(str(copy), ASSIMP_FLAGS)
        except MemoryError as error:
            raise TooLarge("The FBX file needs more memory to load than a task may use.") from error
        except ValueError as error:  # assimp_py's refusal of lines and points
            raise CorruptFile(
                "The FBX file has faces that are not polygons (lines or points), "
                "which are not supported."
            ) from error
        except Exception as error:  # assimp's message names our copy: keep only its reason
            if primer.name in str(error):
                raise NoGeometry("The FBX file holds no meshes.") from error
            reason = str(error).replace(str(copy), "").split("': ", 1)[-1].strip()
            reason = _ASSIMP_PREFIX.sub("", reason)
            message = f"The file could not be read as FBX: {safe_label(reason)}"
            raise CorruptFile(message) from error


def _units_and_axes(settings: dict[str, float]) -> tuple[float, str]:
    """The factor from file units to metres and the file's up axis, refusing values that
    would make assimp index outside its axis vectors."""
    axes = [settings.get(k, d) for k, d in (("CoordAxis", 0), ("UpAxis", 1), ("FrontAxis", 2))]
    signs = [settings.get(k, 1) for k in ("CoordAxisSign", "UpAxisSign", "FrontAxisSign")]
    if sorted(axes) != [0, 1, 2] or any(s not in (1, -1) for s in signs):
        raise CorruptFile("The file could not be read as FBX: it declares an invalid axis system.")
    centimetres = settings.get("UnitScaleFactor", 1.0)
    if not 1e-6 <= centimetres <= 1e6:
        raise CorruptFile("The file could not be read as FBX: it declares an invalid unit scale.")
    up = _AXES[int(axes[1])]
    return centimetres / 100.0, up if signs[1] == 1 else "-" + up


# --- from assimp's scene to a trimesh scene ----------------------------------------------------


def _build(
    source: Any, facts: FileFacts, unit_scale: float, up_axis: str, max_pixels: int,
    max_faces: int,
) -> FbxModel:
    nodes = list(_walk(source.root_node))
    placed_faces = sum(source.meshes[i].num_faces for _, _, n in nodes for i in n.mesh_indices)
    if placed_faces == 0:
        raise NoGeometry("The FBX file holds no meshes with faces.")
    if placed_faces > max_faces:
        raise TooLarge(f"The model has {placed_faces:,} faces; the limit is {max_faces:,}.")
    catalogue = _Catalogue(source.materials, facts.embedded, max_pixels)
    geometry = {
        f"mesh{i}": _mesh(m, catalogue.material(m.material_index))
        for i, m in enumerate(source.meshes)
        if m.num_faces
    }
    scene = trimesh.Scene()
    scene.geometry.update(geometry)  # shared by every node that instances it
    # assimp's root already turns the file's axes to Y up; metres are applied here, once
    metres = np.diag([unit_scale, unit_scale, unit_scale, 1.0])
    for frame, parent, node in nodes:
        local = _matrix(node.transformation)
        scene.graph.update(  # type: ignore[no-untyped-call]
            frame_to=frame, frame_from=parent or scene.graph.base_frame,
            matrix=metres @ local if parent is None else local,
        )
        for index in node.mesh_indices:
            if f"mesh{index}" in geometry:
                scene.graph.update(  # type: ignore[no-untyped-call]
                    frame_to=f"{frame}/mesh{index}", frame_from=frame, geometry=f"mesh{index}"
                )
    return FbxModel(
        scene=scene, materials=catalogue.names(), textures=catalogue.referenced,
        embedded_textures=len(facts.embedded), unit_scale=unit_scale, up_axis=up_axis,
        missing_textures=[t for t in catalogue.referenced if t.lower() not in facts.embedded],
        unreadable_textures=catalogue.unreadable,
    )


def _walk(root: Any) -> Iterator[tuple[str, str | None, Any]]:
    """(frame name, parent frame name, node) for every node, parents first, with unique names."""
    stack: list[tuple[Any, str | None]] = [(root, None)]
    for number in range(MAX_NODES):
        if not stack:
            return
        node, parent = stack.pop()
        frame = f"{number}:{display_name(node.name)}"
        yield frame, parent, node
        stack.extend((child, frame) for child in reversed(node.children))
    raise TooLarge(f"The FBX file has more than {MAX_NODES:,} nodes.")


def _matrix(rows: Any) -> NDArray[np.float64]:
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise CorruptFile("The FBX file places a mesh with a transform that is not finite.")
    return matrix


def _mesh(source: Any, material: PBRMaterial) -> trimesh.Trimesh:
    count = source.num_vertices
    vertices = np.frombuffer(source.vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.frombuffer(source.indices, dtype=np.uint32).reshape(-1, 3).astype(np.int64)
    if len(vertices) != count or faces.max() >= count or not np.isfinite(vertices).all():
        raise CorruptFile("The FBX file has a mesh whose faces or coordinates are invalid.")
    normals = None
    if source.normals is not None:
        normals = np.frombuffer(source.normals, dtype=np.float32).reshape(-1, 3)
    uv = None
    if source.texcoords and source.num_uv_components[0] >= 2:
        width = source.num_uv_components[0]
        uv = np.frombuffer(source.texcoords[0], dtype=np.float32).reshape(-1, width)[:, :2]
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trimesh warns about normals it will not use
        return trimesh.Trimesh(
            vertices=vertices.astype(np.float64), faces=faces, vertex_normals=normals,
            visual=visual, process=False,
        )


class _Catalogue:
    """Materials as PBR materials, their names and texture names; embedded images decoded once."""

    def __init__(self, materials: list[dict[str, Any]], embedded: dict[str, bytes],
                 max_pixels: int) -> None:
        self.materials = materials
        self.embedded = embedded
        self.max_pixels = max_pixels
        self.referenced: list[str] = []
        self.unreadable: list[str] = []
        self.built: dict[int, PBRMaterial] = {}
        for material in materials:
            for paths in (material.get("TEXTURES") or {}).values():
                for name in filter(None, (basename(str(p)) for p in paths)):
                    if name not in self.referenced and len(self.referenced) < MAX_NAMES:
                        self.referenced.append(name)

    def names(self) -> list[str]:
        names: list[str] = []
        for material in self.materials:
            name = display_name(str(material.get("NAME") or ""))
            if name and name not in names and len(names) < MAX_NAMES:
                names.append(name)
        return names

    def material(self, index: int) -> PBRMaterial:
        if index not in self.built:
            self.built[index] = self._material(index)
        return self.built[index]

    def _material(self, index: int) -> PBRMaterial:
        source = self.materials[index] if 0 <= index < len(self.materials) else {}
        name = display_name(str(source.get("NAME") or "")) or None
        colour = source.get("COLOR_DIFFUSE")
        rgb = [float(c) for c in colour[:3]] if isinstance(colour, list) else [0.8, 0.8, 0.8]
        opacity = source.get("OPACITY")
        alpha = float(opacity) if isinstance(opacity, float | int) else 1.0
        factor = np.clip(np.nan_to_num([*rgb, alpha], nan=1.0), 0.0, 1.0).tolist()
        image = self._base_colour_image(source.get("TEXTURES") or {})
        if image is not None:  # the texture carries the colour; a tint would darken it
            factor = None
        blend = factor is not None and factor[3] < 1.0
        return PBRMaterial(  # type: ignore[no-untyped-call]
            name=name, baseColorFactor=factor, baseColorTexture=image,
            alphaMode="BLEND" if blend else None,
        )

    def _base_colour_image(self, textures: dict[int, list[str]]) -> Image.Image | None:
        for kind in (_DIFFUSE, _BASE_COLOR):
            for path in textures.get(kind) or []:
                name = basename(str(path))
                content = self.embedded.get(name.lower())
                if content is None or name in self.unreadable:
                    continue
                try:
                    return open_image(content, self.max_pixels, what=f"embedded texture {name}")
                except CorruptFile:
                    self.unreadable.append(name)
        return None
