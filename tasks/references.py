"""The file references a model carries (OBJ `mtllib`, MTL maps, glTF URIs, COLLADA images), and
which of them may be followed: only a plain relative name, looked up among the upload's own files.

Light on purpose (stdlib only): the web process groups uploads with it, the child loads with it.
"""

from __future__ import annotations

import json
import posixpath
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from tasks.text_encoding import decoded

MAX_REFERENCES = 1000
"""A model naming more files than this is not scanned further (its extra names stay unresolved)."""

MTLLIB_LINE = re.compile(rb"^[ \t]*mtllib[ \t]+([^\r\n#]{1,4096})", re.MULTILINE)
# map statements and their options that take arguments (the file name is what remains at the end)
_MTL_MAP = re.compile(
    r"^[ \t]*(map_Kd|map_Ka|map_Ks|map_Ke|map_Ns|map_d|map_bump|map_Bump|bump|disp|decal|refl|"
    r"norm|map_Pr|map_Pm|map_Ps|map_Tr|map_Disp|map_Norm)[ \t]+([^\r\n#]+)",
    re.MULTILINE,
)
_MTL_OPTION_ARGS = {
    "-blendu": 1, "-blendv": 1, "-boost": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3,
    "-texres": 1, "-clamp": 1, "-bm": 1, "-imfchan": 1, "-type": 1, "-cc": 1,
}
# no nested quantifiers: a backtracking pattern here would stall the web process (ReDoS)
COLLADA_INIT_FROM = re.compile(rb"<init_from>([^<]{1,4096})</init_from>")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


class Verdict(StrEnum):
    """What a reference is allowed to be."""

    NAME = "name"  # a relative name inside the upload: resolved by name among its files
    DATA = "data"  # an inline `data:` URI (glTF): decoded, size-capped
    UNSAFE = "unsafe"  # absolute, parent directory, file:/http(s): or another scheme: refused


@dataclass(frozen=True)
class Reference:
    """One reference as written in the file, and what Kiln makes of it."""

    raw: str
    verdict: Verdict
    name: str = ""  # for NAME: the normalised relative path (forward slashes, no `./`)
    why: str = ""  # for UNSAFE: a description that never repeats the reference itself

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def classify(raw: str) -> Reference:
    """Judge one reference. Windows `.\\` separators are accepted; `..` never is."""
    # names as macOS writes them (NFD) match names as uploads store them (NFC)
    text = unicodedata.normalize("NFC", raw).strip().strip('"').strip()
    if text.startswith("data:"):
        return Reference(raw, Verdict.DATA)
    scheme = _SCHEME.match(text)
    if scheme and not _WINDOWS_DRIVE.match(text):
        kind = scheme.group(1).lower()
        why = {"file": "a file: URI", "http": "a web address", "https": "a web address"}.get(
            kind, "a URI")
        return Reference(raw, Verdict.UNSAFE, why=why)
    path = text.replace("\\", "/")
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return Reference(raw, Verdict.UNSAFE, why="an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return Reference(raw, Verdict.UNSAFE, why="a path into a parent directory")
    if not parts or "\x00" in path:
        return Reference(raw, Verdict.UNSAFE, why="an empty or invalid name")
    return Reference(raw, Verdict.NAME, name=posixpath.join(*parts))


def obj_libraries(data: bytes) -> list[Reference]:
    """The MTL libraries an OBJ names (`mtllib a.mtl b.mtl`; names with spaces are one name)."""
    found: list[Reference] = []
    for statement in statements(data, b"mtllib", MTLLIB_LINE):
        line = statement.split("#", 1)[0].strip()
        names = [line] if line.lower().count(".mtl") <= 1 else line.split()
        found.extend(classify(n) for n in names if n)
        if len(found) >= MAX_REFERENCES:
            break
    return _unique(found)


def statements(data: bytes, keyword: bytes, pattern: re.Pattern[bytes]) -> Iterator[str]:
    """Group 1 of `pattern` matched at the start of every line holding `keyword`."""
    for match in line_matches(data, keyword, pattern):
        yield decoded(match.group(1))  # UTF-8, or a legacy code page's "Café"


def line_matches(
    data: bytes, keyword: bytes, pattern: re.Pattern[bytes]
) -> Iterator[re.Match[bytes]]:
    """`pattern` matched at the start of every line holding `keyword`, the lines found with
    bytes.find: a MULTILINE regex would try every line of a huge OBJ."""
    position = data.find(keyword)
    while position >= 0:
        start = data.rfind(b"\n", 0, position) + 1
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end
        match = pattern.match(data, start, min(end, start + 8192))
        if match:
            yield match
        position = data.find(keyword, end)


def mtl_maps(text: str) -> list[Reference]:
    """The image files an MTL library's map statements name, options skipped."""
    found: list[Reference] = []
    for match in _MTL_MAP.finditer(text):
        name = _strip_map_options(match.group(2).split())
        if name:
            found.append(classify(name))
        if len(found) >= MAX_REFERENCES:
            break
    return _unique(found)


def _strip_map_options(words: list[str]) -> str:
    index = 0
    while index < len(words) and words[index] in _MTL_OPTION_ARGS:
        index += 1 + _MTL_OPTION_ARGS[words[index]]
    return " ".join(words[index:])


def gltf_uris(tree: object) -> list[Reference]:
    """Every buffer and image URI of a glTF JSON document."""
    if not isinstance(tree, dict):
        return []
    found: list[Reference] = []
    for section in ("buffers", "images"):
        items = tree.get(section)
        if not isinstance(items, list):
            continue
        for item in items[:MAX_REFERENCES]:
            if isinstance(item, dict) and isinstance(item.get("uri"), str):
                found.append(classify(item["uri"]))
    return _unique(found)


def gltf_document_uris(data: bytes) -> list[Reference]:
    """`gltf_uris` of a .gltf file's bytes; nothing when it is not valid JSON."""
    try:
        return gltf_uris(json.loads(data))
    except (ValueError, RecursionError):
        return []


def collada_images(data: bytes) -> list[Reference]:
    """The image files a COLLADA document's `<init_from>` elements name (URL-encoded or not)."""
    from urllib.parse import unquote

    found = []
    for match in COLLADA_INIT_FROM.finditer(data):
        text = unquote(decoded(match.group(1))).strip()
        if text.startswith("./"):
            text = text[2:]
        if "." not in text.rsplit("/", 1)[-1]:
            continue  # a <surface>'s init_from names an image id, not a file
        found.append(classify(text))
        if len(found) >= MAX_REFERENCES:
            break
    return _unique(found)


def unsafe(references: Iterable[Reference]) -> Iterator[Reference]:
    return (r for r in references if r.verdict is Verdict.UNSAFE)


def _unique(references: list[Reference]) -> list[Reference]:
    seen: set[str] = set()
    kept = []
    for reference in references:
        if reference.raw not in seen:
            seen.add(reference.raw)
            kept.append(reference)
    return kept


class FileIndex:
    """The upload's files by name, for resolving references: the exact relative path first, then
    the base name, both without regard to case (models made on Windows disagree with their files'
    case). Nothing outside this index is ever reachable."""

    def __init__(self, names: Iterable[str]) -> None:
        self._by_path: dict[str, str] = {}
        self._by_base: dict[str, str] = {}
        for name in names:
            key = _key(name)
            self._by_path.setdefault(key, name)
            self._by_base.setdefault(key.rsplit("/", 1)[-1], name)

    def find(self, reference: Reference) -> str | None:
        """The upload's file a NAME reference means, or None when it is not in the upload."""
        if reference.verdict is not Verdict.NAME:
            return None
        return self._by_path.get(_key(reference.name)) or self._by_base.get(
            _key(reference.basename))


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).lower()
