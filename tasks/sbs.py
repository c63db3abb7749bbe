"""Substance XML read safely (no DTD, no entities, sanitised text) and the .sbs package reader."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from tasks.errors import CorruptFile

MAX_GRAPHS = 64
MAX_ITEMS = 256  # parameters, outputs, presets or dependencies listed per graph or package
MAX_TEXT = 120

# .sbs parameter types (pysbs sbsenum.ParamTypeEnum); image entries carry the low two bits
SBS_TYPES: dict[int, str] = {
    1: "image_color", 2: "image_grayscale", 3: "image", 4: "boolean",
    16: "integer1", 32: "integer2", 64: "integer3", 128: "integer4",
    256: "float1", 512: "float2", 1024: "float3", 2048: "float4", 16384: "string",
}
_IMAGE_TYPE_BITS = 3
_SELF_DEPENDENCY = "?himself"  # how Designer lists a package's own graphs among its dependencies
_SPACES = re.compile(r"\s+")

T = TypeVar("T")


def parse_xml(data: bytes, what: str) -> Element:
    """Parse `data` with defusedxml, refusing any DTD: Substance XML never declares one."""
    try:
        root: Element = SafeET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException as error:
        raise CorruptFile(
            f"The {what} declares a DTD or entities, which Substance files never do; "
            "it was not expanded."
        ) from error
    except (ParseError, ValueError) as error:
        raise CorruptFile(f"The {what} is not well-formed XML.") from error
    return root


def clean(value: object) -> str:
    """Printable, single-line and at most MAX_TEXT characters: safe to show a person."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def optional(value: str | None) -> str | None:
    return None if value is None else clean(value)


def collect(
    elements: Iterable[T], describe: Callable[[T], Any], limit: int = MAX_ITEMS
) -> dict[str, Any]:
    """Describe the first `limit` elements and count them all: a hostile file stays small."""
    items: list[Any] = []
    count = 0
    for element in elements:
        if count < limit:
            items.append(describe(element))
        count += 1
    return {"items": items, "count": count}


def describe_package(root: Element) -> dict[str, Any]:
    """The graphs, their parameters and outputs, and the dependencies of a `<package>` root."""
    if root.tag != "package":
        raise CorruptFile("The file is not a Substance Designer package: no <package> root.")
    dependencies = (
        d for d in root.iterfind("dependencies/dependency")
        if _v(d.find("filename")) != _SELF_DEPENDENCY
    )
    return {
        "format_version": optional(_v(root.find("formatVersion"))),
        "identifier": optional(_v(root.find("identifier"))),
        "graphs": collect(_graphs(root), _graph, MAX_GRAPHS),
        "dependencies": collect(dependencies, _dependency),
    }


def _v(element: Element | None) -> str | None:
    """A .sbs value lives in the `v` attribute of its element: `<identifier v="name"/>`."""
    return None if element is None else element.get("v")


def _graphs(root: Element) -> Iterator[tuple[str, Element]]:
    """Graphs of the package content, graphs inside (nested) folders named by their path."""
    pending: list[tuple[str, Element]] = [("", root)]
    while pending:
        prefix, holder = pending.pop(0)
        for graph in holder.iterfind("content/graph"):
            yield prefix, graph
        for group in holder.iterfind("content/group"):
            pending.append((f"{prefix}{_v(group.find('identifier')) or ''}/", group))


def _graph(found: tuple[str, Element]) -> dict[str, Any]:
    prefix, graph = found
    images: list[Element] = []
    parameters: list[Element] = []
    for entry in graph.iterfind("paraminputs/paraminput"):
        kind = _v(entry.find("type")) or _v(entry.find("type/value"))
        (images if _is_image(kind) else parameters).append(entry)
    return {
        "identifier": clean(prefix + (_v(graph.find("identifier")) or "")),
        "label": optional(_v(graph.find("attributes/label"))),
        "parameters": collect(parameters, _parameter),
        "image_inputs": collect(images, _parameter),
        "outputs": collect(graph.iterfind("graphOutputs/graphoutput"), _output),
        "presets": collect(
            graph.iterfind("sbspresets/sbspreset"), lambda p: clean(_v(p.find("label")) or "")
        ),
    }


def _parameter(entry: Element) -> dict[str, Any]:
    raw_type = _v(entry.find("type")) or _v(entry.find("type/value"))
    widget = {
        _v(o.find("name")): _v(o.find("value"))
        for o in entry.iterfind("defaultWidget/options/option")
    }
    default = entry.find("defaultValue/*")  # <constantValueFloat1 v="0.5"/> and its kin
    default_value = _v(default) if default is not None else widget.get("default")
    return {
        "identifier": clean(_v(entry.find("identifier")) or ""),
        "label": optional(_v(entry.find("attributes/label"))),
        "type": _sbs_type(raw_type),
        "default": optional(default_value),
        "min": optional(widget.get("min")),
        "max": optional(widget.get("max")),
        "group": optional(_v(entry.find("group"))),
    }


def _sbs_type(raw: str | None) -> str | None:
    try:
        return SBS_TYPES.get(int(raw or ""), clean(raw))
    except ValueError:
        return optional(raw)


def _is_image(raw: str | None) -> bool:
    try:
        return 0 < int(raw or "") <= _IMAGE_TYPE_BITS
    except ValueError:
        return False


def _output(output: Element) -> dict[str, Any]:
    usages = (_v(u.find("name")) for u in output.iterfind("usages/usage"))
    return {
        "identifier": clean(_v(output.find("identifier")) or ""),
        "label": optional(_v(output.find("attributes/label"))),
        "usages": [clean(u) for u in usages if u],
        "group": optional(_v(output.find("group"))),
    }


def _dependency(dependency: Element) -> dict[str, Any]:
    """Only the referenced file's name: its path may be the author's machine and is never opened."""
    filename = _v(dependency.find("filename")) or ""
    name = re.split(r"[/\\]", filename.rstrip("/\\"))[-1]
    return {"name": clean(name), "uid": optional(_v(dependency.find("uid")))}
