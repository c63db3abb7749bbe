"""The PBR texture-set pipeline: open a set's maps safely, check they fit together, preview them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tasks.errors import CorruptFile, UnsafeReference, UnsupportedFormat
from tasks.imaging import (
    linear_to_srgb,
    open_exr,
    open_image,
    safe_label,
    srgb_to_linear,
    to_display,
    tone_map,
)
from tasks.normal_map import NormalMapVerdict, normal_map_verdict
from tasks.pbr_names import PACKED, ROLES, map_role, normal_convention_hint
from tasks.progress import Artifact, Payload, Progress, Result

GREY_ROLES = frozenset({"roughness", "metallic", "ao", "height", "glossiness", "opacity"})
# mean |R-G| + |G-B| (0..255 scale) above which a map that should be grey is called coloured
MAX_GREY_SPREAD = 6.0
EXR_MAGIC = b"\x76\x2f\x31\x01"
PREVIEW_NAME = "preview.png"
# maps are reduced to this before the preview samples them: a 512 px sphere shows no more
PREVIEW_TEXTURE_SIZE = 1024


@dataclass(frozen=True)
class LoadedMap:
    """One map of the set, opened: its 8-bit display image and what it was."""

    role: str
    file: str
    image: Image.Image
    width: int
    height: int
    mode: str


def describe_set(payload: Payload, progress: Progress) -> Result:
    """Describe the maps of one texture set and render `preview.png`, a sphere wearing them.

    payload: `files_dir`, `files` (names inside it, the maps of one set), `artifacts_dir`,
    `max_pixels`, `limits` (`preview_size`). Problems that do not stop a preview (sizes
    that differ, a coloured roughness map...) are reported in `warnings`, not raised.
    """
    files_dir = Path(payload["files_dir"])
    names = [str(name) for name in payload["files"]]
    max_pixels = int(payload["max_pixels"])
    preview_size = payload["limits"]["preview_size"]
    warnings: list[dict[str, str]] = []
    roles = _assign_roles(names, warnings)
    if "basecolor" not in roles and "normal" not in roles:
        listed = ", ".join(safe_label(name) for name in names[:5]) or "no files"
        raise UnsupportedFormat(
            f"This is not a texture set Kiln can show: it needs a base colour or a normal map "
            f"(got {listed})."
        )
    progress("open", 0.0)
    maps: list[LoadedMap] = []
    for index, (role, name) in enumerate(roles.items()):
        maps.append(_load(files_dir, name, role, max_pixels))
        progress("open", (index + 1) / len(roles))
    progress("analyse", 0.0)
    by_role = {m.role: m for m in maps}
    verdict = _check(by_role, warnings)
    convention: str | None = verdict["convention"] if verdict else None
    if "normal" in by_role and convention is None:
        convention = normal_convention_hint(by_role["normal"].file)
    progress("analyse", 1.0)
    progress("preview", 0.0)
    images = {role: m.image for role, m in by_role.items()}
    preview = render_sphere(images, convention or "opengl", preview_size)
    artifacts_dir = Path(payload["artifacts_dir"])
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    target = artifacts_dir / PREVIEW_NAME
    preview.save(target, format="PNG", optimize=True)
    progress("preview", 1.0)
    stats = {
        "set": _stem(maps),
        "maps": [
            {"role": m.role, "file": safe_label(m.file), "width": m.width, "height": m.height,
             "mode": m.mode}
            for m in maps
        ],
        "roles": [m.role for m in maps],
        "warnings": warnings,
        "normal_convention": convention,
        "normal_map": verdict,
    }
    artifact: Artifact = {"name": PREVIEW_NAME, "media_type": "image/png",
                          "size": target.stat().st_size}
    return {"stats": stats, "artifacts": [artifact]}


def _assign_roles(names: list[str], warnings: list[dict[str, str]]) -> dict[str, str]:
    """role -> name, in the order of ROLES; names are checked before anything is opened."""
    found: dict[str, str] = {}
    for name in names:
        _check_name(name)
        named = map_role(name)
        if named is None:
            warnings.append(_warning(
                "unknown_role", f"{safe_label(name)} is not named like a PBR map; it was left out."
            ))
        elif named[1] in found:
            warnings.append(_warning(
                "duplicate_role",
                f"{safe_label(name)} is a second {named[1]} map; "
                f"{safe_label(found[named[1]])} was used.",
            ))
        else:
            found[named[1]] = name
    return {role: found[role] for role in ROLES if role in found}


def _check_name(name: str) -> None:
    if (
        not name
        or "/" in name
        or "\\" in name
        or ".." in name
        or "\x00" in name
        or name.startswith(".")
    ):
        raise UnsafeReference(f"The texture set names a file outside it: {safe_label(name)!r}.")


def _load(files_dir: Path, name: str, role: str, max_pixels: int) -> LoadedMap:
    path = files_dir / name
    label = f"texture {safe_label(name)}"
    try:
        if path.is_symlink():
            raise UnsafeReference(f"The {label} is a link; links are not followed.")
        with path.open("rb") as file:
            head = file.read(4)
    except FileNotFoundError as error:
        raise CorruptFile(f"The texture set lists {safe_label(name)}, which is missing.") from error
    except IsADirectoryError as error:
        raise CorruptFile(f"The {label} is a folder, not an image.") from error
    if os.path.realpath(path).rpartition(os.sep)[0] != os.path.realpath(files_dir):
        raise UnsafeReference(f"The {label} lies outside the texture set.")
    if head == EXR_MAGIC:
        exr = open_exr(path, max_pixels, what=label)
        if role in ("basecolor", "emissive"):  # light-like data: show it as a viewer would
            image = tone_map(exr)[0]
        else:  # data maps hold 0..1 values, stored linearly
            encoded = np.round(np.clip(exr.colour, 0.0, 1.0) * 255.0).astype(np.uint8)
            image = Image.fromarray(encoded)
        return LoadedMap(role, name, image, exr.width, exr.height, "exr")
    with open_image(path, max_pixels, None, what=label) as opened:
        width, height, mode = opened.width, opened.height, opened.mode
        image = to_display(opened)
    return LoadedMap(role, name, image, width, height, mode)


def _check(
    by_role: dict[str, LoadedMap], warnings: list[dict[str, str]]
) -> NormalMapVerdict | None:
    """Warn about maps that do not fit together or their role; the normal map's verdict."""
    sizes = {(m.width, m.height) for m in by_role.values()}
    if len(sizes) > 1:
        listed = ", ".join(
            f"{safe_label(m.file)} {m.width}×{m.height}" for m in by_role.values()
        )
        warnings.append(_warning("size_mismatch", f"The maps differ in size: {listed}."))
    for role, loaded in by_role.items():
        if role in GREY_ROLES and _grey_spread(loaded.image) > MAX_GREY_SPREAD:
            warnings.append(_warning(
                "not_grey",
                f"The {role} map {safe_label(loaded.file)} is coloured; it should be grey "
                f"(a packed map? only its brightness is used).",
            ))
    base = by_role.get("basecolor")
    if base is not None and normal_map_verdict(base.image)["likely"]:
        warnings.append(_warning(
            "basecolor_looks_like_normal",
            f"The base colour {safe_label(base.file)} looks like a normal map.",
        ))
    normal = by_role.get("normal")
    if normal is None:
        return None
    verdict = normal_map_verdict(normal.image)
    if not verdict["likely"]:
        warnings.append(_warning(
            "normal_not_normal",
            f"The normal map {safe_label(normal.file)} does not look like a tangent-space one.",
        ))
    hint = normal_convention_hint(normal.file)
    if hint and verdict["convention"] and hint != verdict["convention"]:
        warnings.append(_warning(
            "convention_mismatch",
            f"The normal map {safe_label(normal.file)} is named {hint} but its content is "
            f"{verdict['convention']}; the content was trusted.",
        ))
    return verdict


def _grey_spread(image: Image.Image) -> float:
    if image.mode not in ("RGB", "RGBA"):
        return 0.0
    small = image.convert("RGB")
    small.thumbnail((256, 256))
    pixels = np.asarray(small, dtype=np.float64)
    spread = np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])
    return float(spread.mean())


def _stem(maps: list[LoadedMap]) -> str:
    for loaded in maps:
        named = map_role(loaded.file)
        if named is not None:
            return safe_label(named[0])
    return ""


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


KEY_LIGHT = (-0.45, 0.55, 0.70)  # from the upper left, towards the viewer
KEY_INTENSITY = 3.0
AMBIENT = 0.15
SPHERE_RADIUS = 0.92  # of half the image width


def render_sphere(
    maps: dict[str, Image.Image], convention: str, size: int
) -> Image.Image:
    """An RGBA picture of a sphere wearing `maps` (role -> 8-bit image), transparent around it.

    Orthographic rays meet the sphere analytically; uv is spherical (u around Y, v from the
    bottom pole); the normal map is in tangent space (`convention`: its green is up the image
    for opengl, down for directx); GGX specular and Lambert diffuse under one key light, plus
    an ambient term that the ao map darkens.
    """
    centres = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x, y = np.meshgrid(centres, -centres)  # y grows up the picture
    distance = np.hypot(x, y)
    coverage = np.clip((SPHERE_RADIUS - distance) * size / 2.0 + 0.5, 0.0, 1.0)  # smooth rim
    inside = coverage > 0.0
    px, py = x[inside] / SPHERE_RADIUS, y[inside] / SPHERE_RADIUS
    pz = np.sqrt(np.clip(1.0 - px * px - py * py, 0.0, 1.0))
    normal = _normalise(np.stack([px, py, pz], axis=-1))
    around = np.hypot(normal[:, 0], normal[:, 2])
    u = 0.5 + np.arctan2(normal[:, 0], normal[:, 2]) / (2.0 * np.pi)
    v = 0.5 + np.arcsin(np.clip(normal[:, 1], -1.0, 1.0)) / np.pi
    safe = np.maximum(around, 1e-9)
    tangent = np.stack([normal[:, 2] / safe, np.zeros_like(safe), -normal[:, 0] / safe], axis=-1)
    bitangent = np.cross(normal, tangent)  # points up the sphere, the way v grows

    def grey(role: str, default: float) -> NDArray[np.float64]:
        if role in maps:
            return _sample(maps[role], "L", u, v)[:, 0]
        for packed, channels in PACKED.items():  # a channel of a packed map
            if packed in maps and role in channels:
                return _sample(maps[packed], "RGB", u, v)[:, channels[role]]
        return np.full(u.shape, default)

    if "basecolor" in maps:
        albedo = srgb_to_linear(_sample(maps["basecolor"], "RGB", u, v))
    else:
        albedo = np.full((u.size, 3), 0.6)
    shading = normal
    if "normal" in maps:
        local = _sample(maps["normal"], "RGB", u, v) * 2.0 - 1.0
        if convention == "directx":
            local[:, 1] = -local[:, 1]
        shading = _normalise(
            local[:, :1] * tangent + local[:, 1:2] * bitangent + local[:, 2:3] * normal
        )
    if "roughness" in maps or "glossiness" not in maps:
        roughness = grey("roughness", 0.5)
    else:
        roughness = 1.0 - grey("glossiness", 0.5)
    roughness = np.clip(roughness, 0.05, 1.0)[:, None]
    metallic = grey("metallic", 0.0)[:, None]
    ambient_occlusion = grey("ao", 1.0)[:, None]
    opacity = grey("opacity", 1.0)
    emissive = (
        srgb_to_linear(_sample(maps["emissive"], "RGB", u, v)) if "emissive" in maps else 0.0
    )
    radiance = _ggx(albedo, shading, roughness, metallic)
    ambient = AMBIENT * ambient_occlusion * albedo * (1.0 - 0.5 * metallic)
    colour = linear_to_srgb(np.clip(radiance + ambient + emissive, 0.0, 1.0))
    picture = np.zeros((size, size, 4), dtype=np.uint8)
    picture[inside, :3] = np.round(colour * 255.0).astype(np.uint8)
    picture[inside, 3] = np.round(coverage[inside] * opacity * 255.0).astype(np.uint8)
    return Image.fromarray(picture)


def _ggx(
    albedo: NDArray[np.float64],
    normal: NDArray[np.float64],
    roughness: NDArray[np.float64],
    metallic: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Light reflected to the viewer (0, 0, 1) from the key light: Cook-Torrance GGX + Lambert."""
    light = _normalise(np.array(KEY_LIGHT))
    view = np.array([0.0, 0.0, 1.0])
    half = _normalise(light + view)
    n_dot_l = np.clip(normal @ light, 0.0, 1.0)[:, None]
    n_dot_v = np.clip(normal @ view, 1e-4, 1.0)[:, None]
    n_dot_h = np.clip(normal @ half, 0.0, 1.0)[:, None]
    v_dot_h = float(np.clip(view @ half, 0.0, 1.0))
    alpha2 = (roughness * roughness) ** 2
    distribution = alpha2 / (np.pi * (n_dot_h * n_dot_h * (alpha2 - 1.0) + 1.0) ** 2)
    k = (roughness + 1.0) ** 2 / 8.0
    geometry = (n_dot_l / (n_dot_l * (1.0 - k) + k)) * (n_dot_v / (n_dot_v * (1.0 - k) + k))
    f0 = 0.04 * (1.0 - metallic) + albedo * metallic
    fresnel = f0 + (1.0 - f0) * (1.0 - v_dot_h) ** 5
    specular = distribution * geometry * fresnel / np.maximum(4.0 * n_dot_l * n_dot_v, 1e-4)
    diffuse = (1.0 - fresnel) * (1.0 - metallic) * albedo / np.pi
    result: NDArray[np.float64] = (diffuse + specular) * KEY_INTENSITY * n_dot_l
    return result


def _sample(
    image: Image.Image, mode: str, u: NDArray[np.float64], v: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Bilinear samples (n, bands) in 0..1 at (u, v): u wraps around, v is clamped."""
    small = image.convert(mode)
    small.thumbnail((PREVIEW_TEXTURE_SIZE, PREVIEW_TEXTURE_SIZE), Image.Resampling.BOX)
    texels = np.asarray(small, dtype=np.float64) / 255.0
    if texels.ndim == 2:
        texels = texels[..., None]
    rows, columns = texels.shape[:2]
    fx = u * columns - 0.5
    fy = (1.0 - v) * rows - 0.5  # v = 0 is the bottom row
    x0, y0 = np.floor(fx), np.floor(fy)
    ax, ay = (fx - x0)[:, None], (fy - y0)[:, None]
    left, right = x0.astype(np.int64) % columns, (x0.astype(np.int64) + 1) % columns
    top = np.clip(y0.astype(np.int64), 0, rows - 1)
    bottom = np.clip(y0.astype(np.int64) + 1, 0, rows - 1)
    upper = texels[top, left] * (1.0 - ax) + texels[top, right] * ax
    lower = texels[bottom, left] * (1.0 - ax) + texels[bottom, right] * ax
    result: NDArray[np.float64] = upper * (1.0 - ay) + lower * ay
    return result


def _normalise(vectors: NDArray[np.float64]) -> NDArray[np.float64]:
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    result: NDArray[np.float64] = vectors / np.maximum(length, 1e-12)
    return result
