"""Unpack a zip upload by Kiln's own rules: list first, refuse what is unsafe or too big, then
extract member by member with every byte counted.

Refused (ArchiveRejected): more members than allowed, a declared or real total over the byte cap,
a member whose compression ratio is over the cap (a zip bomb), absolute names, `..`, drive letters,
symbolic links, names that collide (ignoring case), encrypted members and unknown compression.
"""

from __future__ import annotations

import posixpath
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import ArchiveRejected, CorruptFile
from tasks.progress import Limits

_CHUNK = 1024 * 1024
_SMALL_MEMBER = 64 * 1024  # below this, a high ratio is harmless (a text file of spaces)
_DRIVE = re.compile(r"^[A-Za-z]:")
_IGNORED = ("__MACOSX/",)


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_total_bytes: int
    max_ratio: float
    """Uncompressed bytes per compressed byte above which a member is taken for a bomb."""

    @classmethod
    def from_payload(cls, limits: Limits) -> ArchiveLimits:
        """The limits a task's payload carries (see Settings.pipeline_limits)."""
        return cls(max_members=limits["archive_max_members"],
                   max_total_bytes=limits["archive_max_bytes"],
                   max_ratio=limits["archive_max_ratio"])


def unpack_zip(source: Path, destination: Path, limits: ArchiveLimits) -> list[str]:
    """Extract the zip at `source` into `destination` (created); return the member names written,
    as relative POSIX paths. Mac resource forks and folders are skipped."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = check_members(archive.infolist(), limits)
            destination.mkdir(parents=True, exist_ok=True)
            written: list[str] = []
            budget = limits.max_total_bytes
            for info, name in members:
                budget -= _extract(archive, info, destination / name, budget, limits)
                written.append(name)
            return written
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        raise CorruptFile("The zip archive is damaged and cannot be unpacked.") from error


def check_members(
    infos: list[zipfile.ZipInfo], limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, str]]:
    """The members worth extracting, with their safe names; raises ArchiveRejected."""
    files = [i for i in infos if not i.is_dir()]
    if len(files) > limits.max_members:
        raise ArchiveRejected(
            f"The zip archive holds {len(files):,} files; at most {limits.max_members:,} are "
            "accepted.")
    declared = sum(i.file_size for i in files)
    if declared > limits.max_total_bytes:
        raise ArchiveRejected(
            f"The zip archive unpacks to {declared:,} bytes; at most {limits.max_total_bytes:,} "
            "are accepted.")
    seen: set[str] = set()
    kept = []
    for info in files:
        name = _safe_name(info)
        if name.startswith(_IGNORED) or name.rsplit("/", 1)[-1].startswith("._"):
            continue
        if name.lower() in seen:
            raise ArchiveRejected("The zip archive holds two files with the same name.")
        seen.add(name.lower())
        if info.flag_bits & 0x1:
            raise ArchiveRejected("The zip archive is encrypted; upload it without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveRejected("The zip archive uses a compression method Kiln does not read.")
        if info.file_size > _SMALL_MEMBER and (
            info.file_size > limits.max_ratio * max(info.compress_size, 1)
        ):
            raise ArchiveRejected(
                f"A file in the zip archive expands more than {limits.max_ratio:g} times "
                "(a zip bomb?).")
        kept.append((info, name))
    return kept


def _safe_name(info: zipfile.ZipInfo) -> str:
    raw = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveRejected("The zip archive holds a symbolic link; links are not accepted.")
    if "\x00" in raw or "\\" in raw:
        raise ArchiveRejected("The zip archive holds a file name with forbidden characters.")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise ArchiveRejected("The zip archive holds a file with an absolute path.")
    parts = raw.split("/")
    if ".." in parts:
        raise ArchiveRejected("The zip archive holds a file name that climbs out of it (`..`).")
    name = posixpath.join(*[p for p in parts if p not in ("", ".")]) if parts else ""
    if not name:
        raise ArchiveRejected("The zip archive holds a file with an empty name.")
    return name


def _extract(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int,
    limits: ArchiveLimits,
) -> int:
    """Copy one member, trusting none of its header: the real byte count is what is checked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    cap = min(budget, max(info.file_size, 0))
    written = 0
    with archive.open(info) as member, target.open("xb") as out:
        while chunk := member.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise ArchiveRejected(
                    "A file in the zip archive is bigger than its header says, or the archive "
                    f"unpacks to more than {limits.max_total_bytes:,} bytes.")
            out.write(chunk)
    return written
