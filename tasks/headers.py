"""Refuse a model whose header promises more elements than its file can hold, before any parser
sizes arrays from that promise (an OFF claiming a billion faces in 300 bytes)."""

from __future__ import annotations

from tasks.errors import CorruptFile
from tasks.imaging import safe_label

_PLY_SIZES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "int32", "uint32", "float", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}
_PLY_PLURALS = {"vertex": "vertices", "face": "faces", "edge": "edges"}


def check_declared_counts(data: bytes, fmt: str) -> None:
    """Refuse a header whose element counts its file cannot hold, before any parser sizes arrays."""
    minimum_bytes = {"ply": _ply_minimum_bytes, "off": _off_minimum_bytes}.get(fmt)
    declared = minimum_bytes(data) if minimum_bytes else None
    if declared is None:
        return
    counts, minimum = declared
    if minimum > len(data):
        described = " and ".join(f"{count:,} {name}" for name, count in counts)
        raise CorruptFile(
            f"The file declares {described}, more than its {len(data):,} bytes can hold."
        )


def _off_minimum_bytes(data: bytes) -> tuple[list[tuple[str, int]], int] | None:
    tokens: list[bytes] = []
    for line in data[:4096].splitlines():
        tokens.extend(line.split(b"#", 1)[0].split())
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or not tokens[0].endswith(b"OFF"):
        return None
    if not (tokens[1].isdigit() and tokens[2].isdigit()):
        return None
    vertices, faces = int(tokens[1]), int(tokens[2])
    # the shortest vertex line is "0 0 0\n", the shortest face "3 0 0 0\n"
    return [("vertices", vertices), ("faces", faces)], vertices * 6 + faces * 8


def _ply_minimum_bytes(data: bytes) -> tuple[list[tuple[str, int]], int] | None:
    end = data.find(b"end_header", 0, 65536)
    if end < 0:
        return None
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    binary = any(line.startswith("format binary") for line in lines)
    elements: list[tuple[str, int, int]] = []  # name, count, least bytes per item
    for words in (line.split() for line in lines):
        if len(words) == 3 and words[0] == "element" and words[2].isdigit():
            elements.append((words[1], int(words[2]), 0))
        elif len(words) >= 3 and words[0] == "property" and elements:
            # a list may be empty but always stores its length; ASCII needs a digit and a space
            kind = words[2] if words[1] == "list" else words[1]
            name, count, item = elements[-1]
            elements[-1] = (name, count, item + (_PLY_SIZES.get(kind, 1) if binary else 2))
    counts = [(_PLY_PLURALS.get(name, safe_label(name)[:20]), n) for name, n, _ in elements]
    return counts, sum(count * item for _, count, item in elements)
