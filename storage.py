"""Uploads and artifacts on disk, under server-made ids only; display names are sanitised copies.

    <data>/incoming/<random>.part          a file while it is being received
    <data>/tasks/<task id>/source          the stored upload (its name is never the client's)
    <data>/tasks/<task id>/artifacts/<n>   what the pipeline wrote (names chosen by Kiln's code)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import unicodedata
from pathlib import Path

from ids import is_valid_id, new_id

MAX_DISPLAY_NAME = 200
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_name(raw: str | None) -> str:
    """The client's file name made safe to show and store as text: no path, no control chars."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip().lstrip(".")
    name = name[:MAX_DISPLAY_NAME]
    return name or "upload"


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
        return self.task_dir(task_id) / "source"

    def artifacts_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "artifacts"

    def artifact(self, task_id: str, name: str) -> Path | None:
        """The artifact's path, or None when the name is not one Kiln could have written."""
        if not ARTIFACT_NAME.match(name):
            return None
        return self.artifacts_dir(task_id) / name

    def adopt(self, incoming: Path, task_id: str) -> Path:
        """Move a fully received file into its task's directory (same file system: a rename)."""
        target = self.source(task_id)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.replace(incoming, target)
        return target

    def clear_artifacts(self, task_id: str) -> None:
        shutil.rmtree(self.artifacts_dir(task_id), ignore_errors=True)

    def sweep_incoming(self, older_than: float = 6 * 3600) -> int:
        """Remove partial uploads a crash left behind (old enough that no process still writes)."""
        removed = 0
        cutoff = time.time() - older_than
        for leftover in self.incoming.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
                    removed += 1
        return removed
