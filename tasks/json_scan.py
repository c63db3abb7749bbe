"""One top-level member of a large JSON object, found without parsing the whole document.

A glTF is recognised by its "asset" member, wherever it sits: a large `.gltf` may put it after
megabytes of accessors or inline buffers. The scan walks the document's structure (strings and
brackets) with a compiled pattern over a memory map, bounded in bytes and in time, and parses
only the member's own value.
"""

from __future__ import annotations

import json
import mmap
import re
import time
from typing import IO, Any

SCAN_BYTES = 256 * 1024**2
"""Bytes of the document scanned at most: a member further in is not looked for."""
SCAN_SECONDS = 2.0
"""Time the scan takes at most."""
MEMBER_BYTES = 64 * 1024
"""Bytes of the member's value parsed at most."""
MISSING = object()
"""What `top_level_member` returns when the member is not found within its bounds."""

# a string (unrolled: linear, no backtracking frame per character; one cut off by the end of
# the scanned bytes is a token too, ending the scan), or a structural character
_TOKEN = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\Z)|[{}\[\],:]')
_OPEN, _CLOSE = frozenset(b"{["), frozenset(b"}]")
_QUOTE = ord('"')
_CHECK_EVERY = 4096  # tokens between looks at the clock


def top_level_member(file: IO[bytes], key: str, *, scan_bytes: int = SCAN_BYTES,
                     seconds: float = SCAN_SECONDS) -> Any:
    """The value of `key` in the JSON object that `file` holds (UTF-8, a BOM allowed), or
    MISSING when the file is not such an object, lacks the key within `scan_bytes`, or takes
    longer than `seconds` to scan."""
    try:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):  # an empty file cannot be mapped
        return MISSING
    with mapped:
        return _scan(mapped, json.dumps(key).encode(), min(len(mapped), scan_bytes),
                     time.monotonic() + seconds)


def _scan(data: mmap.mmap, wanted: bytes, end: int, deadline: float) -> Any:
    depth, expecting_key, found = 0, False, False
    start = 3 if data[:3] == b"\xef\xbb\xbf" else 0
    if data[start:start + 4096].lstrip()[:1] != b"{":
        return MISSING
    for count, match in enumerate(_TOKEN.finditer(data, start, end)):
        if count % _CHECK_EVERY == 0 and time.monotonic() > deadline:
            return MISSING
        first = data[match.start()]
        if first == _QUOTE and (match.end() - match.start() < 2 or data[match.end() - 1] != _QUOTE):
            return MISSING  # a string that never ends within the bounds
        if first in _OPEN:
            depth += 1
            expecting_key = depth == 1
        elif first in _CLOSE:
            depth -= 1
            if depth <= 0:
                return MISSING  # the whole object is read: no such member
        elif depth == 1:
            if first == ord(","):
                expecting_key = True
            elif first == ord(":"):
                if found:
                    return _value(data, match.end(), end)
            elif expecting_key:  # a key: compared only when it is as long as the one wanted
                found = match.end() - match.start() == len(wanted) and (
                    data[match.start():match.end()] == wanted)
                expecting_key = False
    return MISSING


def _value(data: mmap.mmap, start: int, end: int) -> Any:
    text = data[start:min(end, start + MEMBER_BYTES)].decode("utf-8", errors="replace")
    try:
        value, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except (ValueError, RecursionError):
        return MISSING
    return value
