"""Assertions about how one task's events went: recovered from a lost run, failed with a code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.chaos.history import History, describe, fold


def progressed(task_id: str, fraction: float) -> Callable[[History], bool]:
    """A predicate: `task_id` has reported at least `fraction` progress on its first attempt."""
    def reached(history: History) -> bool:
        return any(d["state"] == "PROGRESS" and d["attempt"] == 1 and d["progress"] >= fraction
                   for d in history.task_events(task_id))
    return reached


def finished(task_id: str) -> Callable[[History], bool]:
    """A predicate: `task_id` has had its terminal event."""
    return lambda history: history.terminal(task_id) is not None


def retry_reason(event: dict[str, Any]) -> str | None:
    """Why a RETRY happened, as the event says it (`reason`, or an `error` code)."""
    reason = event.get("reason")
    if reason is None and isinstance(event.get("error"), dict):
        reason = event["error"].get("code")
    return None if reason is None else str(reason)


def assert_recovered(history: History, task_id: str, reason: str) -> None:
    """The run of attempt 1 was lost and attempt 2 succeeded: STARTED(1), PROGRESS…,
    RETRY(2, reason), STARTED(2), PROGRESS…, SUCCESS(2), each state change exactly once."""
    states = history.states(task_id)
    changes = [s for s in states if s[0] != "PROGRESS"]
    story = f"task {task_id[:8]}: {fold(states)}\n{describe(history, [task_id])}"
    assert changes == [("PENDING", 1), ("STARTED", 1), ("RETRY", 2), ("STARTED", 2),
                       ("SUCCESS", 2)], f"not one lost run then a success:\n{story}"
    retry = next(d for d in history.task_events(task_id) if d["state"] == "RETRY")
    assert retry_reason(retry) == reason, (
        f"the RETRY should say why ({reason!r}, RELIABILITY A1/A2), it says "
        f"{retry_reason(retry)!r}: {retry}")


def assert_failed(history: History, task_id: str, code: str) -> dict[str, Any]:
    """The task's one terminal event is FAILURE with `code`, on its first attempt."""
    terminal = history.terminal(task_id)
    story = f"task {task_id[:8]}: {fold(history.states(task_id))}"
    assert terminal is not None, f"no terminal event: {story}"
    assert (terminal["state"], terminal.get("error", {}).get("code"), terminal["attempt"]) == (
        "FAILURE", code, 1), f"expected FAILURE {code} on attempt 1, got {terminal}\n{story}"
    return terminal
