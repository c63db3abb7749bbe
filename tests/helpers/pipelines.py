"""Pipelines for end-to-end tests, run in real child processes by the real worker.

They stand in for a parser at its worst: slow, stuck in a CPU loop, or crashing natively.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.progress import Progress


def _work(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def steps(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Two stages of 40 small CPU steps each, reporting each one (a busy progress stream)."""
    for stage in ("load", "analyse"):
        for i in range(40):
            _work(0.01)
            progress(stage, (i + 1) / 40)
    return {"stats": {"bytes": Path(payload["source"]).stat().st_size}, "artifacts": []}


def spin_forever(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Write the child's pid beside the task's files, then burn CPU until killed."""
    pid_file = Path(payload["artifacts_dir"]).parent / "child.pid"
    pid_file.write_text(str(os.getpid()))
    fraction = 0.0
    while True:
        _work(0.05)
        fraction = min(0.99, fraction + 0.01)
        progress("spinning", fraction)


def crash(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    progress("load", 0.5)
    os.abort()


def slow_steps(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One stage of 40 steps over about eight seconds: a finite task a test can watch move (and
    reload the page in the middle of, with seconds to spare)."""
    for i in range(40):
        _work(0.2)
        progress("steps", (i + 1) / 40)
    return {"stats": {"bytes": Path(payload["source"]).stat().st_size, "steps": 40},
            "artifacts": []}


def _by_name(payload: dict[str, Any], progress: Progress,
             real: Callable[[dict[str, Any], Progress], dict[str, Any]]) -> dict[str, Any]:
    """The stand-in a file's name asks for (`spin-…`, `slow-…`), else the real pipeline."""
    name = str(payload.get("main", ""))
    if name.startswith("spin"):
        return spin_forever(payload, progress)
    if name.startswith("slow"):
        return slow_steps(payload, progress)
    return real(payload, progress)


def named_mesh(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The real mesh pipeline, unless the model's file name asks for a stand-in (`spin-box.obj`)."""
    from tasks.mesh import process

    return _by_name(payload, progress, process)


def named_texture(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The real texture pipeline, unless the image's file name asks for a stand-in."""
    from tasks.texture import describe

    return _by_name(payload, progress, describe)
