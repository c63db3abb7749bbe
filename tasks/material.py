"""The material pipeline: a Substance archive (.sbsar), a Substance source (.sbs), or one PBR
texture set (maps uploaded together, or zipped)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tasks.archive import ArchiveLimits, unpack_zip
from tasks.errors import UnsupportedFormat
from tasks.pbr import describe_set
from tasks.pbr_names import group_sets
from tasks.progress import Payload, Progress, Result
from tasks.substance import describe_sbs, describe_sbsar


def process(payload: Payload, progress: Progress) -> Result:
    """Describe the material the task holds; its format says which kind it is."""
    fmt = str(payload["format"])
    describe: dict[str, Callable[[Payload, Progress], Result]] = {
        "sbsar": describe_sbsar, "sbs": describe_sbs, "pbr": describe_set,
        "zip": lambda p, report: describe_set(_unzipped_set(p, report), report),
    }
    if fmt not in describe:
        raise UnsupportedFormat(f"{fmt.upper()} materials are not supported.")
    return describe[fmt](payload, progress)


def _unzipped_set(payload: Payload, progress: Progress) -> Payload:
    progress("unpack", 0.0)
    directory = Path(payload["work_dir"]) / "unzipped"
    names = unpack_zip(Path(payload["source"]), directory,
                       ArchiveLimits.from_payload(payload["limits"]))
    sets = group_sets(names)
    if len(sets) != 1:
        found = "no texture set" if not sets else f"{len(sets)} texture sets"
        raise UnsupportedFormat(f"The zip archive must hold exactly one texture set; it holds "
                                f"{found}.")
    folders = {name.rpartition("/")[0] for name in sets[0].maps.values()}
    if len(folders) != 1:
        raise UnsupportedFormat("The maps of the texture set must sit in one folder of the zip.")
    folder = directory.joinpath(*folders.pop().split("/"))  # a name the unpacker checked
    progress("unpack", 1.0)
    return {**payload, "files_dir": str(folder),
            "files": sorted(name.rpartition("/")[2] for name in sets[0].maps.values())}
