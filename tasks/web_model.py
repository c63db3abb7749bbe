"""The web-ready outputs of a model: one GLB of the whole scene, and simplified LODs of big ones."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fast_simplification
import numpy as np
import trimesh
from numpy.typing import NDArray

from tasks.progress import Progress

LOD_MIN_FACES = 10_000
"""Below this many faces a model is light enough for the web as it is: no LODs."""
LOD_RATIOS = (0.5, 0.1)


def write_glb(scene: trimesh.Scene, target: Path) -> dict[str, Any]:
    """Export the scene (materials and textures kept) as a binary glTF."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        data: bytes = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    target.write_bytes(data)
    return {"name": target.name, "media_type": "model/gltf-binary", "size": len(data)}


@dataclass
class Lods:
    """What write_lods made: its artifacts, their summary for the stats, and the smallest level
    (points, faces) for whoever draws the model small."""

    artifacts: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    smallest: tuple[NDArray[np.float32], NDArray[np.int32]] | None = None


def write_lods(welded: trimesh.Trimesh, directory: Path, min_faces: int, progress: Progress, *,
               ratios: tuple[float, ...] = LOD_RATIOS) -> Lods:
    """Simplified copies of the (welded) model at each ratio of its faces, as GLB files; nothing
    when it has fewer than `min_faces` faces."""
    lods = Lods()
    if len(welded.faces) < min_faces or not ratios:
        return lods
    points = np.asarray(welded.vertices, dtype=np.float32)
    triangles = np.asarray(welded.faces, dtype=np.int32)
    kept = 1.0
    for level, ratio in enumerate(ratios, start=1):
        progress("lods", (level - 1) / len(ratios))
        # each level is simplified from the one before: the same result for a fraction of the work
        points, triangles = fast_simplification.simplify(
            points, triangles, target_reduction=max(0.0, 1.0 - ratio / kept))
        kept = ratio
        lod = trimesh.Trimesh(vertices=points, faces=triangles, process=False)
        name = f"model-lod{level}.glb"
        lods.artifacts.append(write_glb(trimesh.Scene(lod), directory / name))
        lods.summary.append({"name": name, "ratio": ratio, "faces": len(triangles),
                             "vertices": len(points)})
    progress("lods", 1.0)
    lods.smallest = (points, triangles)
    return lods
