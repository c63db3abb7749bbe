"""Recognise PBR texture maps by their file names and group them into sets (stdlib only)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

ROLES = (
    "basecolor",
    "normal",
    "roughness",
    "metallic",
    "ao",
    "height",
    "emissive",
    "opacity",
    "specular",
    "glossiness",
    "orm",
    "metallic_roughness",
)
PACKED: dict[str, dict[str, int]] = {
    "orm": {"ao": 0, "roughness": 1, "metallic": 2},
    "metallic_roughness": {"roughness": 1, "metallic": 2},
}
"""Packed maps: the channel (0 red, 1 green, 2 blue) each grey role sits in. ORM (also named
ARM, occlusionRoughnessMetallic) is Unreal's and glTF's layout; glTF's metallicRoughness
texture keeps the same green and blue."""
IMAGE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "tga", "tif", "tiff", "webp", "bmp", "gif", "exr"}
)

_SEP = r"[_\-. ]"
# the suffix words of each role; a separator may sit inside the multi-word ones
_ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "basecolor": (rf"base{_SEP}?colou?r", "albedo", "diffuse", "diff", "colou?r", "col"),
    "normal": (rf"(?:normal|norm|nrm|nor|nml)(?:{_SEP}?(?:gl|ogl|opengl|dx|directx))?",),
    "roughness": ("roughness", "rough", "rgh"),
    "metallic": ("metallic", "metalness", "metal", "mtl"),
    "ao": (rf"ambient{_SEP}?occlusion", "occlusion", "occ", "ao"),
    "height": ("height", "displacement", "displace", "disp", "bump"),
    "emissive": ("emissive", "emission", "emit"),
    "opacity": ("opacity", "transparency", "alpha", "mask"),
    "specular": ("specular", "spec"),
    "glossiness": ("glossiness", "gloss"),
    "orm": ("orm", "arm",
            rf"(?:ambient{_SEP}?)?occlusion{_SEP}?rough(?:ness)?{_SEP}?metal(?:lic|ness)?"),
    "metallic_roughness": (rf"metal(?:lic|ness)?{_SEP}?rough(?:ness)?",
                           rf"rough(?:ness)?{_SEP}?metal(?:lic|ness)?"),
}
_ROLE_PATTERNS = {
    role: re.compile("|".join(f"(?:{word})" for word in words))
    for role, words in _ROLE_WORDS.items()
}
# stem, role word, then an optional resolution tag ("_2k" as Poly Haven names its maps, "_4K",
# or pixels: "_256", "_1024")
_MAP_NAME = re.compile(
    rf"(?P<stem>.+?){_SEP}(?P<role>{'|'.join(p.pattern for p in _ROLE_PATTERNS.values())})"
    rf"(?:(?P<sep>{_SEP})(?P<resolution>\d{{1,2}}k|\d{{2,5}}))?"
)


@dataclass(frozen=True)
class TextureSet:
    """The maps of one material: `maps` is role -> file name, in the order of ROLES."""

    stem: str
    maps: dict[str, str] = field(hash=False)


def map_role(filename: str) -> tuple[str, str] | None:
    """(stem, role) of a texture map named like `Rock_01_BaseColor.png`, or None.

    The folder part is ignored and the name compared in lower case. The name must have an image
    extension (so `metal.mtl` is no map) and end with a role word after a separator (_ - . or a
    space), optionally followed by a resolution tag: `rock_wall_diff_2k.jpg` is the basecolor of
    the stem `rock_wall_2k`, keeping 2k and 4k sets apart. A convention tag belongs to the normal
    role word: `wood-normal-ogl.jpg` and `wood_nor_dx.png` are normal maps of `wood`.
    """
    name = re.split(r"[/\\]", filename)[-1].lower()
    base, dot, extension = name.rpartition(".")
    if not dot or extension not in IMAGE_EXTENSIONS:
        return None
    found = _MAP_NAME.fullmatch(base)
    if found is None:
        return None
    stem = found["stem"].strip(" _-.")
    if not stem:
        return None
    if found["resolution"]:
        stem = f"{stem}{found['sep']}{found['resolution']}"
    word = found["role"]
    role = next(r for r, pattern in _ROLE_PATTERNS.items() if pattern.fullmatch(word))
    return stem, role


def normal_convention_hint(filename: str) -> str | None:
    """The convention a normal map's name states (`_normal_gl`, `_nor_dx`), or None."""
    if map_role(filename) is None:
        return None
    found = _MAP_NAME.fullmatch(re.split(r"[/\\]", filename)[-1].lower().rpartition(".")[0])
    word = found["role"] if found else ""
    if not _ROLE_PATTERNS["normal"].fullmatch(word):
        return None
    # no normal word (normal, norm, nrm, nor, nml) ends in these letters themselves
    if word.endswith("gl"):
        return "opengl"
    if word.endswith(("dx", "directx")):
        return "directx"
    return None


def group_sets(filenames: Iterable[str]) -> list[TextureSet]:
    """Sets of at least two maps sharing a stem, one of them a basecolor or a normal map.

    A stem with two files for one role is ambiguous: those files stay out of its set (which
    may still form without them). Sets come sorted by stem; identical names count once.
    """
    by_stem: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for filename in sorted(set(filenames)):
        found = map_role(filename)
        if found is not None:
            stem, role = found
            by_stem[stem][role].append(filename)
    sets = []
    for stem in sorted(by_stem):
        roles = by_stem[stem]
        maps = {role: roles[role][0] for role in ROLES if len(roles.get(role, ())) == 1}
        if len(maps) >= 2 and ("basecolor" in maps or "normal" in maps):
            sets.append(TextureSet(stem, maps))
    return sets
