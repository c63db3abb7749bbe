"""The .sbsar archive: members checked from the listing, a few read into capped memory, parsed."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import IO, Any
from xml.etree.ElementTree import Element

import py7zr
from py7zr.exceptions import (
    DecompressionBombError,
    PasswordRequired,
    UnsupportedCompressionMethodError,
)
from py7zr.io import Py7zIO, WriterFactory

from tasks.errors import ArchiveRejected, CorruptFile
from tasks.sbs import MAX_GRAPHS, clean, collect, optional

# a block smaller than this cannot hurt whatever its ratio; tiny repetitive XML compresses > 200x
RATIO_FLOOR_BYTES = 1024 * 1024
ICON_MAX_BYTES = 16 * 1024 * 1024

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_ICON_WORDS = ("icon", "thumbnail", "preview")
_DRIVE = re.compile(r"^[A-Za-z]:")
# SBSARTypeEnum of the Substance Automation Toolkit (pysbs sbsarchive/sbsarenum.py)
SBSAR_TYPES = (
    "float1", "float2", "float3", "float4", "integer1", "image",
    "string", "font", "integer2", "integer3", "integer4",
)
_IMAGE_TYPE = 5


@dataclass(frozen=True)
class Member:
    name: str
    size: int


@dataclass(frozen=True)
class Listing:
    """What the archive's header says, checked before a single byte is decompressed."""

    members: tuple[Member, ...]
    total_bytes: int


class _OverCap(Exception):
    """A member decompressed to more bytes than it was allowed."""


class _CappedBuffer(Py7zIO):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = io.BytesIO()

    def write(self, s: bytes | bytearray) -> int:
        if self.buffer.tell() + len(s) > self.limit:
            raise _OverCap
        return self.buffer.write(s)

    def read(self, size: int | None = None) -> bytes:
        return self.buffer.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buffer.seek(offset, whence)

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return len(self.buffer.getbuffer())


class _CappedFactory(WriterFactory):
    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits
        self.products: dict[str, _CappedBuffer] = {}

    def create(self, filename: str) -> Py7zIO:
        product = _CappedBuffer(self.limits.get(filename, 0))
        self.products[filename] = product
        return product


def open_archive(file: IO[bytes], max_bytes: int) -> py7zr.SevenZipFile:
    """Open the 7z header; any decompression through it stops after `max_bytes` in total."""
    try:
        return py7zr.SevenZipFile(file, mode="r", max_extract_size=max_bytes)
    except PasswordRequired as error:
        raise ArchiveRejected(_ENCRYPTED) from error
    except MemoryError:
        raise
    except Exception as error:  # a hostile header reaches many decoders, each with its errors
        raise CorruptFile("The file is not a readable 7z archive (damaged or cut).") from error


_ENCRYPTED = "The archive is password-protected; encrypted Substance archives are not accepted."


def inspect(
    archive: py7zr.SevenZipFile, max_members: int, max_bytes: int, max_ratio: int
) -> Listing:
    """Refuse encryption, too many or unsafe members, too many bytes or a bomb-like ratio."""
    if archive.needs_password():
        raise ArchiveRejected(_ENCRYPTED)
    entries = archive.list()
    if len(entries) > max_members:
        raise ArchiveRejected(
            f"The archive holds {len(entries):,} members; the limit is {max_members:,}."
        )
    seen: set[str] = set()
    members = []
    for entry in entries:
        name = entry.filename
        if not _safe_name(name):
            raise ArchiveRejected(f"The archive holds a member with an unsafe name: {clean(name)}")
        if name in seen:
            raise ArchiveRejected(f"The archive holds two members named {clean(name)!r}.")
        seen.add(name)
        if entry.is_file and not entry.is_directory:
            members.append(Member(name, int(entry.uncompressed)))
    total = sum(m.size for m in members)
    if total > max_bytes:
        raise ArchiveRejected(
            f"The archive unpacks to {total:,} bytes; the limit is {max_bytes:,} bytes."
        )
    _check_ratio(entries, max_ratio)
    return Listing(tuple(members), total)


def _safe_name(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name or _DRIVE.match(name):
        return False
    if any(not c.isprintable() for c in name):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _check_ratio(entries: list[py7zr.FileInfo], max_ratio: int) -> None:
    """Ratio per compressed block: in a solid block py7zr gives the packed size to the first
    member only (the others have `compressed=None`), so sizes are summed per block."""
    blocks: list[list[int]] = []  # [packed, unpacked]
    for entry in entries:
        if not entry.uncompressed:
            continue  # empty members and directories sit outside any block
        if entry.compressed is not None or not blocks:
            blocks.append([int(entry.compressed or 0), 0])
        blocks[-1][1] += int(entry.uncompressed)
    for packed, unpacked in blocks:
        if unpacked >= RATIO_FLOOR_BYTES and unpacked > max_ratio * max(packed, 1):
            raise ArchiveRejected(
                f"A block of the archive expands {unpacked // max(packed, 1):,} times; "
                f"the limit is {max_ratio:,} (a decompression bomb?)."
            )


def description_member(listing: Listing) -> Member:
    """The description XML: like pysbs and 7z-based readers, the first `.xml` at the top level."""
    for member in listing.members:
        if "/" not in member.name and member.name.lower().endswith(".xml"):
            return member
    raise CorruptFile("This is not a Substance archive: it holds no description XML.")


def icon_member(listing: Listing) -> Member | None:
    """The graph icon or preview image: a name saying so first, else the first image."""
    images = [
        m for m in listing.members
        if m.name.lower().endswith(IMAGE_SUFFIXES) and 0 < m.size <= ICON_MAX_BYTES
    ]
    named = [m for m in images if any(w in m.name.lower() for w in _ICON_WORDS)]
    candidates = named or images
    return candidates[0] if candidates else None


def read_members(archive: py7zr.SevenZipFile, wanted: list[tuple[Member, int]]) -> dict[str, bytes]:
    """Decompress only `wanted` members into memory, each stopped at its byte cap."""
    factory = _CappedFactory({m.name: cap for m, cap in wanted})
    try:
        archive.extract(targets=[m.name for m, _ in wanted], factory=factory)
    except PasswordRequired as error:
        raise ArchiveRejected(_ENCRYPTED) from error
    except _OverCap as error:
        raise ArchiveRejected("An archive member unpacks to more than it declares.") from error
    except DecompressionBombError as error:
        raise ArchiveRejected("The archive unpacks to more bytes than allowed.") from error
    except UnsupportedCompressionMethodError as error:
        raise CorruptFile("The archive uses a compression method Kiln cannot read.") from error
    except MemoryError:
        raise
    except Exception as error:  # lzma, bz2, zstd... each decoder has its own errors
        raise CorruptFile("The archive is damaged (bad data or checksum).") from error
    return {name: p.buffer.getvalue() for name, p in factory.products.items()}


def describe_archive_xml(root: Element) -> dict[str, Any]:
    """Graphs, inputs, outputs and presets of an `<sbsdescription>` (pysbs SBSArchive layout)."""
    if root.tag != "sbsdescription":
        raise CorruptFile("This is not a Substance archive: its XML is not an <sbsdescription>.")
    return {
        "format_version": optional(root.get("formatversion")),
        "graphs": collect(root.iterfind("graphs/graph"), _graph, MAX_GRAPHS),
    }


def _graph(graph: Element) -> dict[str, Any]:
    pkgurl = graph.get("pkgurl") or ""
    images: list[Element] = []
    parameters: list[Element] = []
    for entry in graph.iterfind("inputs/input"):
        (images if entry.get("type") == str(_IMAGE_TYPE) else parameters).append(entry)
    return {
        # pysbs names a graph after the last part of its package URL, "pkg://name"
        "identifier": clean(pkgurl.rsplit("/", 1)[-1]),
        "label": optional(graph.get("label")),
        "pkgurl": clean(pkgurl),
        "parameters": collect(parameters, _input),
        "image_inputs": collect(images, _input),
        "outputs": collect(graph.iterfind("outputs/output"), _output),
        "presets": collect(
            graph.iterfind("sbspresets/sbspreset"), lambda p: clean(p.get("label") or "")
        ),
    }


def _input(entry: Element) -> dict[str, Any]:
    gui = entry.find("inputgui")
    widget = None if gui is None else gui.find("guislider")
    if widget is None and gui is not None:
        widget = gui.find("guiangle")
    return {
        "identifier": clean(entry.get("identifier") or ""),
        "label": None if gui is None else optional(gui.get("label")),
        "type": _sbsar_type(entry.get("type")),
        "default": optional(entry.get("default")),
        "min": None if widget is None else optional(widget.get("min")),
        "max": None if widget is None else optional(widget.get("max")),
        "group": None if gui is None else optional(gui.get("group")),
    }


def _sbsar_type(raw: str | None) -> str | None:
    try:
        return SBSAR_TYPES[int(raw or "")]
    except (ValueError, IndexError):
        return optional(raw)


def _output(output: Element) -> dict[str, Any]:
    gui = output.find("outputgui")
    usages = [] if gui is None else [c.get("names") for c in gui.iterfind("channels/channel")]
    return {
        "identifier": clean(output.get("identifier") or ""),
        "label": None if gui is None else optional(gui.get("label")),
        "usages": [clean(u) for u in usages if u],
        "format": optional(output.get("format")),
    }
