"""Names taken from a model's file (materials, nodes, textures), made safe to show."""

from __future__ import annotations

from collections.abc import Iterable

MAX_NAME_CHARS = 120
MAX_NAMES = 256


def display_name(name: str) -> str:
    """A name taken from the file, made safe to show: printable and short."""
    return "".join(c for c in name if c.isprintable()).strip()[:MAX_NAME_CHARS]


def distinct_names(raw: Iterable[str]) -> list[str]:
    """The shown forms of `raw`, each once, in order, at most MAX_NAMES of them."""
    names: list[str] = []
    for name in raw:
        shown = display_name(name)
        if shown and shown not in names:
            names.append(shown)
            if len(names) == MAX_NAMES:
                break
    return names
