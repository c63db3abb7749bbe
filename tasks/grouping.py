"""Plan the tasks of one upload: a model takes the companion files it names (an OBJ its MTL and
images, a glTF its buffers and images, a COLLADA file its images), the maps of one texture set
become one material task, and every other file is a task of its own.

Light (stdlib only, bounded reads): it runs in the web process before anything is queued.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tasks import references
from tasks.detect import Detection
from tasks.pbr_names import group_sets
from tasks.references import FileIndex, Reference
from tasks.text_encoding import decoded, is_utf16

MAX_COMPANION_BYTES = 16 * 1024**2
"""An MTL bigger than this is not read for names (its references stay unresolved)."""
MAX_JSON_BYTES = 8 * 1024**2
"""A glTF's JSON bigger than this is not parsed for names (json.loads costs ~25× the bytes)."""
MAX_READ_BYTES = 128 * 1024**2
"""Most companion bytes one upload's grouping reads, whatever the number of models."""

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
    reader = _Reader()
    claimed: dict[str, set[str]] = {}  # model name -> companion names
    for file in files:
        if _is_model(file):
            found = {index.find(r) for r in _references(file, index, by_name, reader)}
            # a model is never another's companion: each model is a task of its own
            companions = {name for name in found
                          if name is not None and not _is_model(by_name[name])}
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


def _is_model(file: UploadFile) -> bool:
    return file.detection is not None and file.detection.kind == "mesh"


class _Reader:
    """Reads companion documents for names: each file once, all of them within MAX_READ_BYTES."""

    def __init__(self) -> None:
        self.budget = MAX_READ_BYTES
        self.seen: set[str] = set()

    def read(self, file: UploadFile, cap: int) -> bytes:
        if file.name in self.seen or file.size > min(cap, self.budget):
            return b""
        self.seen.add(file.name)
        self.budget -= file.size
        return file.path.read_bytes()


def _references(
    model: UploadFile, index: FileIndex, by_name: dict[str, UploadFile], reader: _Reader
) -> Iterator[Reference]:
    assert model.detection is not None
    fmt = model.detection.format
    if fmt == "obj":
        libraries = _scan(model.path, lambda window: references.line_matches(
            window, b"mtllib", references.MTLLIB_LINE))
        for library in references.obj_libraries(libraries):
            yield library
            found = index.find(library)
            if found is not None:
                text = reader.read(by_name[found], MAX_COMPANION_BYTES)
                yield from references.mtl_maps(decoded(text))
    elif fmt == "gltf":
        yield from references.gltf_document_uris(reader.read(model, MAX_JSON_BYTES))
    elif fmt == "glb":
        yield from references.gltf_document_uris(_glb_json(model.path))
    elif fmt == "dae":
        yield from references.collada_images(
            _scan(model.path, references.COLLADA_INIT_FROM.finditer))


def _scan(path: Path, matches: Callable[[bytes], Iterator[re.Match[bytes]]]) -> bytes:
    """What `matches` finds in a file, read in chunks so a huge model costs no memory (UTF-16
    turned into UTF-8 as it is read)."""
    found: list[bytes] = []
    tail = b""
    with path.open("rb") as file:
        utf16 = is_utf16(file.read(2))
        file.seek(0)
        text = io.TextIOWrapper(file, encoding="utf-16", errors="replace") if utf16 else None
        while chunk := (text.read(_CHUNK).encode("utf-8") if text else file.read(_CHUNK)):
            window = tail + chunk
            found.extend(m.group(0) for m in matches(window))
            tail = window[-_OVERLAP:]
            if len(found) > references.MAX_REFERENCES * 2:  # each match is at most ~4 KB
                break
    return b"\n".join(found)


def _glb_json(path: Path) -> bytes:
    with path.open("rb") as file:
        header = file.read(20)
        if len(header) < 20 or header[:4] != b"glTF" or header[16:20] != b"JSON":
            return b""
        length = int.from_bytes(header[12:16], "little")
        return file.read(length) if length <= MAX_JSON_BYTES else b""
