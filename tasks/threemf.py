"""What a 3MF file says about colour, which trimesh does not read: base materials, colour groups
and texture groups (the core specification and its materials extension), per triangle.

`read_appearance` returns, for each object that has such properties, its triangles' corner
colours or texture coordinates, to draw it with (`tasks.mesh.surfaces`), and what the stats
count: the materials (every base material, colour group and texture group) and the textures.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml.ElementTree import iterparse
from numpy.typing import NDArray
from trimesh.util import unique_name

from tasks.errors import CorruptFile, TaskError
from tasks.imaging import open_image, to_display

MODEL_PART = "3D/3dmodel.model"
MARKERS = (b"basematerials", b"colorgroup", b"texture2dgroup")
"""A model part without these words has no colour to read: it is not parsed again."""
PAINT_MAX_TRIANGLES = 500_000
"""Above this many triangles a model's colours are counted but not drawn: parsing them again
triangle by triangle would cost seconds and gigabytes."""
PLAIN = (200, 200, 205, 255)
TEXTURE_SIZE = 1024
"""Textures are shrunk to this for drawing."""


@dataclass
class Painted:
    """One object's triangles as drawn: corner positions, and corner colours or texture
    coordinates (with their image)."""

    corners: NDArray[np.float64]  # (m, 3, 3)
    colours: NDArray[np.uint8] | None = None  # (m, 3, 4)
    uv: NDArray[np.float64] | None = None  # (m, 3, 2), v up from the image's bottom
    texid: str | None = None  # the texture2d the coordinates are in
    texture: NDArray[np.uint8] | None = None  # (h, w, 3|4)


@dataclass
class Appearance:
    painted: dict[str, Painted] = field(default_factory=dict)  # trimesh's geometry name ->
    materials: int = 0
    material_names: list[str] = field(default_factory=list)
    textures: list[str] = field(default_factory=list)


def read_appearance(path: Path, max_pixels: int) -> Appearance:
    """The colours of the 3MF at `path` (already checked against the archive limits)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.lstrip("/").lower(): name for name in archive.namelist()}
            if MODEL_PART.lower() not in names:
                return Appearance()
            model = archive.read(names[MODEL_PART.lower()])
            if not any(marker in model for marker in MARKERS):
                return Appearance()
            if model.count(b"<triangle ") > PAINT_MAX_TRIANGLES:
                return _counted(model)
            return _read(model, archive, names, max_pixels)
    except TaskError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, SyntaxError) as error:
        raise CorruptFile("The 3MF file's materials could not be read.") from error


def _read(model: bytes, archive: zipfile.ZipFile, names: dict[str, str],
          max_pixels: int) -> Appearance:
    found = Appearance()
    colours: dict[str, list[tuple[int, int, int, int]]] = {}  # property group -> its colours
    coordinates: dict[str, tuple[str, list[tuple[float, float]]]] = {}  # -> (texture, uv)
    textures: dict[str, str] = {}  # texture2d id -> its part's path
    consumed: set[str] = set()
    counts: dict[str | None, int] = {}
    for _, element in iterparse(io.BytesIO(model), events=("end",), forbid_dtd=True):
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "basematerials":
            bases = [e for e in element if e.tag.endswith("base")]
            colours[element.get("id", "")] = [_colour(e.get("displaycolor")) for e in bases]
            found.materials += len(bases)
            found.material_names += [e.get("name") or "" for e in bases]
            element.clear()
        elif tag == "colorgroup":
            colours[element.get("id", "")] = [_colour(e.get("color")) for e in element]
            found.materials += 1
            element.clear()
        elif tag == "texture2d":
            textures[element.get("id", "")] = (element.get("path") or "").lstrip("/")
        elif tag == "texture2dgroup":
            points = [(float(e.get("u", 0)), float(e.get("v", 0))) for e in element]
            coordinates[element.get("id", "")] = (element.get("texid", ""), points)
            found.materials += 1
            element.clear()
        elif tag == "object":
            name = unique_name(element.get("name", str(element.get("id"))), consumed, counts)
            consumed.add(name)
            painted = _painted(element, colours, coordinates)
            if painted is not None:
                found.painted[name] = painted
            element.clear()
    found.textures = sorted(set(textures.values()) - {""})
    images: dict[str, NDArray[np.uint8] | None] = {}  # by part: each decoded once, if drawn
    for painted in found.painted.values():
        if painted.texid is not None:
            part = textures.get(painted.texid, "")
            if part not in images:
                images[part] = _image(archive, names, part, max_pixels)
            painted.texture = images[part]
            if painted.texture is None:  # a texture the package lacks: drawn plain
                painted.uv = None
    return found


def _painted(element: Any, colours: dict[str, list[tuple[int, int, int, int]]],
             coordinates: dict[str, tuple[str, list[tuple[float, float]]]]) -> Painted | None:
    """The object's triangles with their corner colours, or texture coordinates when every
    triangle has them in one texture; None when it has no property Kiln can draw."""
    mesh = next((e for e in element if e.tag.endswith("mesh")), None)
    if mesh is None:
        return None
    vertices_element = next((e for e in mesh if e.tag.endswith("vertices")), None)
    triangles_element = next((e for e in mesh if e.tag.endswith("triangles")), None)
    if vertices_element is None or triangles_element is None:
        return None
    points = np.array([[float(v.get("x", 0)), float(v.get("y", 0)), float(v.get("z", 0))]
                       for v in vertices_element], dtype=np.float64).reshape(-1, 3)
    triangles = [[int(t.get(k, 0)) for k in ("v1", "v2", "v3")] for t in triangles_element]
    faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if not len(faces) or faces.min() < 0 or faces.max() >= len(points):
        return None
    corner_colours = np.empty((len(faces), 3, 4), dtype=np.uint8)
    corner_colours[:] = PLAIN
    corner_uv = np.zeros((len(faces), 3, 2))
    coloured, textured, texid = False, 0, None
    default = (element.get("pid"), [element.get("pindex")] * 3)
    for number, triangle in enumerate(triangles_element):
        group, corners = _properties(triangle, default)
        if group in colours:
            picked = _picked(colours[group], corners)
            if picked is not None:
                corner_colours[number] = picked
                coloured = True
        elif group in coordinates:
            texture, table = coordinates[group]
            uv = _picked(table, corners)
            if uv is not None and texid in (None, texture):
                corner_uv[number], texid = uv, texture
                textured += 1
    if texid is not None and textured == len(faces):
        return Painted(points[faces], uv=corner_uv, texid=texid)
    return Painted(points[faces], colours=corner_colours) if coloured else None


def _properties(triangle: Any, default: tuple[str | None, list[str | None]]
                ) -> tuple[str | None, list[str | None]]:
    """The property group and per-corner indices of a triangle, as the core specification
    says: without p1 the object's pid and pindex; without p2 or p3, p1 for every corner."""
    first = triangle.get("p1")
    if first is None:
        return default
    second, third = triangle.get("p2"), triangle.get("p3")
    group = triangle.get("pid", default[0])
    return group, [first, second, third] if second is not None and third is not None \
        else [first] * 3


def _picked(table: list[Any], corners: list[str | None]) -> list[Any] | None:
    """The table's entries at the corners' indices; None when one is missing or out of range."""
    picked = []
    for corner in corners:
        try:
            index = int(corner) if corner is not None else -1
        except ValueError:
            return None
        if not 0 <= index < len(table):
            return None
        picked.append(table[index])
    return picked


def _colour(text: str | None) -> tuple[int, int, int, int]:
    """#RRGGBB or #RRGGBBAA as RGBA; a grey for anything else."""
    digits = (text or "").strip().lstrip("#")
    if len(digits) not in (6, 8):
        return (200, 200, 205, 255)
    try:
        values = [int(digits[i:i + 2], 16) for i in range(0, len(digits), 2)]
    except ValueError:
        return (200, 200, 205, 255)
    r, g, b = values[:3]
    return (r, g, b, values[3] if len(values) == 4 else 255)


def _image(archive: zipfile.ZipFile, names: dict[str, str], part: str,
           max_pixels: int) -> NDArray[np.uint8] | None:
    name = names.get(posixpath.normpath(part).lower()) if part else None
    if name is None:
        return None
    try:
        with open_image(archive.read(name), max_pixels, what="texture of the 3MF") as image:
            shown = to_display(image)
    except TaskError:  # a damaged or oversized image: the triangles are drawn plain
        return None
    shown.thumbnail((TEXTURE_SIZE, TEXTURE_SIZE))
    return np.asarray(shown)


def _counted(model: bytes) -> Appearance:
    """What the stats count of a model too large to draw its colours: its materials, by name
    of element (base materials each, colour and texture groups each), and its textures."""
    found = Appearance()
    found.materials = (len(re.findall(rb"<(?:\w+:)?base\b", model))
                       + len(re.findall(rb"<(?:\w+:)?(?:colorgroup|texture2dgroup)\b", model)))
    found.textures = sorted({path.decode("utf-8", "replace").lstrip("/") for path in re.findall(
        rb"<(?:\w+:)?texture2d\b[^>]*\bpath=\"([^\"]{1,1024})\"", model)})
    return found
