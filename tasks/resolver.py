"""The only way a parser may reach another file: by name, among the task's own uploaded files.

Parsers (trimesh's OBJ, COLLADA and glTF readers) swallow their resolver's exceptions, so the
resolver remembers what it refused and `check()` raises it once the parser returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from trimesh.resolvers import Resolver

from tasks.errors import TaskError, TooLarge, UnsafeReference
from tasks.imaging import open_image, safe_label
from tasks.names import display_name
from tasks.references import FileIndex, Reference, Verdict, classify
from tasks.text_encoding import as_utf8

MAX_COMPANION_BYTES = 512 * 1024**2


def unsafe_reference(reference: Reference) -> UnsafeReference:
    """The error for a reference Kiln will not follow; it describes it without repeating it."""
    return UnsafeReference(
        f"The model refers to a file by {reference.why}; Kiln reads only the files uploaded "
        "with the model, named relative to it.")


class UploadResolver(Resolver):
    """Resolve names among `names` (files inside `directory`), images through the allow-list."""

    def __init__(self, directory: Path, names: Iterable[str], *, max_pixels: int,
                 max_bytes: int = MAX_COMPANION_BYTES) -> None:
        self.directory = directory
        self.index = FileIndex(names)
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.used: list[str] = []
        self.documents: set[str] = set()
        self.missing: list[str] = []
        self.errors: list[TaskError] = []

    def find(self, raw: str) -> str | None:
        """The upload's file that `raw` names (as written, or percent-decoded); an unsafe
        reference is an error, kept for check()."""
        reference = classify(raw)
        if reference.verdict is Verdict.UNSAFE:
            self._fail(unsafe_reference(reference))
            return None
        found = self.index.find(reference)
        if found is None and "%" in raw:  # a URI (COLLADA's init_from): "my%20texture.png"
            decoded = classify(unquote(raw))
            if decoded.verdict is Verdict.UNSAFE:
                self._fail(unsafe_reference(decoded))
                return None
            found = self.index.find(decoded)
            if found is not None or decoded.verdict is Verdict.NAME:
                reference = decoded  # missing, it is named as decoded (as its model shows it)
        if found is None and reference.verdict is Verdict.NAME:
            label = display_name(reference.basename) or "?"
            if label not in self.missing:
                self.missing.append(label)
        return found

    def allow_document(self, name: str) -> None:
        """Let parsers read `name` (an upload file) as a document, not as an image: an MTL."""
        self.documents.add(name)

    def read(self, name: str) -> bytes:
        """The bytes of the upload's file `name` names, unchecked (the caller checks them)."""
        return self._located(name)[1]

    def get(self, name: str) -> bytes:
        """For parsers: a document allowed by `allow_document`, or else an image, which is
        decoded once through the allow-list and the pixel cap before the parser sees it
        (parsers open images with every Pillow plugin)."""
        found, data = self._located(name)
        if found in self.documents:
            # a material library in UTF-16 or a legacy code page: its parser reads UTF-8
            return as_utf8(data) if found.lower().endswith(".mtl") else data
        try:
            open_image(data, self.max_pixels, what=f"texture {safe_label(found)}").close()
        except TaskError as error:
            self._fail(error)
            raise FileNotFoundError("refused") from error
        return data

    def _located(self, name: str) -> tuple[str, bytes]:
        found = self.find(name)
        if found is None:
            raise FileNotFoundError("not among the uploaded files")
        path = self.directory / found
        if path.stat().st_size > self.max_bytes:
            self._fail(TooLarge(f"The file {safe_label(found)} is too large to read."))
            raise FileNotFoundError("too large")
        if found not in self.used:
            self.used.append(found)
        return found, path.read_bytes()

    def _fail(self, error: TaskError) -> None:
        self.errors.append(error)

    def check(self) -> None:
        """Raise the first refusal: unsafe references before anything else."""
        for error in self.errors:
            if isinstance(error, UnsafeReference):
                raise error
        if self.errors:
            raise self.errors[0]

    def write(self, name: str, data: Any) -> None:
        raise PermissionError("the resolver is read-only")

    def namespaced(self, namespace: str) -> UploadResolver:
        return self

    def keys(self) -> Iterator[str]:
        return iter(())
