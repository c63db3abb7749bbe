"""Make any glTF self-contained before a parser sees it: every buffer and image comes from the
upload (by name) or a size-capped `data:` URI, every image passes the allow-list, Draco meshes are
decoded, and the result is one GLB with nothing left to resolve."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from tasks.draco import decode_draco, pack_glb, uses_draco
from tasks.errors import CorruptFile, TaskError, TooLarge
from tasks.gltf_primitives import check_extensions, normalised
from tasks.imaging import open_image, safe_label
from tasks.names import display_name
from tasks.references import Verdict, classify
from tasks.resolver import UploadResolver, unsafe_reference

MAX_DATA_URI_BYTES = 64 * 1024**2
_GLB_HEADER = struct.Struct("<4sII")
_CHUNK_HEADER = struct.Struct("<I4s")


def self_contained_glb(
    data: bytes, fmt: str, resolver: UploadResolver, *,
    max_data_uri_bytes: int = MAX_DATA_URI_BYTES,
) -> tuple[bytes, list[str], dict[str, Any]]:
    """The model as one GLB that needs no other file and that trimesh reads right
    (`tasks.gltf_primitives`), the names of all its images (those the upload lacks are in
    `resolver.missing`), and notes for the statistics (primitives trimesh skips, and
    "material_count": every material the file defines, named or not)."""
    try:
        return _self_contained(data, fmt, resolver, max_data_uri_bytes)
    except MemoryError as error:
        raise TooLarge("The glTF needs more memory to read than this server allows.") from error
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError,
            RecursionError) as error:  # 1e400 is JSON's infinity; deep "extras" nest too far
        raise CorruptFile("The glTF's JSON does not describe a valid glTF model.") from error


def _self_contained(data: bytes, fmt: str, resolver: UploadResolver,
                    max_data_uri_bytes: int) -> tuple[bytes, list[str], dict[str, Any]]:
    tree, buffers = _read(data, fmt)
    for reference in (classify(item["uri"]) for item in _uri_items(tree)):
        if reference.verdict is Verdict.UNSAFE:
            raise unsafe_reference(reference)
    check_extensions(tree)  # before fetching: meshopt's fallback buffers hold no data
    for index, buffer in enumerate(tree.get("buffers", [])):
        if isinstance(buffer, dict) and isinstance(buffer.get("uri"), str):
            buffers[index] = _fetch(buffer.pop("uri"), resolver, max_data_uri_bytes, "buffer")
    images = _embed_images(tree, buffers, resolver, max_data_uri_bytes)
    if uses_draco(tree):
        tree, decoded = decode_draco(tree, [b or b"" for b in buffers])
        buffers = list(decoded)
    if any(b is None for b in buffers):
        raise CorruptFile("The glTF declares a buffer that holds no data.")
    tree, plain, skipped = normalised(tree, [b or b"" for b in buffers])
    materials = tree.get("materials")
    notes = {**skipped.notes,
             "material_count": len(materials) if isinstance(materials, list) else 0}
    return pack_glb(tree, plain), images, notes


def _read(data: bytes, fmt: str) -> tuple[dict[str, Any], list[bytes | None]]:
    binary: bytes | None = None
    if fmt == "glb":
        json_bytes, binary = _glb_chunks(data)
    else:
        json_bytes = data
    try:
        tree = json.loads(json_bytes)
    except (ValueError, RecursionError) as error:
        raise CorruptFile("The glTF's JSON is not valid.") from error
    if not isinstance(tree, dict) or not isinstance(tree.get("buffers", []), list):
        raise CorruptFile("The glTF's JSON is not a glTF document.")
    buffers: list[bytes | None] = [None] * len(tree.get("buffers", []))
    if binary is not None and buffers and "uri" not in tree["buffers"][0]:
        buffers[0] = binary
    return tree, buffers


def _glb_chunks(data: bytes) -> tuple[bytes, bytes | None]:
    if len(data) < 20:
        raise CorruptFile("The GLB file is truncated.")
    magic, version, length = _GLB_HEADER.unpack_from(data)
    if magic != b"glTF" or version != 2 or length > len(data):
        raise CorruptFile("The GLB header is not valid (or the file is truncated).")
    chunks: list[tuple[bytes, bytes]] = []
    offset = 12
    while offset + 8 <= length:
        size, kind = _CHUNK_HEADER.unpack_from(data, offset)
        if offset + 8 + size > length:
            raise CorruptFile("A GLB chunk runs past the end of the file.")
        chunks.append((kind, data[offset + 8:offset + 8 + size]))
        offset += 8 + size + (-size % 4)
    if not chunks or chunks[0][0] != b"JSON":
        raise CorruptFile("The GLB file has no JSON chunk.")
    binary = next((body for kind, body in chunks[1:] if kind == b"BIN\x00"), None)
    return chunks[0][1], binary


def _uri_items(tree: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for section in ("buffers", "images"):
        entries = tree.get(section, [])
        if isinstance(entries, list):
            items.extend(e for e in entries
                         if isinstance(e, dict) and isinstance(e.get("uri"), str))
    return items


def _fetch(uri: str, resolver: UploadResolver, cap: int, what: str) -> bytes:
    reference = classify(uri)
    if reference.verdict is Verdict.DATA:
        encoded = uri.partition(",")[2]
        if ";base64" not in uri.partition(",")[0]:
            raise CorruptFile(f"The glTF has a {what} data URI that is not base64.")
        if len(encoded) * 3 // 4 > cap:
            raise TooLarge(f"The glTF has an inline {what} over {cap:,} bytes.")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise CorruptFile(f"The glTF has a damaged inline {what}.") from error
    try:
        return resolver.read(uri)
    except FileNotFoundError:
        resolver.check()
        name = safe_label(reference.basename)
        raise CorruptFile(f"The glTF needs the file {name}, which was not uploaded with it.") \
            from None


def _embed_images(tree: dict[str, Any], buffers: list[bytes | None], resolver: UploadResolver,
                  cap: int) -> list[str]:
    """Move every image into a new buffer (validated); drop the ones the upload lacks. Returns
    the images' names."""
    images = tree.get("images", [])
    if not isinstance(images, list) or not images:
        return []
    extra = bytearray()
    views = tree.setdefault("bufferViews", [])
    names: list[str] = []
    for number, image in enumerate(images):
        if not isinstance(image, dict):
            continue
        if "uri" in image:
            uri = image.pop("uri")
            reference = classify(uri)
            if reference.verdict is Verdict.NAME:
                found = resolver.find(uri)
                names.append(display_name(found or reference.basename) or "?")
                if found is None:
                    continue
            else:
                names.append(f"image {number}")
            blob = _fetch(uri, resolver, cap, "image")
        elif isinstance(image.get("bufferView"), int):
            names.append(display_name(str(image.get("name") or "")) or f"image {number}")
            blob = _view_bytes(tree, buffers, image["bufferView"])
        else:
            continue
        try:
            opened = open_image(blob, resolver.max_pixels, what="texture of the glTF")
        except TooLarge:
            raise
        except TaskError as error:
            raise CorruptFile("A texture inside the glTF is damaged or in a format Kiln does not "
                              "open.") from error
        image["mimeType"] = {"PNG": "image/png", "JPEG": "image/jpeg"}.get(
            str(opened.format), "image/png")
        opened.close()
        image["bufferView"] = len(views)
        views.append({"buffer": len(buffers), "byteOffset": len(extra), "byteLength": len(blob)})
        extra += blob + b"\x00" * (-len(blob) % 4)
    tree.setdefault("buffers", []).append({"byteLength": len(extra)})
    buffers.append(bytes(extra))
    return names


def _view_bytes(tree: dict[str, Any], buffers: list[bytes | None], index: int) -> bytes:
    try:
        view = tree["bufferViews"][index]
        data = buffers[int(view.get("buffer", 0))]
        start = int(view.get("byteOffset", 0))
        end = start + int(view["byteLength"])
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CorruptFile("The glTF has an image in a buffer view that does not exist.") from error
    if data is None or not 0 <= start <= end <= len(data):
        raise CorruptFile("The glTF has an image outside its buffer.")
    return data[start:end]
