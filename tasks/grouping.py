"""Plan the tasks of one upload: a model takes the companion files it names (an OBJ its MTL and
images, a glTF its buffers and images, a COLLADA file its images), the maps of one texture set
become one material task, and every other file is a task of its own.

Light (stdlib only, bounded reads): it runs in the web process before anything is queued.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks import references
from tasks.detect import Detection
from tasks.pbr_names import group_sets
from tasks.references import FileIndex, Reference

MAX_COMPANION_BYTES = 64 * 1024**2
"""An MTL or .gltf bigger than this is not read for names (its references stay unresolved)."""

_CHUNK = 8 * 1024**2
_OVERLAP = 8192


@dataclass(frozen=True)
class UploadFile:
    """One received file: its stored name (unique within the upload) and what its bytes are."""

    name: str
    path: Path
    size: int
    detection: Detection | None


@dataclass(frozen=True)
class Group:
    """One task to create: its kind and format, its main file and every file it owns."""

    kind: str
    format: str
    main: str
    files: tuple[str, ...]


def plan(files: list[UploadFile]) -> tuple[list[Group], list[UploadFile]]:
    """The upload's tasks, in upload order, and the files that are neither readable nor claimed."""
    index = FileIndex(f.name for f in files)
    by_name = {f.name: f for f in files}
    claimed: dict[str, set[str]] = {}  # model name -> companion names
    for file in files:
        if file.detection is not None and file.detection.kind == "mesh":
            found = {index.find(r) for r in _references(file, index, by_name)}
            companions = {name for name in found if name is not None and name != file.name}
            if companions:
                claimed[file.name] = companions
    taken: set[str] = set().union(*claimed.values()) if claimed else set()
    free_textures = [
        f.name for f in files
        if f.name not in taken and f.detection is not None and f.detection.kind == "texture"
    ]
    sets = {min(s.maps.values(), key=_upload_order(files)): s for s in group_sets(free_textures)}
    in_sets = {name for s in sets.values() for name in s.maps.values()}

    groups: list[Group] = []
    refused: list[UploadFile] = []
    for file in files:
        if file.name in sets:
            members = sorted(sets[file.name].maps.values(), key=_upload_order(files))
            groups.append(Group("material", "pbr", file.name, tuple(members)))
        elif file.name in taken or file.name in in_sets:
            continue
        elif file.detection is None:
            refused.append(file)
        else:
            owned = sorted(claimed.get(file.name, set()), key=_upload_order(files))
            groups.append(Group(file.detection.kind, file.detection.format, file.name,
                                (file.name, *owned)))
    return groups, refused


def _upload_order(files: list[UploadFile]) -> Callable[[str], int]:
    order = {f.name: i for i, f in enumerate(files)}
    return lambda name: order.get(name, len(order))


def _references(
    model: UploadFile, index: FileIndex, by_name: dict[str, UploadFile]
) -> Iterator[Reference]:
    assert model.detection is not None
    fmt = model.detection.format
    if fmt == "obj":
        for library in references.obj_libraries(_scan(model.path, references.MTLLIB_LINE)):
            yield library
            found = index.find(library)
            if found is not None and by_name[found].size <= MAX_COMPANION_BYTES:
                text = by_name[found].path.read_bytes().decode("utf-8", errors="replace")
                yield from references.mtl_maps(text)
    elif fmt == "gltf" and model.size <= MAX_COMPANION_BYTES:
        yield from references.gltf_document_uris(model.path.read_bytes())
    elif fmt == "glb":
        yield from references.gltf_document_uris(_glb_json(model.path))
    elif fmt == "dae":
        yield from references.collada_images(_scan(model.path, references.COLLADA_INIT_FROM))


def _scan(path: Path, pattern: re.Pattern[bytes]) -> bytes:
    """The lines of a file that match `pattern`, read in chunks so a huge model costs no memory."""
    found: list[bytes] = []
    tail = b""
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            window = tail + chunk
            found.extend(m.group(0) for m in pattern.finditer(window))
            tail = window[-_OVERLAP:]
            if len(found) > references.MAX_REFERENCES * 2:
                break
    return b"\n".join(found)


def _glb_json(path: Path) -> bytes:
    with path.open("rb") as file:
        header = file.read(20)
        if len(header) < 20 or header[:4] != b"glTF" or header[16:20] != b"JSON":
            return b""
        length = int.from_bytes(header[12:16], "little")
        return file.read(length) if length <= MAX_COMPANION_BYTES else b""
