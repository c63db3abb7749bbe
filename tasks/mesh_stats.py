"""What a model measures: counts, bounds, area, volume, bodies, materials and textures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh
from numpy.typing import NDArray

from tasks.errors import CorruptFile, NoGeometry
from tasks.mesh_load import LoadedModel
from tasks.names import MAX_NAMES, distinct_names
from tasks.progress import Progress
from tasks.topology import surface_facts, weld


@dataclass
class Measured:
    """The statistics, and the welded model they were taken from (simplified for the LODs)."""

    stats: dict[str, Any]
    welded: trimesh.Trimesh


def measure(
    model: LoadedModel, progress: Progress,
    on_welded: Callable[[trimesh.Trimesh], None] | None = None,
) -> Measured:
    """Statistics of the model as placed by its scene graph, in scene units. `on_welded` gets the
    welded model as soon as it exists, before the slower facts are taken from it."""
    stats, welded = _measure(model.scene, progress, on_welded)
    names = model.materials or material_names(model.scene, model.format)
    stats.update(
        materials=len(names) if model.material_count is None else model.material_count,
        material_names=names,
        textures=len(model.textures), texture_names=model.textures[:MAX_NAMES],
        missing_textures=model.missing_textures[:MAX_NAMES],
    )
    return Measured(stats, welded)


def _measure(
    scene: trimesh.Scene, progress: Progress,
    on_welded: Callable[[trimesh.Trimesh], None] | None,
) -> tuple[dict[str, Any], trimesh.Trimesh]:
    """Statistics of the model as placed by its scene graph, in scene units."""
    instances = list(mesh_instances(scene))
    if not instances:
        points = sum(len(getattr(g, "vertices", ())) for g in scene.geometry.values())
        if points:
            raise NoGeometry(f"The file is a point cloud with {points} points and no faces.")
        raise NoGeometry("The file holds no vertices.")
    progress("analyse", 0.0)
    vertices, faces = _place(instances, progress)
    # topology is about positions: weld the seams that UVs, normals and materials split apart
    welded = weld(vertices, faces)
    if welded is None:
        merged = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
        welded = (np.asarray(merged.vertices, dtype=np.float64),
                  np.asarray(merged.faces, dtype=np.int64))
    model = trimesh.Trimesh(vertices=welded[0], faces=welded[1], process=False)
    if on_welded is not None:
        on_welded(model)
    progress("analyse", 0.75)
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    facts = surface_facts(*welded)
    area, volume = facts.area, facts.volume
    if not np.isfinite([*low, *high, area, volume or 0.0]).all():
        raise CorruptFile("The model's coordinates are too large to measure.")
    stats = {
        "meshes": len(instances),
        "vertices": len(vertices),
        "faces": len(faces),
        "bounds": [low.tolist(), high.tolist()],
        "size": (high - low).tolist(),
        "area": area,
        "watertight": facts.watertight,
        "volume": volume,
        "bodies": facts.bodies,
    }
    progress("analyse", 1.0)
    return stats, model


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


def mesh_instances(
    scene: trimesh.Scene,
) -> Iterator[tuple[NDArray[np.float64], trimesh.Trimesh]]:
    """(world matrix, mesh) of every placed mesh that has faces."""
    for node in scene.graph.nodes_geometry:
        matrix, name = scene.graph[node]
        geometry = scene.geometry.get(name)
        if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
            yield np.asarray(matrix, dtype=np.float64), geometry


def material_names(scene: trimesh.Scene, fmt: str) -> list[str]:
    """The names of the materials the placed meshes use (OBJ names are read at load)."""
    if fmt not in ("glb", "gltf", "dae", "3mf"):
        return []  # trimesh invents "material_0" for formats that have no material names
    materials = (getattr(g.visual, "material", None) for _, g in mesh_instances(scene))
    return distinct_names(m.name for m in materials if m is not None and isinstance(m.name, str))
