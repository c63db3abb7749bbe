"""The progress callback a pipeline receives: the fraction (0..1) of the current stage done."""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """Called by pipeline code in the child process; cheap to call often (the child throttles)."""

    def __call__(self, stage: str, fraction: float) -> None: ...


Payload = dict[str, Any]
Result = dict[str, Any]
