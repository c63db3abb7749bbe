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
from PIL import Image

from tasks.progress import Artifact, Progress

LOD_RATIOS = (0.5, 0.1)


TEXTURE_SLOTS = ("image", "baseColorTexture", "metallicRoughnessTexture", "normalTexture",
                 "occlusionTexture", "emissiveTexture")
"""Where trimesh's materials keep their images."""


def write_glb(scene: trimesh.Scene, target: Path) -> Artifact:
    """Export the scene (materials and textures kept) as a binary glTF."""
    _encode_textures_fast(scene)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        data: bytes = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    target.write_bytes(data)
    return {"name": target.name, "media_type": "model/gltf-binary", "size": len(data)}


def _encode_textures_fast(scene: trimesh.Scene) -> None:
    """Ask Pillow for fast texture encodings when trimesh re-encodes them into the GLB.

    trimesh saves every image again (PNG at zlib level 6: 0.25 s for a 1024 px texture; JPEG at
    quality 75, a generation lost). Pillow reads options set on the image itself: PNG at level 1
    (several times faster), JPEG with its own quantisation tables kept.
    """
    for geometry in scene.geometry.values():
        material = getattr(getattr(geometry, "visual", None), "material", None)
        for slot in TEXTURE_SLOTS:
            image = getattr(material, slot, None)
            if isinstance(image, Image.Image):
                keep_jpeg = image.format == "JPEG" and image.mode in ("L", "RGB", "CMYK")
                image.encoderinfo = {"quality": "keep"} if keep_jpeg else {"compress_level": 1}


@dataclass
class Lods:
    """What write_lods made: its artifacts, their summary for the stats, and the smallest level
    (points, faces) for whoever draws the model small."""

    artifacts: list[Artifact] = field(default_factory=list)
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
