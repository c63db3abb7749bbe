"""Builders of Substance files for tests, shaped like real ones.

The .sbsar description follows the `<sbsdescription>` layout read by Adobe's pysbs
(sbsarchive/sbsargraph.py, sbsargui.py), Sublender's py7zr-based parser and SBSAR-Info:
`graphs/graph[@pkgurl,@label]`, `inputs/input[@identifier,@type,@default]/inputgui[@label,@group]`
with `guislider[@min,@max]`, `outputs/output[@format]/outputgui/channels/channel[@names]` and
`sbspresets/sbspreset[@label]/presetinput`. The .sbs package follows pysbs SBSDocument and
diffmat's loader: `<package>` of `<xxx v="..."/>` values, `dependencies/dependency`,
`content/graph` with `paraminputs`, `graphOutputs/graphoutput/usages/usage/name`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import py7zr
from PIL import Image

USAGES = ("baseColor", "normal", "roughness", "metallic", "height", "ambientOcclusion")


def sbsar_xml(graphs: int = 1, presets: int = 2) -> bytes:
    """A description with `graphs` material graphs: 3 parameters, 1 image input, 6 outputs."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<sbsdescription formatversion="1.1" asmuid="3141592653" cookerbuild="2887"'
        ' content="full">'
        '<global><inputs count="1"><input uid="1" identifier="$time" type="0" default="0"/>'
        "</inputs></global>"
        f'<graphs count="{graphs}">'
    ]
    for g in range(graphs):
        name = "wood_planks" if g == 0 else f"wood_planks_{g}"
        outputs = "".join(
            f'<output uid="{100 + i}" identifier="{usage.lower()}" format="{0 if i < 2 else 8}"'
            ' mipmaps="0" width="2048" height="2048" dynamicsize="yes" type="5">'
            f'<outputgui label="{usage}" group="Material"><channels count="1">'
            f'<channel names="{usage}" components="RGBA"/></channels></outputgui></output>'
            for i, usage in enumerate(USAGES)
        )
        preset_xml = "".join(
            f'<sbspreset label="Preset {p}"><presetinput identifier="roughness_amount"'
            f' uid="12" type="0" value="0.{p + 1}"/></sbspreset>'
            for p in range(presets)
        )
        parts.append(
            f'<graph pkgurl="pkg://{name}" label="Wood Planks {g}" category="Material/Wood"'
            ' keywords="wood;planks" author="Kiln tests" usertag="">'
            '<guigroups count="1"><guigroup identifier="Surface" label="Surface"/></guigroups>'
            '<inputs count="4">'
            '<input uid="10" identifier="$randomseed" type="4" default="0"'
            ' alteroutputs="100,101" alternodes="3"><inputgui widget="slider" label="Random Seed"'
            ' group="Global"><guislider min="0" max="10000" step="1" clamp="off"/>'
            "</inputgui></input>"
            '<input uid="12" identifier="roughness_amount" type="0" default="0.5"'
            ' alteroutputs="102"><inputgui widget="slider" label="Roughness" group="Surface">'
            '<guislider min="0" max="1" step="0.01" clamp="on"/></inputgui></input>'
            '<input uid="13" identifier="tint" type="2" default="0.8,0.6,0.4">'
            '<inputgui widget="color" label="Tint" group="Color"/></input>'
            '<input uid="14" identifier="mask" type="5"><inputgui widget="image" label="Mask">'
            '<guiimage colortype="grayscale"><channels count="1"><channel names="mask"/>'
            "</channels></guiimage></inputgui></input>"
            "</inputs>"
            f'<outputs count="{len(USAGES)}">{outputs}</outputs>'
            f'<sbspresets count="{presets}">{preset_xml}</sbspresets>'
            "</graph>"
        )
    parts.append("</graphs></sbsdescription>")
    return "".join(parts).encode("utf-8")


def icon_png(size: tuple[int, int] = (256, 128)) -> bytes:
    image = Image.new("RGB", size, (120, 80, 40))
    image.putpixel((1, 1), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_7z(target: Path, members: list[tuple[str, bytes]], password: str | None = None) -> Path:
    """A 7z archive of `members` written in order; names are stored as given, even hostile ones."""
    with py7zr.SevenZipFile(target, mode="w", password=password) as archive:
        for name, data in members:
            archive._writestr(data, name)  # the public writestr refuses hostile names
    return target


def sbsar(target: Path, xml: bytes | None = None, icon: bytes | None = None) -> Path:
    """A realistic archive: the description, the compiled assembly and the graph icon."""
    return write_7z(
        target,
        [
            ("wood_planks.xml", sbsar_xml() if xml is None else xml),
            ("wood_planks.sbsasm", os.urandom(4096)),
            ("wood_planks_icon.png", icon_png() if icon is None else icon),
        ],
    )


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']>\n<sbsdescription formatversion="1.1"><graphs count="1">'
    b'<graph pkgurl="pkg://&lol9;" label="x"/></graphs></sbsdescription>'
)

EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE package [<!ENTITY ext SYSTEM "file:///etc/passwd">]>\n'
    b'<package><identifier v="&ext;"/></package>'
)


def sbs_xml() -> bytes:
    """A package with two graphs (one in a folder) and three dependencies, one of them itself."""

    def graph(identifier: str, outputs: list[tuple[str, str]]) -> str:
        output_xml = "".join(
            f'<graphoutput><identifier v="{o}"/><uid v="{1200 + i}"/>'
            f'<attributes><label v="{o.title()}"/></attributes><usages><usage>'
            f'<components v="RGBA"/><name v="{usage}"/></usage></usages>'
            '<group v="Material"/></graphoutput>'
            for i, (o, usage) in enumerate(outputs)
        )
        return (
            f'<graph><identifier v="{identifier}"/><uid v="1530982368"/>'
            '<graphtype v="material"/><attributes><label v="Brick wall"/></attributes>'
            "<paraminputs>"
            '<paraminput><identifier v="mortar_width"/><uid v="1290"/>'
            '<attributes><label v="Mortar width"/></attributes><type v="256"/>'
            '<defaultValue><constantValueFloat1 v="0.15"/></defaultValue>'
            '<defaultWidget><name v="slider"/><options>'
            '<option><name v="min"/><value v="0"/></option>'
            '<option><name v="max"/><value v="1"/></option></options></defaultWidget>'
            '<group v="Mortar"/></paraminput>'
            '<paraminput><identifier v="bricks"/><uid v="1291"/><type v="32"/>'
            '<defaultValue><constantValueInt2 v="8 4"/></defaultValue></paraminput>'
            '<paraminput><identifier v="grunge"/><uid v="1292"/><isConnectable v="1"/>'
            '<type v="2"/></paraminput>'
            "</paraminputs>"
            f"<graphOutputs>{output_xml}</graphOutputs>"
            "<compNodes/><baseParameters/><root><rootOutputs/></root>"
            "</graph>"
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?><package><identifier v="bricks"/>'
        '<formatVersion v="1.1.0.202201"/><updaterVersion v="1.1.0.202201"/>'
        '<fileUID v="{a4b6c1a4-3f1d-4b8e-9c1e-0d6b3b1b7f10}"/>'
        '<versionUID v="0"/><dependencies>'
        '<dependency><filename v="sbs://pattern_tile_generator.sbs"/><uid v="1419435452"/>'
        '<type v="package"/><fileUID v="0"/><versionUID v="0"/></dependency>'
        '<dependency><filename v="C:/Users/artist/library/grunge_maps.sbs"/>'
        '<uid v="1419435453"/><type v="package"/><fileUID v="0"/><versionUID v="0"/></dependency>'
        '<dependency><filename v="?himself"/><uid v="1419435454"/><type v="package"/>'
        '<fileUID v="0"/><versionUID v="0"/></dependency>'
        "</dependencies><content>"
        + graph("bricks", [("basecolor", "baseColor"), ("normal", "normal"),
                           ("roughness", "roughness")])
        + '<group><identifier v="variants"/><content>'
        + graph("bricks_mossy", [("basecolor", "baseColor"), ("height", "height")])
        + "</content></group></content></package>"
    ).encode("utf-8")
