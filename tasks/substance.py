"""The Substance pipelines: describe a .sbsar archive or a .sbs package, keep their icon and XML.

Hostile XML (a DTD, entities, billion laughs, external references) is refused as CorruptFile
and never expanded; archive policy failures (caps, unsafe names, encryption) are ArchiveRejected.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tasks import sbsar
from tasks.errors import ArchiveRejected, TooLarge
from tasks.progress import Artifact, Payload, Progress, Result
from tasks.sbs import describe_package, parse_xml

THUMBNAIL_NAME = "thumbnail.png"
DESCRIPTION_NAME = "description.json"
THUMBNAIL_SIZE = (512, 512)
MAX_USAGES = 64
# icons seen in sbsar files and exports: PNG mostly, JPEG and WebP for previews
ICON_FORMATS = ("PNG", "JPEG", "WEBP")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def describe_sbsar(payload: Payload, progress: Progress) -> Result:
    """Describe the Substance archive at `payload["source"]`: graphs, inputs, outputs, presets,
    and its icon as `thumbnail.png`, reading only the members it needs, into capped memory."""
    limits = payload["limits"]
    max_bytes, xml_max = limits["archive_max_bytes"], limits["xml_max_bytes"]
    progress("inspect", 0.0)
    with Path(payload["source"]).open("rb") as file:
        archive = sbsar.open_archive(file, max_bytes)
        with archive:
            listing = sbsar.inspect(
                archive,
                max_members=limits["archive_max_members"],
                max_bytes=max_bytes,
                max_ratio=int(limits["archive_max_ratio"]),
            )
            xml_member = sbsar.description_member(listing)
            if xml_member.size > xml_max:
                raise ArchiveRejected(
                    f"The description XML has {xml_member.size:,} bytes; "
                    f"the limit is {xml_max:,} bytes."
                )
            icon = sbsar.icon_member(listing)
            progress("inspect", 1.0)
            progress("extract", 0.0)
            wanted = [(xml_member, xml_member.size)]
            if icon is not None:
                wanted.append((icon, icon.size))
            contents = sbsar.read_members(archive, wanted)
            progress("extract", 1.0)
    progress("parse", 0.0)
    description = sbsar.describe_archive_xml(
        parse_xml(contents.get(xml_member.name, b""), "description XML")
    )
    progress("parse", 1.0)
    artifacts_dir = _artifacts_dir(payload)
    progress("thumbnail", 0.0)
    thumbnail = None
    if icon is not None:
        icon_bytes = contents.get(icon.name, b"")
        thumbnail = _thumbnail(icon_bytes, int(payload["max_pixels"]), artifacts_dir)
    progress("thumbnail", 1.0)
    stats = _summary("sbsar", description)
    stats["members"] = len(listing.members)
    stats["unpacked_bytes"] = listing.total_bytes
    stats["thumbnail"] = thumbnail is not None
    artifacts = [_write_json(artifacts_dir, {"format": "sbsar", **description})]
    if thumbnail is not None:
        artifacts.append(thumbnail)
    return {"stats": stats, "artifacts": artifacts}


def describe_sbs(payload: Payload, progress: Progress) -> Result:
    """Describe the Substance Designer package at `payload["source"]`: graphs, their parameters
    and outputs, and the names of the packages it depends on (which are never opened)."""
    xml_max = payload["limits"]["xml_max_bytes"]
    source = Path(payload["source"])
    progress("inspect", 0.0)
    size = source.stat().st_size
    if size > xml_max:
        raise TooLarge(f"The package has {size:,} bytes; the limit is {xml_max:,} bytes.")
    progress("inspect", 1.0)
    progress("parse", 0.0)
    description = describe_package(parse_xml(source.read_bytes(), "package XML"))
    progress("parse", 1.0)
    stats = _summary("sbs", description)
    dependencies = description["dependencies"]
    stats.update(dependencies=dependencies["count"], dependency_list=dependencies["items"])
    artifacts = [_write_json(_artifacts_dir(payload), {"format": "sbs", **description})]
    return {"stats": stats, "artifacts": artifacts}


def _summary(fmt: str, description: dict[str, Any]) -> dict[str, Any]:
    """The graph count, totals over the listed graphs (the first 64) and the graph list."""
    graphs = description["graphs"]
    listed = graphs["items"]
    usages = sorted(
        {u for g in listed for o in g["outputs"]["items"] for u in o["usages"]}
    )[:MAX_USAGES]
    return {
        "format": fmt,
        "format_version": description.get("format_version"),
        "graphs": graphs["count"],
        "outputs": sum(g["outputs"]["count"] for g in listed),
        "parameters": sum(g["parameters"]["count"] for g in listed),
        "image_inputs": sum(g["image_inputs"]["count"] for g in listed),
        "presets": sum(g["presets"]["count"] for g in listed),
        "usages": usages,
        "graph_list": [_flat(g) for g in listed],
    }


def _flat(graph: dict[str, Any]) -> dict[str, Any]:
    """A graph with its lists inline and the true counts beside them."""
    flat: dict[str, Any] = {}
    for key, value in graph.items():
        if isinstance(value, dict) and "items" in value:
            flat[key] = value["items"]
            flat[f"{key}_count"] = value["count"]
        else:
            flat[key] = value
    return flat


def _artifacts_dir(payload: Payload) -> Path:
    directory = Path(payload["artifacts_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _write_json(directory: Path, description: dict[str, Any]) -> Artifact:
    target = directory / DESCRIPTION_NAME
    graphs = description["graphs"]
    document = {
        **description,
        "graphs": [_flat(g) for g in graphs["items"]],
        "graph_count": graphs["count"],
    }
    target.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    size = target.stat().st_size
    return {"name": DESCRIPTION_NAME, "media_type": "application/json", "size": size}


def _thumbnail(data: bytes, max_pixels: int, directory: Path) -> Artifact | None:
    """Re-decode the icon through the allow-list; a broken icon costs only the thumbnail."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(ICON_FORMATS)) as image:
                image.load()
                small = image.convert("RGBA" if _has_alpha(image) else "RGB")
        small.thumbnail(THUMBNAIL_SIZE)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        found = _BOMB_PIXELS.search(str(error))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels"
        raise TooLarge(f"The icon has {pixels}; the limit is {max_pixels:,} pixels.") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        return None  # Pillow's decoders raise these on damaged or foreign bytes
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    target = directory / THUMBNAIL_NAME
    small.save(target, format="PNG", optimize=True)
    return {"name": THUMBNAIL_NAME, "media_type": "image/png", "size": target.stat().st_size}


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info

