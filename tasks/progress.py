"""The worker <-> child contract: what a pipeline receives (its payload, with every limit), the
progress callback it reports through, and what it returns. Both cross the process boundary as one
JSON object each; the worker builds the payload (worker/jobs.py) and Settings.pipeline_limits
gives every limit, with its default, on every task."""

from __future__ import annotations

from typing import Any, Protocol, TypedDict


class Progress(Protocol):
    """Called by pipeline code in the child process; cheap to call often (the child throttles)."""

    def __call__(self, stage: str, fraction: float) -> None: ...


def share(progress: Progress, result: Result) -> None:
    """Hand the client what the task has so far (its statistics, the artifacts written) while it
    goes on; a `progress` that cannot carry it (a test's lambda) takes nothing."""
    partial = getattr(progress, "partial", None)
    if callable(partial):
        partial(result)


class Limits(TypedDict):
    """Every limit a pipeline obeys. The defaults and their KILN_* settings are in settings.py."""

    max_faces: int
    archive_max_members: int
    archive_max_bytes: int
    archive_max_ratio: float
    lod_min_faces: int
    thumbnail_size: int
    turntable_frames: int
    turntable_frame_size: int
    turntable_max_faces: int
    threads: int
    renderer: str
    mip_top_size: int
    xml_max_bytes: int
    preview_size: int


class Payload(TypedDict):
    """One task as its pipeline sees it."""

    source: str  # the main file (a task queued by Kiln 0.1: its one file, named `source`)
    files_dir: str  # the task's files (the main file and its companions)
    main: str  # the main file's name in files_dir
    files: list[str]  # every file's name in files_dir
    format: str  # as tasks/detect.py named it
    artifacts_dir: str
    work_dir: str  # scratch space, removed after the run
    max_pixels: int  # no image may decode to more
    limits: Limits


class Artifact(TypedDict):
    """One file a pipeline wrote into artifacts_dir."""

    name: str
    media_type: str
    size: int


class Result(TypedDict):
    stats: dict[str, Any]
    artifacts: list[Artifact]
