"""PBR texture sets: names grouped into sets, maps checked against their roles, a sphere preview."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from tasks.errors import TaskError
from tasks.pbr import describe_set
from tasks.pbr_names import ROLES, TextureSet, group_sets, map_role, normal_convention_hint
from tasks.progress import Result
from tests.helpers.payloads import as_payload
from tests.helpers.payloads import limits as all_limits
from tests.tasks.test_normal_map import bumps, encode_normals

LIMIT = 50_000_000
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Rock_01_BaseColor.png", ("rock_01", "basecolor")),
        ("textures/Rock_01_Base_Color.PNG", ("rock_01", "basecolor")),
        ("rock albedo.jpg", ("rock", "basecolor")),
        ("rock_diff.tga", ("rock", "basecolor")),
        ("rock_col.webp", ("rock", "basecolor")),
        ("wood-normal-ogl.jpg", ("wood", "normal")),
        ("wood_nor_dx.png", ("wood", "normal")),
        ("wood_NormalGL.png", ("wood", "normal")),
        ("wood.nrm.tif", ("wood", "normal")),
        ("wood_rgh.png", ("wood", "roughness")),
        ("wood_Metalness.png", ("wood", "metallic")),
        ("wood_mtl.png", ("wood", "metallic")),
        ("wood_AmbientOcclusion.jpg", ("wood", "ao")),
        ("wood_ambient_occlusion.jpg", ("wood", "ao")),
        ("wood_disp.exr", ("wood", "height")),
        ("wood_emission.png", ("wood", "emissive")),
        ("wood_mask.png", ("wood", "opacity")),
        ("wood_spec.png", ("wood", "specular")),
        ("wood_gloss.png", ("wood", "glossiness")),
        ("rock_wall_diff_2k.jpg", ("rock_wall_2k", "basecolor")),
        ("Rock_BaseColor_4K.png", ("rock_4k", "basecolor")),
        ("rock_normal_256.png", ("rock_256", "normal")),
        ("rock_roughness_1024.jpg", ("rock_1024", "roughness")),
        ("Rock_ORM.png", ("rock", "orm")),
        ("rock_arm_2k.jpg", ("rock_2k", "orm")),
        ("Rock_occlusionRoughnessMetallic.png", ("rock", "orm")),
        ("Rock_roughnessMetallic.png", ("rock", "metallic_roughness")),
        ("Rock_MetallicRoughness.png", ("rock", "metallic_roughness")),
        ("rock_metal_rough.png", ("rock", "metallic_roughness")),
        ("C:\\assets\\rock_ao.png", ("rock", "ao")),
        ("rock_metal.mtl", None),  # a material library, not a map
        ("rock_normal.psd", None),
        ("basecolor.png", None),  # no stem
        ("rock.png", None),
        ("rock_color_variant.png", None),
        ("_normal.png", None),
    ],
)
def test_map_role(name: str, expected: tuple[str, str] | None) -> None:
    assert map_role(name) == expected


def test_normal_convention_hint() -> None:
    assert normal_convention_hint("wood-normal-ogl.jpg") == "opengl"
    assert normal_convention_hint("wood_nor_gl_4k.exr") == "opengl"
    assert normal_convention_hint("wood_normal_dx.png") == "directx"
    assert normal_convention_hint("wood_normal.png") is None
    assert normal_convention_hint("wood_color.png") is None


def test_group_sets() -> None:
    names = [
        "b/rock_normal.png", "rock_basecolor.png", "rock_roughness.jpg", "rock.mtl",
        "wood_albedo.png", "wood_diffuse.png", "wood_normal.png", "wood_ao.png",  # two basecolors
        "metal_roughness.png", "metal_metallic.png",  # neither basecolor nor normal
        "lone_basecolor.png",  # one map is no set
        "rock_basecolor.png",  # the same name twice counts once
        "notes.txt",
    ]
    assert group_sets(names) == [
        TextureSet("rock", {
            "basecolor": "rock_basecolor.png", "normal": "b/rock_normal.png",
            "roughness": "rock_roughness.jpg",
        }),
        TextureSet("wood", {"normal": "wood_normal.png", "ao": "wood_ao.png"}),
    ]
    assert group_sets(reversed(names)) == group_sets(names)
    assert list(group_sets(names)[0].maps) == [r for r in ROLES if r in group_sets(names)[0].maps]


def test_names_module_stays_light() -> None:
    source = (Path(__file__).resolve().parents[2] / "tasks" / "pbr_names.py").read_text()
    lines = source.splitlines()
    imports = {line.split()[1] for line in lines if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "re", "collections", "collections.abc", "dataclasses"}


def grey(value: int, size: int = 64) -> Image.Image:
    return Image.new("L", (size, size), value)


def write_set(directory: Path, maps: dict[str, Image.Image], stem: str = "rock") -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for role, image in maps.items():
        name = f"{stem}_{role}.png"
        image.save(directory / name, format="PNG")
        names.append(name)
    return names


def run(
    tmp_path: Path, names: list[str], save_as: str | None = None, **extra: Any
) -> tuple[Result, NDArray[np.uint8]]:
    events: list[tuple[str, float]] = []
    payload = {
        "files_dir": str(tmp_path / "files"), "files": names,
        "artifacts_dir": str(tmp_path / "artifacts"), "max_pixels": LIMIT,
        "limits": all_limits(), **extra,
    }
    result = describe_set(as_payload(payload),
                          lambda stage, fraction: events.append((stage, fraction)))
    assert [e for e in events if e[1] in (0.0, 1.0)][0] == ("open", 0.0)
    assert events[-1] == ("preview", 1.0)
    preview_path = tmp_path / "artifacts" / "preview.png"
    assert result["artifacts"] == [
        {"name": "preview.png", "media_type": "image/png", "size": preview_path.stat().st_size}
    ]
    if save_as:
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(preview_path, ARTIFACTS / save_as)
    with Image.open(preview_path) as preview:
        assert preview.size == (512, 512) and preview.mode == "RGBA"
        return result, np.asarray(preview).copy()


def test_red_sphere_with_transparent_corners(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {
        "basecolor": Image.new("RGB", (64, 64), (200, 20, 20)), "roughness": grey(150),
    })
    result, picture = run(tmp_path, names, save_as="pbr-red.png")
    for corner in ((0, 0), (0, 511), (511, 0), (511, 511), (10, 256)):
        assert picture[corner][3] == 0
    centre = picture[256, 256].astype(int)
    assert centre[3] == 255 and centre[0] > 2 * max(centre[1], centre[2]) and centre[0] > 100
    rim = picture[..., 3]
    assert 500 < int(((rim > 0) & (rim < 255)).sum()) < 10_000  # an antialiased edge, one px wide
    stats = result["stats"]
    assert stats["set"] == "rock" and stats["roles"] == ["basecolor", "roughness"]
    assert stats["maps"][0] == {
        "role": "basecolor", "file": "rock_basecolor.png", "width": 64, "height": 64, "mode": "RGB"
    }
    assert stats["warnings"] == [] and stats["normal_convention"] is None


def dome(size: int = 256, spread: float = 10.0, height: float = 12.0) -> NDArray[np.float64]:
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64) - size / 2
    field: NDArray[np.float64] = height * np.exp(-(rows**2 + columns**2) / (2 * spread**2))
    return field


@pytest.mark.parametrize("convention", ["opengl", "directx"])
def test_normal_map_lights_a_dome_from_the_light_side(tmp_path: Path, convention: str) -> None:
    """A raised dome at the texture's centre faces the front; the light comes from the upper left,
    so its left slope is lit better than its right one, its upper than its lower one."""
    base = Image.new("RGB", (256, 256), (150, 150, 150))
    rough = grey(255, 256)  # no highlight to confuse the diffuse comparison
    flat = run(tmp_path / "a", write_set(tmp_path / "a" / "files", {
        "basecolor": base, "normal": Image.new("RGB", (256, 256), (128, 128, 255)),
        "roughness": rough,
    }))[1][..., :3].astype(int).sum(axis=-1)
    names = write_set(tmp_path / "b" / "files", {
        "basecolor": base, "normal": encode_normals(dome(), convention), "roughness": rough,
    })
    result, picture = run(tmp_path / "b", names, save_as=f"pbr-dome-{convention}.png")
    bumpy = picture[..., :3].astype(int).sum(axis=-1)
    assert result["stats"]["normal_convention"] == convention
    change = bumpy - flat
    # the dome's slopes 7 texels from its centre, projected onto the sphere's front
    left, right = change[256, 190], change[256, 322]
    upper, lower = change[234, 256], change[278, 256]
    assert left > right + 100 and right < -50
    assert upper > lower + 100 and lower < -50
    assert abs(change[256, 256]) < 10 and abs(change[60, 256]) < 10  # its top and far away


def test_bumpy_preview(tmp_path: Path) -> None:
    rows, columns = np.mgrid[0:256, 0:256] * (2 * np.pi / 32)
    egg_crate = 4.0 * np.sin(rows) * np.sin(columns)
    names = write_set(tmp_path / "files", {
        "basecolor": Image.new("RGB", (256, 256), (170, 120, 80)),
        "normal": encode_normals(egg_crate, "opengl"), "roughness": grey(100, 256),
    })
    result, picture = run(tmp_path, names, save_as="pbr-egg-crate.png")
    assert result["stats"]["normal_convention"] == "opengl"
    assert picture[200:300, 200:300, :3].astype(int).sum(axis=-1).std() > 40


def test_roughness_changes_the_highlight(tmp_path: Path) -> None:
    base = Image.new("RGB", (64, 64), (40, 60, 160))
    peaks = {}
    for roughness in (20, 230):
        folder = tmp_path / str(roughness)
        names = write_set(folder / "files", {"basecolor": base, "roughness": grey(roughness)})
        picture = run(folder, names, save_as=f"pbr-roughness-{roughness}.png")[1]
        luminance = picture[..., :3].astype(float).mean(axis=-1)
        peaks[roughness] = (luminance.max(), int((luminance > 200).sum()))
    assert peaks[20][0] > peaks[230][0] + 40  # a smooth sphere shows a bright, tight highlight
    assert peaks[20][1] > 0 and peaks[230][1] == 0


def test_packed_maps_give_their_channels_to_the_preview(tmp_path: Path) -> None:
    base = Image.new("RGB", (64, 64), (230, 180, 60))
    pictures = {}
    sets: dict[str, dict[str, Image.Image]] = {
        "apart": {"basecolor": base, "roughness": grey(90), "metallic": grey(255),
                  "ao": grey(128)},
        "orm": {"basecolor": base, "orm": Image.new("RGB", (64, 64), (128, 90, 255))},
        "metallic_roughness": {"basecolor": base, "ao": grey(128),
                               "metallic_roughness": Image.new("RGB", (64, 64), (0, 90, 255))},
    }
    for name, maps in sets.items():
        folder = tmp_path / name
        result, picture = run(folder, write_set(folder / "files", maps))
        assert set(result["stats"]["roles"]) == set(maps)
        pictures[name] = picture.astype(int)
    # the same sphere whether the grey maps come apart or packed in one
    assert np.abs(pictures["orm"] - pictures["apart"]).max() <= 1
    assert np.abs(pictures["metallic_roughness"] - pictures["apart"]).max() <= 1


def test_a_packed_set_with_resolution_tags_is_one_material(tmp_path: Path) -> None:
    from tasks.pbr_names import group_sets

    names = ["Rock_BaseColor_4K.png", "Rock_Normal_4K.png", "Rock_ORM_4K.png",
             "Rock_BaseColor_256.png", "Rock_Normal_256.png", "Rock_ARM_256.png"]
    sets = group_sets(names)
    assert [(s.stem, sorted(s.maps)) for s in sets] == [
        ("rock_256", ["basecolor", "normal", "orm"]), ("rock_4k", ["basecolor", "normal", "orm"])]


def test_metal_loses_its_diffuse_light(tmp_path: Path) -> None:
    pictures = {}
    for metallic in (0, 255):
        folder = tmp_path / str(metallic)
        names = write_set(folder / "files", {
            "basecolor": Image.new("RGB", (64, 64), (230, 180, 60)), "metallic": grey(metallic),
            "roughness": grey(90), "ao": grey(255),
        })
        result, picture = run(folder, names, save_as=f"pbr-metallic-{metallic}.png")
        assert result["stats"]["roles"] == ["basecolor", "roughness", "metallic", "ao"]
        pictures[metallic] = picture[..., :3].astype(int)
    # away from the highlight a metal shows only its dim reflection of the ambient light
    assert pictures[255][256, 256].sum() < 0.6 * pictures[0][256, 256].sum()
    assert pictures[255].max() == 255  # but its highlight is as bright


def test_directx_set_and_warnings(tmp_path: Path) -> None:
    files = tmp_path / "files"
    names = write_set(files, {
        "basecolor": Image.new("RGB", (128, 128), (90, 120, 60)),
        "roughness": Image.new("RGB", (64, 64), (200, 30, 90)),  # coloured and smaller
    })
    encode_normals(bumps(128, seed=2), "directx").save(files / "rock_normal_gl.png")
    result, _ = run(tmp_path, [*names, "rock_normal_gl.png", "readme.png"])
    stats = result["stats"]
    assert stats["normal_convention"] == "directx"
    codes = [w["code"] for w in stats["warnings"]]
    assert codes == [
        "unknown_role", "size_mismatch", "not_grey", "convention_mismatch"
    ]
    assert "rock_roughness.png 64×64" in stats["warnings"][1]["message"]


def test_normal_that_is_not_a_normal_map_and_basecolor_that_is(tmp_path: Path) -> None:
    normal = encode_normals(bumps(64), "opengl")
    names = write_set(tmp_path / "files", {
        "basecolor": normal, "normal": Image.effect_noise((64, 64), 50).convert("RGB"),
    })
    codes = [w["code"] for w in run(tmp_path, names)[0]["stats"]["warnings"]]
    assert codes == ["basecolor_looks_like_normal", "normal_not_normal"]


def test_normal_only_set_renders(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {"normal": encode_normals(bumps(128), "opengl")})
    picture = run(tmp_path, names)[1]
    assert picture[256, 256, 3] == 255


@pytest.mark.parametrize("name", ["../rock_basecolor.png", "sub/rock_basecolor.png", "..", ""])
def test_unsafe_names_are_refused_before_anything_opens(tmp_path: Path, name: str) -> None:
    names = write_set(tmp_path / "files", {"basecolor": grey(10)})
    with pytest.raises(TaskError) as caught:
        run(tmp_path, [*names, name])
    assert caught.value.code == "unsafe_reference"
    assert not (tmp_path / "artifacts").exists()


def test_a_link_is_not_followed(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {"basecolor": grey(10)})
    outside = tmp_path / "secret.png"
    grey(99).save(outside)
    (tmp_path / "files" / "rock_normal.png").symlink_to(outside)
    with pytest.raises(TaskError) as caught:
        run(tmp_path, [*names, "rock_normal.png"])
    assert caught.value.code == "unsafe_reference"


def test_missing_file_is_corrupt(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {"basecolor": grey(10)})
    with pytest.raises(TaskError) as caught:
        run(tmp_path, [*names, "rock_normal.png"])
    assert caught.value.code == "corrupt_file"
    assert "rock_normal.png" in caught.value.message and str(tmp_path) not in caught.value.message


def test_psd_renamed_png_is_corrupt(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {"basecolor": grey(10)})
    header = struct.pack(">HIIHH", 3, 8, 8, 8, 3)
    (tmp_path / "files" / "rock_normal.png").write_bytes(b"8BPS\x00\x01" + bytes(6) + header)
    with pytest.raises(TaskError) as caught:
        run(tmp_path, [*names, "rock_normal.png"])
    assert caught.value.code == "corrupt_file"
    assert "rock_normal.png" in caught.value.message


def test_bomb_in_a_set_is_too_large(tmp_path: Path) -> None:
    from tests.tasks.test_imaging import png_bomb

    names = write_set(tmp_path / "files", {"basecolor": grey(10)})
    (tmp_path / "files" / "rock_height.png").write_bytes(png_bomb())
    with pytest.raises(TaskError) as caught:
        run(tmp_path, [*names, "rock_height.png"])
    assert caught.value.code == "too_large"


def test_set_without_basecolor_or_normal_is_unsupported(tmp_path: Path) -> None:
    names = write_set(tmp_path / "files", {"roughness": grey(10), "metallic": grey(0)})
    with pytest.raises(TaskError) as caught:
        run(tmp_path, names)
    assert caught.value.code == "unsupported_format"
    assert "base colour or a normal map" in caught.value.message


def test_exr_maps_in_a_set(tmp_path: Path) -> None:
    import OpenEXR

    files = tmp_path / "files"
    names = write_set(files, {"basecolor": Image.new("RGB", (32, 32), (20, 200, 20))})
    height = np.full((32, 32), 0.8, dtype=np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"Y": height}).write(str(files / "rock_roughness.exr"))
    result, picture = run(tmp_path, [*names, "rock_roughness.exr"])
    roughness = result["stats"]["maps"][1]
    assert roughness["role"] == "roughness" and roughness["mode"] == "exr"
    assert picture[256, 256, 1] > picture[256, 256, 0]
