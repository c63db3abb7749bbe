"""Pipeline limits for tests that call a pipeline directly: every limit as Settings sends it with
each task, some of them changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from settings import Settings
from tasks.progress import Limits, Payload


def limits(**changes: Any) -> Limits:
    chosen = dict(Settings().pipeline_limits())
    unknown = set(changes) - set(chosen)
    if unknown:
        raise TypeError(f"no such pipeline limit: {', '.join(sorted(unknown))}")
    return cast(Limits, {**chosen, **changes})


def as_payload(fields: Mapping[str, Any]) -> Payload:
    """A hand-made payload, typed: a test gives only the keys its pipeline reads."""
    return cast(Payload, dict(fields))
