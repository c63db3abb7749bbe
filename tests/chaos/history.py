"""What a chaos client saw, and `check_history`: the invariants every stream must keep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@dataclass(frozen=True)
class Received:
    """One SSE event as the client saw it."""

    connection: int
    id: int | None
    event: str
    data: dict[str, Any]
    at: float


@dataclass
class Connection:
    """One GET /api/events: the cursor it sent, its answer, and how it ended."""

    number: int
    cursor: int | None
    opened_at: float
    status: int | None = None
    events: int = 0
    ended: str = "open"


@dataclass
class History:
    """Everything one recorder saw, in order."""

    events: list[Received] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        """The data of every `task` event of `task_id`, in the order received."""
        return [e.data for e in self.events
                if e.event == "task" and e.data.get("task_id") == task_id]

    def states(self, task_id: str) -> list[tuple[str, int]]:
        """(state, attempt) of every event of `task_id`."""
        return [(d["state"], int(d["attempt"])) for d in self.task_events(task_id)]

    def terminal(self, task_id: str) -> dict[str, Any] | None:
        """The first terminal event of `task_id`, or None."""
        return next((d for d in self.task_events(task_id) if d["state"] in TERMINAL), None)

    def terminal_at(self, task_id: str) -> float | None:
        """When (monotonic) the first terminal event of `task_id` arrived."""
        return next((e.at for e in self.events if e.event == "task"
                     and e.data.get("task_id") == task_id and e.data["state"] in TERMINAL), None)

    @property
    def reconnects(self) -> list[Connection]:
        """Every connection after the first."""
        return self.connections[1:]

    def task_ids(self) -> list[str]:
        """Every task the stream named (events and snapshots), in order of first mention."""
        seen: dict[str, None] = {}
        for event in self.events:
            if event.event == "task":
                seen[str(event.data.get("task_id"))] = None
            elif event.event == "snapshot":
                for task in event.data.get("tasks", []):
                    seen[str(task.get("task_id"))] = None
        return list(seen)


def check_history(history: History, acknowledged: Iterable[str],
                  listing: Sequence[Mapping[str, Any]]) -> None:
    """Fail, describing the whole history, unless every invariant of a lossless stream holds.

    - ids strictly increase by one across every reconnect (no gap, no duplicate); a `snapshot`
      resets the expected id, but may only open a connection that sent no cursor;
    - every acknowledged task has exactly one terminal event, its last, and attempts never go
      back;
    - no task of another session appears (anything neither acknowledged nor in `listing`,
      which is `GET /api/tasks?scope=session` read after the fact);
    - every acknowledged task is in `listing`, in the state and attempt its stream ended with.
    """
    acknowledged = list(dict.fromkeys(acknowledged))
    problems = _id_problems(history)
    listed = {str(t["task_id"]): t for t in listing}
    for task_id in [*acknowledged, *(t for t in history.task_ids() if t not in acknowledged)]:
        problems += _task_problems(history, task_id, task_id in acknowledged, listed)
    if problems:
        raise AssertionError("the event history breaks its invariants:\n  - "
                             + "\n  - ".join(problems) + "\n" + describe(history, acknowledged))


def assert_resumed(history: History) -> None:
    """Every stream that was cut came back from where it was: each reconnect sent Last-Event-ID,
    the id of the last event received before it, and the last connection was answered (200).
    A stream that was never cut passes (its ids are check_history's business)."""
    problems: list[str] = []
    seen: int | None = history.connections[0].cursor if history.connections else None
    events = iter(history.events)
    pending = next(events, None)
    for connection in history.connections:
        while pending is not None and pending.connection < connection.number:
            seen = pending.id if pending.id is not None else seen
            pending = next(events, None)
        if connection.number == 1:
            continue
        if connection.cursor is None or connection.cursor != seen:
            problems.append(f"connection #{connection.number} sent Last-Event-ID "
                            f"{connection.cursor}, the last id received was {seen}")
    if history.reconnects and history.connections[-1].status != 200:
        problems.append(f"the last reconnect was answered {history.connections[-1].status}")
    if problems:
        raise AssertionError("a cut stream did not resume where it was:\n  - "
                             + "\n  - ".join(problems) + "\n" + describe(history))


def _id_problems(history: History) -> list[str]:
    problems: list[str] = []
    connections = {c.number: c for c in history.connections}
    first = history.connections[0].cursor if history.connections else None
    last: int | None = first
    opened: set[int] = set()
    for event in history.events:
        opening = event.connection not in opened
        opened.add(event.connection)
        where = f"id {event.id} ({event.event}, connection #{event.connection})"
        if event.id is None:
            problems.append(f"{where}: an event without an id cannot be resumed from")
            continue
        if event.event == "snapshot":
            cursor = connections[event.connection].cursor
            if not opening:
                problems.append(f"{where}: a snapshot in the middle of a connection")
            elif cursor is not None:
                problems.append(
                    f"{where}: a snapshot although the connection sent Last-Event-ID {cursor}; "
                    "a snapshot (which resets the expected id) is only for an unknown cursor, "
                    "so the log lost events it should have replayed")
            if last is not None and event.id < last:
                problems.append(f"{where}: the snapshot is older than id {last}, already seen")
            last = event.id if last is None else max(last, event.id)
            continue
        if last is None:
            problems.append(f"{where}: a task event before any snapshot on a stream opened "
                            "without a cursor")
        elif event.id <= last:
            problems.append(f"{where}: a duplicate or out-of-order id (already at {last})")
        elif event.id != last + 1:
            problems.append(f"{where}: ids {last + 1}..{event.id - 1} were lost")
        last = event.id if last is None else max(last, event.id)
    return problems


def _task_problems(history: History, task_id: str, acknowledged: bool,
                   listed: Mapping[str, Mapping[str, Any]]) -> list[str]:
    events = history.task_events(task_id)
    snapshot_state = _snapshot_state(history, task_id)
    name = task_id[:8]
    if not acknowledged and task_id not in listed:
        return [f"task {name}: not this session's (not acknowledged, not in its task list)"]
    problems: list[str] = []
    terminals = [e for e in events if e["state"] in TERMINAL]
    if len(terminals) > 1:
        problems.append(f"task {name}: {len(terminals)} terminal events "
                        f"({', '.join(e['state'] for e in terminals)})")
    if acknowledged and not terminals and snapshot_state not in TERMINAL:
        last = events[-1]["state"] if events else snapshot_state or "nothing"
        problems.append(f"task {name}: no terminal event (the stream ended at {last})")
    if terminals and events[-1]["state"] not in TERMINAL:
        problems.append(f"task {name}: {events[-1]['state']} after its terminal event")
    attempts = [int(e["attempt"]) for e in events]
    if attempts != sorted(attempts):
        problems.append(f"task {name}: attempts go back ({attempts})")
    if acknowledged:
        problems += _listing_problems(name, events, listed.get(task_id))
    return problems


def _listing_problems(name: str, events: list[dict[str, Any]],
                      listed: Mapping[str, Any] | None) -> list[str]:
    if listed is None:
        return [f"task {name}: acknowledged but missing from GET /api/tasks"]
    if not events:
        return []
    final = events[-1]
    if (listed["state"], listed["attempt"]) != (final["state"], final["attempt"]):
        return [f"task {name}: GET /api/tasks says {listed['state']}/{listed['attempt']}, the "
                f"stream ended at {final['state']}/{final['attempt']}"]
    return []


def _snapshot_state(history: History, task_id: str) -> str | None:
    state = None
    for event in history.events:
        if event.event == "snapshot":
            for task in event.data.get("tasks", []):
                if task.get("task_id") == task_id:
                    state = str(task.get("state"))
    return state


def describe(history: History, tasks: Iterable[str] = ()) -> str:
    """The connections and each task's state sequence, compactly, for a failure message."""
    lines = ["connections:"]
    for c in history.connections:
        lines.append(f"  #{c.number} Last-Event-ID={c.cursor} status={c.status} "
                     f"events={c.events} ended: {c.ended}")
    ids = [e.id for e in history.events]
    lines.append(f"ids: {_ranges(ids)}")
    lines.append("tasks (state/attempt, repeats folded):")
    for task_id in dict.fromkeys([*tasks, *history.task_ids()]):
        lines.append(f"  {task_id[:8]}: {fold(history.states(task_id)) or '(no events)'}")
    return "\n".join(lines)


def fold(states: Sequence[tuple[str, int]]) -> str:
    """`PENDING/1 STARTED/1 PROGRESS×12/1 SUCCESS/1`."""
    parts: list[str] = []
    previous: tuple[str, int] | None = None
    count = 0
    for item in [*states, None]:
        if item == previous:
            count += 1
            continue
        if previous is not None:
            times = f"×{count}" if count > 1 else ""
            parts.append(f"{previous[0]}{times}/{previous[1]}")
        previous, count = item, 1
    return " ".join(parts)


def _ranges(ids: Sequence[int | None]) -> str:
    """`1-40 42 44-50`, in the order received (events without an id left out)."""
    parts: list[str] = []
    run: list[int] = []
    for value in [i for i in ids if i is not None]:
        if run and value == run[-1] + 1:
            run.append(value)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [value]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return " ".join(parts) or "(none)"
