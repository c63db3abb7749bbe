"""A bounded reader of the FBX file itself: GlobalSettings and embedded images, nothing else."""

from __future__ import annotations

import binascii
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tasks.errors import CorruptFile
from tasks.names import display_name

MAX_RECORDS = 1_000_000  # records of one binary list the reader walks through
MAX_EMBEDDED = 1000
_BINARY_MAGIC = b"Kaydara FBX Binary  \x00"
_ASCII_HEAD = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*;[ \t]*FBX|^\s*FBXHeaderExtension:\s*\{", re.MULTILINE
)
_SETTINGS = ("UpAxis", "UpAxisSign", "FrontAxis", "FrontAxisSign", "CoordAxis", "CoordAxisSign",
             "UnitScaleFactor")
_ASCII_SETTING = re.compile(
    rb'P:\s*"(' + b"|".join(s.encode() for s in _SETTINGS) + rb')"\s*,\s*"[^"]*"\s*,'
    rb'\s*"[^"]*"\s*,\s*"[^"]*"\s*,\s*([-+0-9.eE]+)'
)
_ASCII_GLOBAL = re.compile(rb"^[ \t]*GlobalSettings:\s*\{", re.MULTILINE)
_ASCII_VIDEO = re.compile(rb"^[ \t]*Video:[^\n{]*\{", re.MULTILINE)
_ASCII_TOKEN = re.compile(rb'"[^"]*"|[{}]')
_ASCII_FILENAME = re.compile(rb'^\s*(Relative|)File[Nn]ame:\s*"([^"]*)"', re.MULTILINE)
_ASCII_CONTENT = re.compile(rb'Content:\s*,?\s*((?:"[^"]*"\s*,?\s*)+)')
_SCALARS = {b"Y": struct.Struct("<h"), b"C": struct.Struct("<?"), b"I": struct.Struct("<i"),
            b"F": struct.Struct("<f"), b"D": struct.Struct("<d"), b"L": struct.Struct("<q")}
_ARRAY_CODES = frozenset(b"fdlibc")


@dataclass
class FileFacts:
    """What the bounded reader learnt from the file itself: settings and embedded images."""

    settings: dict[str, float] = field(default_factory=dict)
    embedded: dict[str, bytes] = field(default_factory=dict)  # lower-cased basename -> bytes


class _Unreadable(Exception):
    """The binary layout is inconsistent; assimp's tokenizer checks the same offsets, so the file
    is refused before assimp runs."""


def read_facts(data: bytes) -> FileFacts:
    """The GlobalSettings values and embedded images of the binary or text FBX in `data`.

    Raises CorruptFile when `data` is not FBX or its binary layout is inconsistent.
    """
    facts = FileFacts()
    if data.startswith(_BINARY_MAGIC):
        if len(data) < 27:
            raise CorruptFile("The file could not be read as FBX: it is truncated.")
        try:
            _read_binary(data, facts)
        except (_Unreadable, struct.error) as error:
            raise CorruptFile("The file could not be read as FBX: it is damaged.") from error
    elif _ASCII_HEAD.search(data[:8192]):
        _read_ascii(data, facts)
    else:
        raise CorruptFile("The file could not be read as FBX: it is neither binary nor text FBX.")
    return facts


def _read_binary(data: bytes, facts: FileFacts) -> None:
    (version,) = struct.unpack_from("<I", data, 23)
    if not 2000 <= version < 20000:
        raise _Unreadable("implausible version")
    head = struct.Struct("<QQQB" if version >= 7500 else "<IIIB")
    for top in _records(data, 27, len(data), head):
        if top.name == b"GlobalSettings":
            for table in _children(data, top, head, b"Properties70"):
                for record in _children(data, table, head, b"P"):
                    values = _properties(data, record)
                    if len(values) >= 5 and isinstance(values[0], bytes):
                        _setting(facts, values[0], values[4])
        elif top.name == b"Objects":
            for video in _children(data, top, head, b"Video"):
                found: dict[bytes, Any] = {}
                for child in _records(data, video.props_end, video.end, head):
                    if child.name in (b"Filename", b"RelativeFilename", b"Content"):
                        values = _properties(data, child)
                        found[child.name] = values[0] if values else None
                names = [found.get(b"RelativeFilename"), found.get(b"Filename")]
                _embed(facts, names, found.get(b"Content"))


class _Record(NamedTuple):
    name: bytes
    properties: int
    props_start: int
    props_end: int  # where the nested records begin
    end: int


def _records(data: bytes, start: int, end: int, head: struct.Struct) -> Iterator[_Record]:
    """The records of one list, checked to nest inside [start, end); a null record ends it."""
    position = start
    for _ in range(MAX_RECORDS):
        if position + head.size > end:
            return
        record_end, count, length, name_length = head.unpack_from(data, position)
        if record_end == 0:
            return
        name_start = position + head.size
        props_start = name_start + name_length
        if not props_start + length <= record_end <= end:
            raise _Unreadable("a record does not fit in its parent")
        yield _Record(data[name_start:props_start], count, props_start, props_start + length,
                      record_end)
        position = record_end
    raise _Unreadable("too many records")


def _children(
    data: bytes, parent: _Record, head: struct.Struct, name: bytes
) -> Iterator[_Record]:
    records = _records(data, parent.props_end, parent.end, head)
    return (record for record in records if record.name == name)


def _properties(data: bytes, record: _Record) -> list[Any]:
    """Scalar and string properties; arrays are skipped (None), never inflated."""
    values: list[Any] = []
    position = record.props_start
    for _ in range(min(record.properties, 64)):
        code = data[position : position + 1]
        position += 1
        if code in _SCALARS:
            values.append(_SCALARS[code].unpack_from(data, position)[0])
            position += _SCALARS[code].size
        elif code in (b"S", b"R"):
            (length,) = struct.unpack_from("<I", data, position)
            position += 4 + length
            if position > record.props_end:
                raise _Unreadable("a string runs past its record")
            values.append(data[position - length : position])
        elif code and code[0] in _ARRAY_CODES:
            _, _, length = struct.unpack_from("<III", data, position)
            position += 12 + length
            values.append(None)
        else:
            raise _Unreadable("unknown property type")
        if position > record.props_end:
            raise _Unreadable("a property runs past its record")
    return values


def _read_ascii(data: bytes, facts: FileFacts) -> None:
    found = _ASCII_GLOBAL.search(data)
    block = _ascii_block(data, found.end()) if found else None
    if block is not None:
        for key, value in _ASCII_SETTING.findall(block):
            try:
                _setting(facts, key, float(value))
            except ValueError:
                continue
    for count, video in enumerate(_ASCII_VIDEO.finditer(data)):
        if count == MAX_EMBEDDED or (block := _ascii_block(data, video.end())) is None:
            break
        names = dict(_ASCII_FILENAME.findall(block))
        content = _ASCII_CONTENT.search(block)
        if content is not None:
            chunks = b"".join(re.findall(rb'"([^"]*)"', content.group(1)))
            try:
                decoded: bytes | None = binascii.a2b_base64(chunks, strict_mode=True)
            except binascii.Error:
                decoded = None
            _embed(facts, [names.get(b"Relative"), names.get(b"")], decoded)


def _ascii_block(data: bytes, start: int) -> bytes | None:
    """The text of the {...} block opened just before `start`; quoted braces do not count."""
    depth = 1
    for token in _ASCII_TOKEN.finditer(data, start):
        depth += {b"{": 1, b"}": -1}.get(token.group(), 0)
        if depth == 0:
            return data[start : token.start()]
    return None


def _setting(facts: FileFacts, key: bytes, value: object) -> None:
    name = key.decode("ascii", errors="replace")
    if name in _SETTINGS and isinstance(value, int | float) and np.isfinite(value):
        facts.settings[name] = float(value)


def _embed(facts: FileFacts, names: list[Any], content: object) -> None:
    if not isinstance(content, bytes) or not content or len(facts.embedded) >= MAX_EMBEDDED:
        return
    for raw in names:
        if isinstance(raw, bytes) and (name := basename(raw.decode("utf-8", "replace"))):
            facts.embedded.setdefault(name.lower(), content)
            return


def basename(path: str) -> str:
    """The last component of a path taken from the file (either slash), made safe to show."""
    return display_name(path.replace("\\", "/").rsplit("/", 1)[-1])
