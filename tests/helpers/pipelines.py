"""Pipelines for end-to-end tests, run in real child processes by the real worker.

They stand in for a parser at its worst: slow, stuck in a CPU loop, or crashing natively.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from tasks.errors import CorruptFile
from tasks.progress import Artifact, Progress, share


def _work(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def _note_child(payload: dict[str, Any]) -> None:
    """Write the child's pid beside the task's files (`child.pid`), for a test to kill it."""
    (Path(payload["artifacts_dir"]).parent / "child.pid").write_text(str(os.getpid()))


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
    reload the page in the middle of, with seconds to spare); its child's pid written first."""
    _note_child(payload)
    for i in range(40):
        _work(0.2)
        progress("steps", (i + 1) / 40)
    return {"stats": {"bytes": Path(payload["source"]).stat().st_size, "steps": 40},
            "artifacts": []}


def _by_name(payload: Any, progress: Progress, real: Callable[[Any, Progress], Any]) -> Any:
    """The stand-in a file's name asks for (`spin-…`, `slow-…`, `share-…`), else the real
    pipeline."""
    name = str(payload.get("main", ""))
    if name.startswith("spin"):
        return spin_forever(payload, progress)
    if name.startswith("slow"):
        return slow_steps(payload, progress)
    if name.startswith("share"):
        return share_then_wait(payload, progress)
    return real(payload, progress)


def named_mesh(payload: dict[str, Any], progress: Progress) -> Any:
    """The real mesh pipeline, unless the model's file name asks for a stand-in (`spin-box.obj`)."""
    from tasks.mesh import process

    return _by_name(payload, progress, process)


def named_texture(payload: dict[str, Any], progress: Progress) -> Any:
    """The real texture pipeline, unless the image's file name asks for a stand-in."""
    from tasks.texture import describe

    return _by_name(payload, progress, describe)


def short_steps(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """One stage of 20 steps over about four seconds (RELIABILITY A1's job), its child's pid
    written first: a task a chaos test can kill the worker of at half way."""
    _note_child(payload)
    for i in range(20):
        _work(0.2)
        progress("steps", (i + 1) / 20)
    return {"stats": {"bytes": Path(payload["source"]).stat().st_size, "steps": 20},
            "artifacts": []}


def allocate_past_limit(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Touch memory 32 MiB at a time until the child's limit stops it (MemoryError); a child
    with no limit stops at 2 GiB and succeeds, which a test of the limit reports as a failure."""
    _note_child(payload)
    blocks: list[bytes] = []
    chunk = 32 * 1024**2
    while len(blocks) * chunk < 2 * 1024**3:
        blocks.append(b"\x01" * chunk)
        progress("allocating", len(blocks) * chunk / (2 * 1024**3))
    return {"stats": {"allocated": len(blocks) * chunk}, "artifacts": []}


STORM_STAGES = 3000
STORM_STAGE_NAME = 2000
"""A storm's stages, and the length of each one's name: about 6 MB of events in all, more than
Linux lets a socket buffer by default (tcp_wmem's 4 MiB), so a stalled reader's stream must
back up into the server's mailbox."""


def storm(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """An event storm: a new stage with a long name every millisecond, which the child always
    passes on (a stage change) and a worker with a rate limit to match sends one by one."""
    _note_child(payload)
    padding = "x" * STORM_STAGE_NAME
    for i in range(STORM_STAGES):
        progress(f"{i:05d}-{padding}", 1.0)
        time.sleep(0.001)
    return {"stats": {"stages": STORM_STAGES}, "artifacts": []}


def burst(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """A task that is over at once, reporting every step of four stages on the way."""
    for stage in ("load", "analyse", "thumbnail", "turntable"):
        for i in range(100):
            progress(stage, (i + 1) / 100)
    return {"stats": {"bytes": Path(payload["source"]).stat().st_size}, "artifacts": []}


def share_then_wait(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Write a thumbnail and share it with the stats so far, then wait (up to 30 s) for a file
    named `release` beside the task's files before finishing: a run a test can read mid-way."""
    artifacts_dir = Path(payload["artifacts_dir"])
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    thumbnail = artifacts_dir / "thumbnail.png"
    Image.new("RGB", (8, 8), (200, 40, 40)).save(thumbnail, format="PNG")
    shown: Artifact = {"name": "thumbnail.png", "media_type": "image/png",
                       "size": thumbnail.stat().st_size}
    progress("thumbnail", 1.0)
    share(progress, {"stats": {"faces": 12}, "artifacts": [shown]})
    release = artifacts_dir.parent / "release"
    deadline = time.monotonic() + 30
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"stats": {"faces": 12, "finished": True}, "artifacts": [shown]}


def share_then_fail(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Share a result so far, then fail as a damaged file does."""
    progress("thumbnail", 1.0)
    share(progress, {"stats": {"faces": 12}, "artifacts": []})
    raise CorruptFile("The file is damaged after all.")


def killed_until(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Killed by SIGKILL (as the OOM killer does) while fewer runs than the number in the
    source's first line have started; then a success. Runs are counted in a file beside the
    task's files."""
    count = Path(payload["artifacts_dir"]).parent / "runs"
    runs = int(count.read_text()) + 1 if count.exists() else 1
    count.write_text(str(runs))
    progress("load", 0.5)
    if runs <= int(Path(payload["source"]).read_text().split()[0]):
        os.kill(os.getpid(), 9)
    return {"stats": {"runs": runs}, "artifacts": []}
