"""The web-ready outputs of a model: one GLB of the whole scene, and simplified LODs of big ones."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fast_simplification
import numpy as np
import trimesh
from numpy.typing import NDArray
from PIL import Image

from tasks.clustering import clustered
from tasks.progress import Artifact, Progress

LOD_RATIOS = (0.5, 0.1)
LOD_TOLERANCE = 0.05
"""How far (a share of the faces) a LOD may land from its ratio before clustering steps in,
and before its summary says why."""


TEXTURE_SLOTS = ("image", "baseColorTexture", "metallicRoughnessTexture", "normalTexture",
                 "occlusionTexture", "emissiveTexture")
"""Where trimesh's materials keep their images."""
ENCODED = "kiln_encoded"
"""The attribute of a texture image that holds the bytes it was read from."""


def write_glb(scene: trimesh.Scene, target: Path) -> Artifact:
    """Export the scene (materials and textures kept) as a binary glTF."""
    _encode_textures_fast(scene)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        data: bytes = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    target.write_bytes(data)
    return {"name": target.name, "media_type": "model/gltf-binary", "size": len(data)}


def keep_encoded_textures(scene: trimesh.Scene) -> None:
    """Note each texture's PNG or JPEG bytes while the image still holds them (decoding it lets
    go of them): `write_glb` then embeds them as they are."""
    for image in _textures(scene):
        read = getattr(image, "fp", None)
        # EXIF (an orientation that viewers apply, a camera's whereabouts) is not passed on:
        # such images are encoded afresh, which drops it
        if (image.format in ("PNG", "JPEG") and isinstance(read, io.BytesIO)
                and "exif" not in image.info):
            setattr(image, ENCODED, read.getvalue())


def _encode_textures_fast(scene: trimesh.Scene) -> None:
    """Spare trimesh re-encoding every texture into the GLB (0.25 s for a 1024 px PNG).

    A texture as it was read from a PNG or JPEG (`keep_encoded_textures`) goes in as those very
    bytes, which loading it checked. The rest are encoded with options Pillow reads from the
    image itself: PNG at level 1 (several times faster than trimesh's 6), JPEG with its own
    quantisation tables kept (trimesh's quality 75 would lose a generation).
    """
    keep_encoded_textures(scene)  # those not decoded yet
    for image in _textures(scene):
        encoded = getattr(image, ENCODED, None)
        if isinstance(encoded, bytes):
            image.save = _saves_as_read(image, encoded)  # type: ignore[method-assign]
            continue
        keep_jpeg = image.format == "JPEG" and image.mode in ("L", "RGB", "CMYK")
        image.encoderinfo = {"quality": "keep"} if keep_jpeg else {"compress_level": 1}


def _textures(scene: trimesh.Scene) -> Iterator[Image.Image]:
    for geometry in scene.geometry.values():
        material = getattr(getattr(geometry, "visual", None), "material", None)
        for slot in TEXTURE_SLOTS:
            image = getattr(material, slot, None)
            if isinstance(image, Image.Image):
                yield image


def _saves_as_read(image: Image.Image, encoded: bytes) -> Callable[..., None]:
    """`image.save` that writes `encoded` (the bytes the image was read from) when asked for
    the format they are in, and saves as Pillow does otherwise."""
    save = image.save

    def saved(fp: Any, format: str | None = None, **params: Any) -> None:  # noqa: A002
        if format is not None and format.upper() == image.format and hasattr(fp, "write"):
            fp.write(encoded)
        else:
            save(fp, format, **params)

    return saved


def _simplified(
    points: NDArray[np.float32], triangles: NDArray[np.int32], original: int, ratio: float,
) -> tuple[NDArray[np.float32], NDArray[np.int32], dict[str, Any]]:
    """The mesh simplified to `ratio` of `original` faces, and what its summary says: quadric
    collapses first; vertex clustering where they stop short (by more than LOD_TOLERANCE)."""
    target = max(1, round(original * ratio))
    simpler, faces = fast_simplification.simplify(
        points, triangles, target_reduction=max(0.0, 1.0 - target / max(len(triangles), 1)))
    points = np.asarray(simpler, dtype=np.float32)
    triangles = np.asarray(faces, dtype=np.int32)
    entry: dict[str, Any] = {"ratio": ratio, "method": "quadric"}
    stalled = len(triangles) / original
    if stalled > ratio + LOD_TOLERANCE:
        coarser = clustered(points, triangles, target)
        closer = abs(len(coarser[1]) / original - ratio) < abs(stalled - ratio)
        stopped = (f"Quadric simplification stopped at {stalled:.0%} of the faces: open edges, "
                   "edges shared by more than two faces and loose parts do not collapse.")
        if closer and len(coarser[1]):
            points, triangles = coarser
            entry.update(method="clustering", why=f"{stopped} Vertex clustering took it further.")
        else:
            entry["why"] = f"{stopped} Vertex clustering came no closer."
    reached = len(triangles) / original
    if abs(reached - ratio) > LOD_TOLERANCE:
        entry["why"] = " ".join(filter(None, [entry.get("why"), (
            f"The simplified model keeps {reached:.0%} of the faces: "
            + ("the mesh is too small or too loose to come closer." if reached < ratio
               else "no coarser mesh keeps its shape."))]))
    entry.update(faces=len(triangles), vertices=len(points), reached=round(reached, 4))
    return points, triangles, entry


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
    original = len(triangles)
    for level, ratio in enumerate(ratios, start=1):
        progress("lods", (level - 1) / len(ratios))
        # each level is simplified from the one before: the same result for a fraction of the work
        points, triangles, entry = _simplified(points, triangles, original, ratio)
        lod = trimesh.Trimesh(vertices=points, faces=triangles, process=False)
        name = f"model-lod{level}.glb"
        lods.artifacts.append(write_glb(trimesh.Scene(lod), directory / name))
        lods.summary.append({"name": name, **entry})
    progress("lods", 1.0)
    lods.smallest = (points, triangles)
    return lods
