"""3MF colour as the core specification and its materials extension write it: base materials,
colour groups and texture groups, per triangle; counted in the stats and drawn."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.tasks.test_mesh import run

CORE = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MATERIAL = "http://schemas.microsoft.com/3dmanufacturing/material/2015/02"
BOX_VERTICES = [(0, 0, 0), (10, 0, 0), (10, 20, 0), (0, 20, 0),
                (0, 0, 30), (10, 0, 30), (10, 20, 30), (0, 20, 30)]
BOX_TRIANGLES = [(3, 2, 1), (1, 0, 3), (4, 5, 6), (6, 7, 4), (0, 1, 5), (5, 4, 0),
                 (1, 2, 6), (6, 5, 1), (2, 3, 7), (7, 6, 2), (3, 0, 4), (4, 7, 3)]
CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/'
    'package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.'
    'openxmlformats-package.relationships+xml"/><Default Extension="model" ContentType='
    '"application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/><Default Extension="png" '
    'ContentType="image/png"/></Types>')
RELS = (
    '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats'
    '.org/package/2006/relationships"><Relationship Target="/3D/3dmodel.model" Id="rel0" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>')


def package(resources: str, triangle: Any, object_attributes: str = "",
            extra: dict[str, bytes] | None = None) -> bytes:
    """A 3MF of the box; `triangle(i, (a, b, c))` gives each triangle's extra attributes."""
    vertices = "".join(f'<vertex x="{x}" y="{y}" z="{z}"/>' for x, y, z in BOX_VERTICES)
    triangles = "".join(f'<triangle v1="{a}" v2="{b}" v3="{c}" {triangle(i, (a, b, c))}/>'
                        for i, (a, b, c) in enumerate(BOX_TRIANGLES))
    model = (f'<?xml version="1.0" encoding="UTF-8"?><model unit="millimeter" xmlns="{CORE}" '
             f'xmlns:m="{MATERIAL}"><resources>{resources}<object id="1" type="model" '
             f'{object_attributes}><mesh><vertices>{vertices}</vertices><triangles>{triangles}'
             '</triangles></mesh></object></resources><build><item objectid="1"/></build>'
             '</model>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES)
        archive.writestr("_rels/.rels", RELS)
        archive.writestr("3D/3dmodel.model", model)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def thumbnail_colours(tmp_path: Path) -> set[tuple[int, ...]]:
    """The colours of the thumbnail's covered pixels, each channel rounded to 64s."""
    with Image.open(tmp_path / "artifacts" / "thumbnail.png") as image:
        pixels = np.asarray(image.convert("RGBA"))
    shown = pixels[pixels[..., 3] == 255][:, :3].astype(int)
    return {tuple(int(v) for v in row) for row in np.round(shown / 64) * 64}


def test_base_materials_colour_their_triangles(tmp_path: Path) -> None:
    resources = ('<basematerials id="2"><base name="Red" displaycolor="#FF0000"/>'
                 '<base name="Blue" displaycolor="#0000FFFF"/></basematerials>')
    data = package(resources, lambda i, _: 'p1="1"' if i >= 6 else "", 'pid="2" pindex="0"')
    result, _ = run(tmp_path, {"box.3mf": data}, "3mf", full=True)
    stats = result["stats"]
    assert stats["faces"] == 12 and stats["vertices"] == 8  # the geometry as the file has it
    assert stats["materials"] == 2 and stats["material_names"] == ["Red", "Blue"]
    colours = thumbnail_colours(tmp_path)
    assert any(r > g + 64 and r > b + 64 for r, g, b in colours)  # red sides
    assert any(b > r + 64 and b > g + 64 for r, g, b in colours)  # blue sides


def test_a_colour_group_gives_each_corner_its_colour(tmp_path: Path) -> None:
    resources = ('<m:colorgroup id="5"><m:color color="#00FF00"/><m:color color="#FFFF00"/>'
                 '</m:colorgroup>')
    data = package(resources, lambda i, corners: 'pid="5" p1="0" p2="1" p3="0"')
    result, _ = run(tmp_path, {"box.3mf": data}, "3mf", full=True)
    assert result["stats"]["materials"] == 1
    colours = thumbnail_colours(tmp_path)
    assert any(g > r + 64 and g > b + 64 for r, g, b in colours)  # green corners
    assert any(r > b + 64 and g > b + 64 for r, g, b in colours)  # blended toward yellow


def test_a_texture_group_draws_its_image(tmp_path: Path) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 200, 40)).save(picture, format="PNG")
    resources = ('<m:texture2d id="3" path="/3D/Texture/grass.png" contenttype="image/png"/>'
                 '<m:texture2dgroup id="4" texid="3"><m:tex2coord u="0" v="0"/>'
                 '<m:tex2coord u="1" v="0"/><m:tex2coord u="1" v="1"/></m:texture2dgroup>')
    data = package(resources, lambda i, _: 'pid="4" p1="0" p2="1" p3="2"',
                   extra={"3D/Texture/grass.png": picture.getvalue()})
    result, _ = run(tmp_path, {"box.3mf": data}, "3mf", full=True)
    stats = result["stats"]
    assert stats["textures"] == 1 and stats["texture_names"] == ["3D/Texture/grass.png"]
    assert stats["materials"] == 1
    colours = thumbnail_colours(tmp_path)
    assert colours and all(g > r and g > b for r, g, b in colours)  # green all over


def test_a_plain_3mf_is_still_grey(tmp_path: Path) -> None:
    data = package("", lambda i, _: "")
    result, _ = run(tmp_path, {"box.3mf": data}, "3mf", full=True)
    assert result["stats"]["materials"] == 0
    assert all(abs(r - b) <= 64 for r, _, b in thumbnail_colours(tmp_path))


def test_property_indices_out_of_range_draw_those_triangles_plain(tmp_path: Path) -> None:
    resources = ('<basematerials id="2"><base name="Red" displaycolor="#FF0000"/>'
                 '</basematerials>')
    # p1 past the table, below it, and not a number: trimesh reads the geometry, so must Kiln
    odd = {0: 'p1="7"', 1: 'p1="-1"', 2: 'p1="x"'}
    data = package(resources, lambda i, _: odd.get(i, ""), 'pid="2" pindex="0"')
    result, _ = run(tmp_path, {"box.3mf": data}, "3mf", full=True)
    assert result["stats"]["faces"] == 12 and result["stats"]["materials"] == 1
    colours = thumbnail_colours(tmp_path)
    assert any(r > g + 64 for r, g, b in colours)  # the rest is still red


def test_p2_without_p3_colours_the_whole_triangle_with_p1(tmp_path: Path) -> None:
    from tasks.threemf import read_appearance

    resources = ('<m:colorgroup id="5"><m:color color="#00FF00"/><m:color color="#FF0000"/>'
                 '</m:colorgroup>')
    data = package(resources, lambda i, _: 'pid="5" p1="0" p2="1"')
    path = tmp_path / "box.3mf"
    path.write_bytes(data)
    (painted,) = read_appearance(path, 10**8).painted.values()
    assert painted.colours is not None
    assert (painted.colours[:, :, :3] == (0, 255, 0)).all()  # the specification: p1 throughout


def test_a_texture_named_many_times_is_read_and_shrunk_for_drawing(tmp_path: Path) -> None:
    from tasks.threemf import TEXTURE_SIZE, read_appearance

    picture = io.BytesIO()
    Image.new("RGB", (2048, 64), (30, 200, 40)).save(picture, format="PNG")
    textures = "".join(f'<m:texture2d id="{10 + k}" path="/3D/Texture/grass.png" '
                       'contenttype="image/png"/>' for k in range(50))
    resources = (textures + '<m:texture2dgroup id="4" texid="10"><m:tex2coord u="0" v="0"/>'
                 '<m:tex2coord u="1" v="0"/><m:tex2coord u="1" v="1"/></m:texture2dgroup>')
    data = package(resources, lambda i, _: 'pid="4" p1="0" p2="1" p3="2"',
                   extra={"3D/Texture/grass.png": picture.getvalue()})
    path = tmp_path / "box.3mf"
    path.write_bytes(data)
    (painted,) = read_appearance(path, 10**8).painted.values()
    assert painted.texture is not None and painted.texture.shape[1] == TEXTURE_SIZE  # shrunk


def test_a_model_too_large_to_paint_still_counts_its_materials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import threemf

    monkeypatch.setattr(threemf, "PAINT_MAX_TRIANGLES", 5)
    resources = ('<basematerials id="2"><base name="Red" displaycolor="#FF0000"/>'
                 '<base name="Blue" displaycolor="#0000FF"/></basematerials>'
                 '<m:colorgroup id="5"><m:color color="#00FF00"/></m:colorgroup>')
    path = tmp_path / "box.3mf"
    path.write_bytes(package(resources, lambda i, _: "", 'pid="2" pindex="0"'))
    found = threemf.read_appearance(path, 10**8)
    assert found.painted == {} and found.materials == 3
