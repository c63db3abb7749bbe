"""Text model files as UTF-8, whatever their exporter wrote: UTF-16 with a byte-order mark, or a
legacy 8-bit code page (Windows-1252, the Latin-1 superset most exporters meant) for names
such as "Café" or "Würfel". The parsers then read one encoding."""

from __future__ import annotations

import codecs

UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def is_utf16(data: bytes) -> bool:
    """Whether the bytes begin with a UTF-16 byte-order mark."""
    return data.startswith(UTF16_BOMS)


def decoded(data: bytes) -> str:
    """The text of a (part of a) text file: UTF-16 by its mark, UTF-8 when it is valid UTF-8
    (a cut multi-byte character at the end allowed), else Windows-1252 (bytes it leaves
    undefined read as Latin-1)."""
    if is_utf16(data):
        return data[2:].decode("utf-16-le" if data.startswith(codecs.BOM_UTF16_LE)
                               else "utf-16-be", errors="replace")
    data = data.removeprefix(codecs.BOM_UTF8)
    if data.isascii():
        return data.decode("ascii")
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return data.decode("cp1252", errors=_AS_LATIN1)


def as_utf8(data: bytes) -> bytes:
    """The file's bytes as UTF-8 without a byte-order mark (ASCII and UTF-8 as they are)."""
    if data.isascii():
        return data
    if not is_utf16(data) and not data.startswith(codecs.BOM_UTF8):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return data
    return decoded(data).encode("utf-8")


def _latin1(error: UnicodeError) -> tuple[str, int]:
    """Bytes Windows-1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d) read as Latin-1."""
    assert isinstance(error, UnicodeDecodeError)
    return error.object[error.start:error.end].decode("latin-1"), error.end


_AS_LATIN1 = "kiln-cp1252-latin1"
codecs.register_error(_AS_LATIN1, _latin1)
