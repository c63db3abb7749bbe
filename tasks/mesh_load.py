"""Load one model with its companion files into a trimesh Scene, reading nothing but the upload.

Every format passes Kiln's own checks before its parser runs: references are judged
(tasks.references), archives are listed and capped (tasks.archive), XML may not declare entities,
headers may not promise more elements than the file holds; then the parser's failures become
coded errors.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import trimesh
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from tasks import references
from tasks.archive import ArchiveLimits, check_members, unpack_zip
from tasks.detect import sniff
from tasks.errors import CorruptFile, NoGeometry, TaskError, TooLarge, UnsupportedFormat
from tasks.headers import check_declared_counts
from tasks.names import display_name, distinct_names
from tasks.obj_fast import load_plain_obj
from tasks.references import Reference, Verdict
from tasks.resolver import UploadResolver, unsafe_reference
from tasks.text_encoding import as_utf8, decoded, is_utf16
from tasks.threemf import Painted, read_appearance

_USEMTL = re.compile(rb"[ \t]*usemtl[ \t]+([^\r\n#]*?)[ \t]*\r?$", re.MULTILINE)
MAX_MTL_BYTES = 64 * 1024**2
"""Only this much of an MTL library is read for its texture names."""

# Kiln format -> trimesh file_type, for the formats trimesh parses
FILE_TYPES: dict[str, str] = {
    "obj": "obj", "stl": "stl", "ply": "ply", "off": "off", "glb": "glb", "gltf": "glb",
    "3mf": "3mf", "dae": "dae",
}
NAMES = {"obj": "OBJ", "stl": "STL", "ply": "PLY", "off": "OFF", "glb": "GLB", "gltf": "glTF",
         "3mf": "3MF", "dae": "COLLADA", "fbx": "FBX", "zip": "zip"}


@dataclass
class LoadedModel:
    """A parsed model and what its files said about materials and textures."""

    scene: trimesh.Scene
    format: str
    textures: list[str] = field(default_factory=list)  # referenced texture files, by name
    missing_textures: list[str] = field(default_factory=list)
    materials: list[str] = field(default_factory=list)
    material_count: int | None = None  # every material, named or not, where the file says
    painted: dict[str, Painted] = field(default_factory=dict)  # 3MF colours, by geometry name
    notes: dict[str, Any] = field(default_factory=dict)  # format-specific facts (FBX units...)
    path: Path | None = None  # the main file that was parsed (inside an unpacked zip, for one)


@dataclass(frozen=True)
class Source:
    """Where the model's files are: the main file's name and all the names of the upload."""

    directory: Path
    main: str
    names: tuple[str, ...]
    format: str

    @property
    def path(self) -> Path:
        return self.directory / self.main


_XML_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")


def load_model(source: Source, *, max_pixels: int, work_dir: Path,
               archive_limits: ArchiveLimits) -> LoadedModel:
    """Parse the model; raises TaskError subclasses only."""
    if source.format == "zip":
        return load_model(_unzipped(source, work_dir, archive_limits), max_pixels=max_pixels,
                          work_dir=work_dir, archive_limits=archive_limits)
    data = source.path.read_bytes()
    if source.format in ("obj", "off") or (source.format in ("ply", "stl") and is_utf16(data)):
        data = as_utf8(data)  # UTF-16 or a legacy code page: the parsers read UTF-8
    if not data or data.isspace():
        raise NoGeometry("The file is empty.")
    if source.format == "fbx":
        return _load_fbx(source, max_pixels)
    if source.format not in FILE_TYPES:
        raise UnsupportedFormat(f"{source.format.upper()} models are not supported.")
    check_declared_counts(data, source.format)
    resolver = UploadResolver(source.directory, source.names, max_pixels=max_pixels)
    textures: list[str] = []
    notes: dict[str, Any] = {}
    material_count = None
    if source.format == "obj":
        textures = _obj_textures(data, resolver)
    elif source.format in ("gltf", "glb"):
        from tasks.gltf import self_contained_glb

        data, textures, notes = self_contained_glb(data, source.format, resolver)
        material_count = notes.pop("material_count", None)
    elif source.format == "dae":
        data = _collada_encoding(data)
        _refuse_entities(data)
        textures = _collada_textures(as_utf8(data) if is_utf16(data) else data, resolver)
    elif source.format == "3mf":
        _check_3mf(source.path, archive_limits)
    scene = load_plain_obj(data, resolver) if source.format == "obj" else None
    if scene is None:
        scene = _parse(data, source.format, resolver)
    resolver.check()
    painted: dict[str, Painted] = {}
    named: list[str] = []
    if source.format == "3mf":  # trimesh reads no 3MF colour
        appearance = read_appearance(source.path, max_pixels)
        painted, textures, named = appearance.painted, appearance.textures, \
            appearance.material_names
        material_count = appearance.materials or None
    textures = _unique(textures)
    missing = [t for t in textures if t in resolver.missing]
    # without its MTL, trimesh forgets an OBJ's material names: `usemtl` still has them
    materials = (distinct_names(references.statements(data, b"usemtl", _USEMTL))
                 if source.format == "obj" else distinct_names(named))
    return LoadedModel(scene, source.format, textures=textures, missing_textures=missing,
                       materials=materials, material_count=material_count, painted=painted,
                       notes={**notes, "missing_files": list(resolver.missing)},
                       path=source.path)


def _parse(data: bytes, fmt: str, resolver: UploadResolver) -> trimesh.Scene:
    # an in-memory stream has no `name`: no parser can guess a neighbour path from it
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return trimesh.load_scene(io.BytesIO(data), file_type=FILE_TYPES[fmt],
                                      resolver=resolver)
    except TaskError:
        raise
    except MemoryError as error:
        raise TooLarge("The model needs more memory to load than a task may use.") from error
    except Exception as error:  # any parser failure is the file's fault, never a crash
        resolver.check()
        message = f"The file could not be read as {NAMES[fmt]}: it is damaged or invalid."
        raise CorruptFile(message) from error


def _obj_textures(data: bytes, resolver: UploadResolver) -> list[str]:
    """Judge every library and map the OBJ names before trimesh reads any of them."""
    libraries = references.obj_libraries(data)
    _refuse_unsafe(libraries)
    maps: list[Reference] = []
    for library in libraries:
        found = resolver.find(library.raw)
        if found is None:
            continue
        resolver.allow_document(found)
        with (resolver.directory / found).open("rb") as file:
            text = decoded(file.read(MAX_MTL_BYTES))
        maps.extend(references.mtl_maps(text))
    _refuse_unsafe(maps)
    return _unique([_texture_name(m, resolver) for m in maps])


def _collada_textures(data: bytes, resolver: UploadResolver) -> list[str]:
    images = references.collada_images(data)
    _refuse_unsafe(images)
    return _unique([_texture_name(i, resolver) for i in images])


def _texture_name(reference: Reference, resolver: UploadResolver) -> str:
    found = resolver.find(reference.raw)
    return display_name(found if found is not None else reference.basename) or "?"


def _refuse_unsafe(found: list[Reference]) -> None:
    for reference in found:
        if reference.verdict is Verdict.UNSAFE:
            raise unsafe_reference(reference)


def _collada_encoding(data: bytes) -> bytes:
    """The COLLADA document as its XML parser reads it: one that declares no encoding (or
    UTF-8) yet is not UTF-8 was written in a legacy code page, and becomes UTF-8. UTF-16 and
    declared encodings are the parser's own business."""
    if is_utf16(data):
        return data
    declared = _XML_ENCODING.match(data[:256])
    if declared is None or declared.group(1).lower() in (b"utf-8", b"utf8"):
        return as_utf8(data)
    return data


def _refuse_entities(data: bytes) -> None:
    """COLLADA's parser would expand entities (and read files they name): refuse any DTD."""
    try:
        defused_fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise CorruptFile("The COLLADA file declares a DTD or entities, which Kiln refuses.") \
            from error
    except Exception as error:
        raise CorruptFile("The file could not be read as COLLADA: its XML is not valid.") \
            from error


def _check_3mf(path: Path, limits: ArchiveLimits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            check_members(archive.infolist(), limits)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CorruptFile("The 3MF file is not a readable zip package.") from error


def _unzipped(source: Source, work_dir: Path, limits: ArchiveLimits) -> Source:
    directory = work_dir / "unzipped"
    names = unpack_zip(source.path, directory, limits)
    models = []
    for name in names:  # the bytes decide what a member is, as for an upload
        detection = sniff(directory / name)
        if detection is not None and detection.kind == "mesh" and detection.format != "zip":
            models.append((name, detection.format))
    root = _zae_root(directory, names)
    if root is not None and (root, "dae") in models:
        models = [(root, "dae")]
    if len(models) != 1:
        found = "no model Kiln reads" if not models else f"{len(models)} models"
        raise UnsupportedFormat(f"The zip archive must hold exactly one model; it holds {found}.")
    return Source(directory, models[0][0], tuple(names), models[0][1])


def _zae_root(directory: Path, names: list[str]) -> str | None:
    """The document a COLLADA archive's (.zae) manifest.xml names as its root, if any."""
    manifest = next((n for n in names if n.lower() == "manifest.xml"), None)
    if manifest is None:
        return None
    try:
        root = defused_fromstring((directory / manifest).read_bytes()[:65536])
    except Exception:  # a damaged or hostile manifest names nothing
        return None
    text = root.text if root.tag.rsplit("}", 1)[-1] == "dae_root" else None
    if not text:
        return None
    wanted = unquote(text.strip()).removeprefix("./")
    return next((n for n in names if n == wanted), None)


def _load_fbx(source: Source, max_pixels: int) -> LoadedModel:
    from tasks.fbx import load_fbx

    model = load_fbx(source.path, max_pixels=max_pixels)
    index = references.FileIndex(source.names)
    present = [t for t in model.missing_textures
               if index.find(references.classify(t)) is not None]
    missing = [t for t in model.missing_textures if t not in present]
    return LoadedModel(model.scene, "fbx", textures=list(model.textures),
                       missing_textures=missing, materials=list(model.materials),
                       notes={"unit_scale": model.unit_scale, "up_axis": model.up_axis,
                              "embedded_textures": model.embedded_textures},
                       path=source.path)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))
