"""check_history catches what it is for: lost, duplicate and foreign events, two endings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.history import Connection, History, Received, assert_resumed, check_history


def _task(task_id: str, state: str, attempt: int = 1) -> dict[str, Any]:
    return {"type": "task", "task_id": task_id, "state": state, "attempt": attempt}


def _history(*events: tuple[int, int, str, dict[str, Any]],
             cursors: tuple[int | None, ...] = (0,)) -> History:
    history = History(connections=[Connection(n + 1, c, 0.0) for n, c in enumerate(cursors)])
    for connection, event_id, kind, data in events:
        history.events.append(Received(connection, event_id, kind, data, 0.0))
    return history


def _listed(task_id: str, state: str, attempt: int = 1) -> dict[str, Any]:
    return {"task_id": task_id, "state": state, "attempt": attempt}


CLEAN = [(1, 1, "task", _task("a", "PENDING")), (1, 2, "task", _task("a", "STARTED")),
         (2, 3, "task", _task("a", "SUCCESS"))]


def test_a_clean_history_across_a_reconnect_passes() -> None:
    check_history(_history(*CLEAN, cursors=(0, 2)), ["a"], [_listed("a", "SUCCESS")])


def test_a_snapshot_opening_a_stream_without_a_cursor_sets_the_expected_id() -> None:
    snapshot = {"type": "snapshot", "seq": 7, "tasks": [_listed("a", "STARTED")]}
    history = _history((1, 7, "snapshot", snapshot), (1, 8, "task", _task("a", "SUCCESS")),
                       cursors=(None,))
    check_history(history, ["a"], [_listed("a", "SUCCESS")])


@pytest.mark.parametrize(("events", "cursors", "listing", "complaint"), [
    ([CLEAN[0], (1, 3, "task", _task("a", "SUCCESS"))], (0,), "SUCCESS", "ids 2..2 were lost"),
    ([*CLEAN[:2], (2, 2, "task", _task("a", "STARTED")), (2, 3, "task", _task("a", "SUCCESS"))],
     (0, 1), "SUCCESS", "duplicate"),
    ([*CLEAN, (1, 4, "task", _task("a", "FAILURE"))], (0,), "FAILURE", "2 terminal events"),
    (CLEAN[:2], (0,), "STARTED", "no terminal event"),
    ([*CLEAN, (1, 4, "task", _task("b", "PENDING"))], (0,), "SUCCESS", "not this session's"),
    (CLEAN, (0,), "FAILURE", "GET /api/tasks says FAILURE/1"),
    ([*CLEAN[:2], (2, 9, "snapshot", {"tasks": []}), (2, 10, "task", _task("a", "SUCCESS"))],
     (0, 2), "SUCCESS", "a snapshot although the connection sent Last-Event-ID 2"),
])
def test_a_broken_history_fails_and_says_why(
        events: list[tuple[int, int, str, dict[str, Any]]], cursors: tuple[int | None, ...],
        listing: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match="breaks its invariants") as caught:
        check_history(_history(*events, cursors=cursors), ["a"], [_listed("a", listing)])
    assert complaint in str(caught.value)
    assert "  a: PENDING/1 " in str(caught.value)  # the state sequence is shown


def test_an_acknowledged_task_missing_from_the_task_list_fails() -> None:
    with pytest.raises(AssertionError, match="missing from GET /api/tasks"):
        check_history(_history(*CLEAN), ["a"], [])


def _answered(history: History) -> History:
    for connection in history.connections:
        connection.status = 200
    return history


def test_assert_resumed_wants_each_reconnect_to_send_the_last_id_received() -> None:
    assert_resumed(_answered(_history(*CLEAN, cursors=(0, 2))))
    assert_resumed(_answered(_history(*CLEAN)))  # never cut: nothing to resume
    for cursors in [(0, None), (0, 1), (0, 2, 1)]:
        with pytest.raises(AssertionError, match="Last-Event-ID"):
            assert_resumed(_answered(_history(*CLEAN, cursors=cursors)))
