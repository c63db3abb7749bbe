"""Uploads and artifacts on disk, under server-made ids only; display names are sanitised copies.

    <data>/incoming/<random>.part          a file while it is being received
    <data>/tasks/<task id>/files/<name>    the task's uploaded files, under sanitised unique names
    <data>/tasks/<task id>/work            a run's unpacked zip, removed when the run ends
    <data>/tasks/<task id>/artifacts/<n>   what the pipeline wrote (names chosen by Kiln's code)
    <data>/tasks/<task id>/source          the single upload of a task made by Kiln 0.1
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import unicodedata
from pathlib import Path

from records.ids import is_valid_id, new_id

MAX_DISPLAY_NAME = 200
MAX_STORED_NAME_BYTES = 180
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# C0 and C1 controls, and the bidirectional controls (Unicode's Bidi_Control set: the embeddings,
# overrides and isolates U+202A-U+202E and U+2066-U+2069, and the marks U+061C, U+200E, U+200F),
# with which a name like `photo\u202egpj.exe` would be shown as `photoexe.jpg`.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def display_name(raw: str | None) -> str:
    """The client's file name made safe to show and store as text: no path, no control or
    bidirectional-control characters."""
    return _base_name(raw)[:MAX_DISPLAY_NAME] or "upload"


def _base_name(raw: str | None) -> str:
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return _CONTROL.sub("", name).strip().lstrip(".")


def stored_names(raw_names: list[str]) -> list[str]:
    """One safe file name per upload part, unique within the upload without regard to case, each
    short enough for any file system; a clash gets a counter before its extension."""
    taken: set[str] = set()
    names = []
    for raw in raw_names:
        name = _fit_bytes(_base_name(raw) or "upload")
        stem, dot, suffix = name.rpartition(".")
        if not dot:
            stem, suffix = name, ""
        counter = 1
        while name.lower() in taken:
            counter += 1
            tail = f" ({counter}){dot}{suffix}"
            name = _fit_bytes(stem, MAX_STORED_NAME_BYTES - len(tail.encode())) + tail
        taken.add(name.lower())
        names.append(name)
    return names


def _fit_bytes(name: str, limit: int = MAX_STORED_NAME_BYTES) -> str:
    """`name` cut to `limit` UTF-8 bytes, its extension kept when it can be."""
    while len(name.encode()) > limit:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem[:-1]}{dot}{suffix}" if dot and len(stem) > 1 else name[:-1]
    return name


class Storage:
    """The data directory's file layout; every path it returns is inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.incoming = self.root / "incoming"
        self.tasks = self.root / "tasks"

    def prepare(self) -> None:
        for directory in (self.root, self.incoming, self.tasks):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def new_incoming(self) -> Path:
        return self.incoming / f"{new_id()}.part"

    def task_dir(self, task_id: str) -> Path:
        if not is_valid_id(task_id):
            raise ValueError("not a task id")
        return self.tasks / task_id

    def source(self, task_id: str) -> Path:
        """Where Kiln 0.1 kept a task's single upload (tasks it queued still run)."""
        return self.task_dir(task_id) / "source"

    def files_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "files"

    def work_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "work"

    def artifacts_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "artifacts"

    def artifact(self, task_id: str, name: str) -> Path | None:
        """The artifact's path, or None when the name is not one Kiln could have written."""
        if not ARTIFACT_NAME.match(name):
            return None
        return self.artifacts_dir(task_id) / name

    def adopt(self, task_id: str, files: list[tuple[str, Path]]) -> None:
        """Give a task its files: (stored name, received file) pairs, linked into its directory
        (a received file may belong to several tasks; the caller removes the received files)."""
        directory = self.files_dir(task_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, incoming in files:
            if "/" in name or name in ("", ".", ".."):
                raise ValueError("not a stored file name")
            target = directory / name
            try:
                os.link(incoming, target)
            except OSError:
                shutil.copyfile(incoming, target)

    def has_run(self, task_id: str) -> bool:
        """Whether an earlier run of the task left artifacts or scratch space."""
        return self.artifacts_dir(task_id).exists() or self.work_dir(task_id).exists()

    def clear_run(self, task_id: str) -> None:
        """Forget what an earlier run of the task wrote: artifacts and scratch space."""
        shutil.rmtree(self.artifacts_dir(task_id), ignore_errors=True)
        self.clear_work(task_id)

    def link_artifacts(self, source_task: str, task_id: str, names: list[str]) -> bool:
        """Give `task_id` the artifacts of `source_task` as hard links (stored once); False, and
        nothing linked, when one of them is missing or the file system cannot link."""
        target = self.artifacts_dir(task_id)
        try:
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name in names:
                path = self.artifact(source_task, name)
                if path is None:
                    raise FileNotFoundError(name)
                os.link(path, target / name)
        except OSError:
            shutil.rmtree(target, ignore_errors=True)
            return False
        return True

    def remove_task(self, task_id: str) -> None:
        """Delete everything stored for the task: its files, artifacts and scratch space."""
        shutil.rmtree(self.task_dir(task_id), ignore_errors=True)

    def clear_work(self, task_id: str) -> None:
        shutil.rmtree(self.work_dir(task_id), ignore_errors=True)

    def sweep_incoming(self, older_than: float = 3600, limit: int = 1000) -> int:
        """Remove partial uploads a crash left behind (old enough that no process still writes),
        at most `limit`."""
        removed = 0
        cutoff = time.time() - older_than
        for leftover in self.incoming.glob("*.part"):
            if removed >= limit:
                break
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed
