"""Decide an upload's kind and format from its bytes alone, never from its name or Content-Type."""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from tasks.json_scan import top_level_member
from tasks.pbr_names import group_sets
from tasks.text_encoding import decoded, is_utf16

Kind = Literal["mesh", "texture", "material"]

HEAD_BYTES = 64 * 1024
# the zip end record may carry a comment of up to 65535 bytes after its 22 fixed bytes
TAIL_BYTES = 64 * 1024 + 22
# listing a zip reads its whole central directory: refuse one too big to list cheaply
MAX_CENTRAL_DIRECTORY = 1024 * 1024


@dataclass(frozen=True)
class Detection:
    """What an upload is: its pipeline (`kind`), its `format` and a human `label`."""

    kind: Kind
    format: str
    label: str


_DETECTIONS: dict[str, Detection] = {
    d.format: d
    for d in (
        Detection("mesh", "obj", "Wavefront OBJ"),
        Detection("mesh", "stl", "STL"),
        Detection("mesh", "ply", "Stanford PLY"),
        Detection("mesh", "off", "Object File Format (OFF)"),
        Detection("mesh", "glb", "glTF binary (GLB)"),
        Detection("mesh", "gltf", "glTF"),
        Detection("mesh", "fbx", "Autodesk FBX (binary)"),
        Detection("mesh", "dae", "COLLADA"),
        Detection("mesh", "3mf", "3D Manufacturing Format (3MF)"),
        Detection("mesh", "zip", "ZIP archive holding one model"),
        Detection("texture", "png", "PNG"),
        Detection("texture", "jpeg", "JPEG"),
        Detection("texture", "tga", "Truevision TGA"),
        Detection("texture", "tiff", "TIFF"),
        Detection("texture", "webp", "WebP"),
        Detection("texture", "bmp", "BMP"),
        Detection("texture", "gif", "GIF"),
        Detection("texture", "exr", "OpenEXR"),
        Detection("material", "sbsar", "Substance archive (SBSAR)"),
        Detection("material", "sbs", "Substance source (SBS)"),
    )
}

FORMATS: frozenset[str] = frozenset(_DETECTIONS)
"""Every format `sniff` can recognise."""

_ASCII_FBX = Detection("mesh", "fbx", "Autodesk FBX (ASCII)")

SUPPORTED: frozenset[str] = FORMATS | {"pbr"}
"""Formats a pipeline processes ("pbr": the maps of one texture set, grouped at upload)."""

_TEXTURE_SET_ZIP = Detection("material", "zip", "ZIP archive holding one texture set")

# files that must never be taken for anything, whatever else their bytes happen to satisfy
_REFUSED_MAGIC = (
    b"8BPS",  # Photoshop
    b"%!PS",  # PostScript / EPS
    b"\xc5\xd0\xd3\xc6",  # DOS EPS binary header
    b"%PDF",
    b"\x7fELF",
    b"MZ",  # DOS / Windows executables
    b"\xfe\xed\xfa\xce",  # Mach-O
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # Mach-O fat binary, Java class
    b"#!",  # scripts
)

_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x76\x2f\x31\x01", "exr"),
    (b"Kaydara FBX Binary  \x00", "fbx"),
    (b"7z\xbc\xaf\x27\x1c", "sbsar"),
)

_MODEL_SUFFIXES = frozenset({"obj", "fbx", "gltf", "glb", "stl", "ply", "off", "dae", "3mf"})

_OBJ_KEYWORDS = frozenset(
    {
        *("v", "vt", "vn", "vp", "f", "l", "p", "o", "g", "s", "usemtl", "mtllib"),
        *("maplib", "usemap", "lod", "shadow_obj", "trace_obj", "ctech", "stech"),
        *("cstype", "deg", "bmat", "step", "curv", "curv2", "surf", "parm", "trim"),
        *("hole", "scrv", "sp", "end", "con", "mg", "bevel", "c_interp", "d_interp"),
        *("call", "csh"),
    }
)
# pixel depths allowed by each image type: colour-mapped, true-colour, grey (and their RLE forms)
_TGA_DEPTHS: dict[int, tuple[int, ...]] = {
    1: (8, 16),
    2: (15, 16, 24, 32),
    3: (8, 16),
    9: (8, 16),
    10: (15, 16, 24, 32),
    11: (8, 16),
}
_OFF_HEADER = re.compile(r"(ST)?C?N?OFF")
_XML_ROOT = re.compile(r"<(?:[A-Za-z_][\w.\-]*:)?([A-Za-z_][\w.\-]*)")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x19\x1b-\x1f]")
_SUBSTANCE_MARKERS = ("<formatVersion", "<updaterVersion", "<fileUID", "<identifier v=")


def sniff(path: Path) -> Detection | None:
    """Recognise the file at `path` from a bounded head and tail and its size; None if refused."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        head = file.read(HEAD_BYTES)
        tail = head
        if size > len(head):
            file.seek(max(size - TAIL_BYTES, 0))
            tail = file.read(TAIL_BYTES)
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _sniff_zip(file, tail)
        if size > len(head) and _text_head(head, truncated=True) is not None and (
                head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{")):
            return _DETECTIONS["gltf"] if _is_large_gltf(file) else None
    return _classify(head, tail, size)


def _is_large_gltf(file: IO[bytes]) -> bool:
    """A JSON object too large for the head is a glTF when its top level has an "asset" object
    of version 2, wherever it sits (`tasks.json_scan`, bounded in bytes and time)."""
    asset = top_level_member(file, "asset")
    return isinstance(asset, dict) and str(asset.get("version", "")).startswith("2")


def _classify(head: bytes, tail: bytes, size: int) -> Detection | None:
    if not head or head.startswith(_REFUSED_MAGIC):
        return None
    for magic, name in _BINARY_MAGIC:
        if head.startswith(magic):
            return _DETECTIONS[name]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _DETECTIONS["webp"]
    if head[:4] == b"glTF":
        return _DETECTIONS["glb"] if len(head) >= 12 and _u32(head, 4) == 2 else None
    if _is_ply(head):
        return _DETECTIONS["ply"]
    if _is_binary_stl(head, size):
        return _DETECTIONS["stl"]
    if _is_bmp(head, size):
        return _DETECTIONS["bmp"]
    if _is_tga(head, tail, size):
        return _DETECTIONS["tga"]
    text = _text_head(head, truncated=size > len(head))
    if text is None:
        return None
    text_format = _classify_text(text)
    if text_format == "fbx":
        return _ASCII_FBX
    return _DETECTIONS[text_format] if text_format else None


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _is_ply(head: bytes) -> bool:
    first, _, rest = head.partition(b"\n")
    return first.rstrip(b"\r") == b"ply" and rest.startswith(b"format ")


def _is_binary_stl(head: bytes, size: int) -> bool:
    if size < 84 or len(head) < 84 or (size - 84) % 50:
        return False
    return _u32(head, 80) == (size - 84) // 50


def _is_bmp(head: bytes, size: int) -> bool:
    if head[:2] != b"BM" or len(head) < 34:
        return False
    offset, dib = struct.unpack_from("<II", head, 10)
    if dib not in (12, 40, 52, 56, 64, 108, 124) or not 14 + dib <= offset < size:
        return False
    if dib == 12:
        width, height, planes, bits = struct.unpack_from("<HHHH", head, 18)
        compression = 0
    else:
        width, height, planes, bits, compression = struct.unpack_from("<iiHHI", head, 18)
    return (
        width > 0
        and height != 0
        and planes == 1
        and bits in (1, 2, 4, 8, 16, 24, 32, 64)
        and compression <= 6
    )


def _is_tga(head: bytes, tail: bytes, size: int) -> bool:
    """TGA has no magic: accept only a header whose every field is consistent."""
    if len(head) < 18:
        return False
    id_len, cmap_type, image_type = head[0], head[1], head[2]
    cmap_first, cmap_len, cmap_bits = (int(v) for v in struct.unpack_from("<HHB", head, 3))
    width, height, depth, descriptor = (int(v) for v in struct.unpack_from("<HHBB", head, 12))
    depths = _TGA_DEPTHS.get(image_type)
    colour_mapped = image_type in (1, 9)
    if (
        depths is None
        or depth not in depths
        or cmap_type != int(colour_mapped)
        or width == 0
        or height == 0
        or descriptor & 0xC0
        or (descriptor & 0x0F) > 8
    ):
        return False
    if colour_mapped:
        if cmap_bits not in (15, 16, 24, 32) or cmap_len == 0:
            return False
    elif cmap_first or cmap_len or cmap_bits:
        return False
    if tail.endswith(b"TRUEVISION-XFILE.\x00"):
        return True
    data_start = 18 + id_len + cmap_len * ((cmap_bits + 7) // 8)
    pixel_bytes = width * height * ((depth + 7) // 8)
    if image_type < 9:
        return data_start + pixel_bytes <= size <= data_start + pixel_bytes + 1024
    return data_start < size <= data_start + pixel_bytes + width * height + 1024


def _text_head(head: bytes, truncated: bool) -> str | None:
    """The head as text with whole lines only, or None if it holds bytes no text file has.
    UTF-16 is read by its byte-order mark; anything else as UTF-8 (a legacy code page's
    letters are then replacement characters, which are allowed)."""
    if is_utf16(head):
        text = decoded(head[:len(head) & ~1])
        if "\x00" in text:
            return None
    elif b"\x00" in head:
        return None
    else:
        text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    last_newline = text.rfind("\n")
    if truncated and last_newline >= 0:  # the last line may be cut: keep whole lines
        text = text[: last_newline + 1]
    if _CONTROL_CHARACTERS.search(text):
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _classify_text(text: str) -> str | None:
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0]
    if first_line.startswith("; FBX") or re.search(
        r"^\s*FBXHeaderExtension:\s*\{", text[:8192], re.MULTILINE
    ):
        return "fbx"
    if stripped.startswith("{"):
        return "gltf" if _is_gltf(stripped) else None
    if first_line.rstrip() == "ply":  # ASCII PLY in UTF-16 (in bytes, `_is_ply` knows it)
        lines = stripped.split("\n", 2)
        return "ply" if len(lines) > 1 and lines[1].startswith("format ascii") else None
    if stripped.startswith("<"):
        return _classify_xml(stripped)
    tokens = _tokens(stripped)
    if not tokens:
        return None
    if _OFF_HEADER.fullmatch(tokens[0]):
        counts = tokens[1:3]  # vertices and faces; the edge count is often left out
        return "off" if len(counts) == 2 and all(t.isdigit() for t in counts) else None
    if tokens[0] == "solid":
        return "stl" if re.search(r"^\s*(facet|endsolid)\b", text, re.MULTILINE) else None
    return "obj" if _is_obj(text) else None


def _tokens(text: str, limit: int = 8) -> list[str]:
    """The first whitespace-separated tokens outside `#` comments."""
    tokens: list[str] = []
    for line in text.split("\n"):
        tokens.extend(line.split("#", 1)[0].split())
        if len(tokens) >= limit:
            break
    return tokens[:limit]


def _is_gltf(text: str) -> bool:
    """The whole file is in the head (larger ones: `_is_large_gltf`): parse it."""
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError):  # hostile nesting exhausts the parser's stack
        return False
    if not isinstance(tree, dict) or not isinstance(tree.get("asset"), dict):
        return False
    return str(tree["asset"].get("version", "")).startswith("2")


def _classify_xml(text: str) -> str | None:
    position = 0
    while True:  # skip the declaration, comments and doctype before the root element
        for opening, closing in (("<?", "?>"), ("<!--", "-->"), ("<!", ">")):
            if text.startswith(opening, position):
                end = text.find(closing, position)
                if end < 0:
                    return None
                position = end + len(closing)
                while position < len(text) and text[position].isspace():
                    position += 1
                break
        else:
            break
    root = _XML_ROOT.match(text, position)
    if root is None:
        return None
    if root.group(1) == "COLLADA":
        return "dae"
    if root.group(1) == "package" and any(m in text for m in _SUBSTANCE_MARKERS):
        return "sbs"
    return None


def _is_obj(text: str) -> bool:
    """Every statement is an OBJ statement and at least one is a vertex `v x y z`."""
    has_vertex = False
    for line in text.replace("\\\n", " ").split("\n"):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] not in _OBJ_KEYWORDS:
            return False
        if words[0] == "v" and not has_vertex:
            has_vertex = len(words) >= 4 and all(_is_number(w) for w in words[1:4])
    return has_vertex


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _sniff_zip(file: IO[bytes], tail: bytes) -> Detection | None:
    """Tell 3MF from a zip holding one model by listing the central directory, never extracting."""
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) - end < 22:
        return None
    entries, directory_size = struct.unpack_from("<HI", tail, end + 10)
    locator = end - 20
    if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
        # zipfile trusts the ZIP64 record over the classic one: so must the caps
        record = locator - 56
        if record < 0 or tail[record:record + 4] != b"PK\x06\x06":
            return None
        entries, directory_size = struct.unpack_from("<QQ", tail, record + 32)
    if entries >= 0xFFFF or directory_size > MAX_CENTRAL_DIRECTORY:
        return None
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError):
        return None
    lowered = [n.lower() for n in names]
    if any(n.startswith("3d/") and n.endswith(".model") for n in lowered):
        return _DETECTIONS["3mf"]
    models = [
        n
        for n in lowered
        if not n.startswith("__macosx/")
        and not n.rsplit("/", 1)[-1].startswith("._")
        and n.rsplit(".", 1)[-1] in _MODEL_SUFFIXES
    ]
    if len(models) == 1 or ("manifest.xml" in lowered and any(n.endswith(".dae") for n in models)):
        return _DETECTIONS["zip"]  # one model, or a COLLADA archive (.zae) naming its root
    images = [n for n in names if not n.lower().startswith("__macosx/")]
    if not models and len(group_sets(images)) == 1:
        return _TEXTURE_SET_ZIP
    return None
