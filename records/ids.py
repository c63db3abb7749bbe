"""Kiln's opaque ids: random, url-safe, and safe inside Redis key and channel names."""

from __future__ import annotations

import re
import secrets

# \Z rather than $: with $, ID_PATTERN.match("abc\n") would succeed.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


def new_id() -> str:
    """A fresh random id: 22 url-safe characters (128 bits)."""
    return secrets.token_urlsafe(16)


def is_valid_id(value: object) -> bool:
    """True if `value` is a string Kiln accepts as an id (no glob or separator characters)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None
