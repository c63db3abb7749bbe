"""One client's event stream: subscribe, replay from its cursor (or send a snapshot), then go live.

The order is what makes it lossless: the channel is subscribed *before* the log is read, so any
event written after the read arrives live; live events at or below the last sequence sent are
dropped (duplicates of the replay), and a live event that skips ahead makes the stream read the
hole from the log first. A hole the log no longer holds (trimmed, expired) ends in a new snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from redis.asyncio import Redis

from records import keys
from records.events import event_name
from records.store import TaskRecord, TaskStore
from streaming.hub import RESYNC, Hub

REPLAY_PAGE = 500


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One SSE message: `id:` is the stream's sequence number."""

    id: int
    event: str
    data: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The stream's newest tasks as of sequence `id`: the first message of a stream without a
    usable cursor (the API renders the records)."""

    id: int
    records: list[TaskRecord]


def parse_cursor(raw: str | None) -> int | None:
    """A Last-Event-ID as a sequence number; None when absent or not ours."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


class EventFeed:
    """Reads a stream's log and snapshot; `follow` merges them with the live channel."""

    def __init__(self, redis: Redis, hub: Hub, store: TaskStore, *, snapshot_limit: int) -> None:
        self._redis = redis
        self._hub = hub
        self._store = store
        self._snapshot_limit = snapshot_limit

    async def follow(self, stream: keys.Stream, cursor: int | None, *, idle: float | None = None,
                     until: float | None = None
                     ) -> AsyncGenerator[StreamEvent | Snapshot | None, None]:
        """Events after `cursor` (or a snapshot first), then live ones, until the caller stops
        or the event loop's clock reaches `until`; None after every `idle` seconds without an
        event (the time to send a keepalive). The end is checked at every wake, so no stream
        needs a timer of its own for it."""
        clock = asyncio.get_running_loop().time
        async with self._hub.listen(stream.channel) as box:
            last = -1
            if cursor is not None:
                replay = await self._read_after(stream, cursor)
                if replay is not None:
                    last = cursor
                    for event in replay:
                        yield event
                        last = event.id
            if last < 0:
                snapshot = await self._snapshot(stream)
                yield snapshot
                last = snapshot.id
            while True:
                wait = idle
                if until is not None:
                    left = until - clock()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                item = await box.wait(wait)
                if item is None:
                    if until is None or clock() < until:
                        yield None
                    continue
                seq, data = item
                if item is RESYNC or seq > last + 1:
                    caught_up = await self._read_after(stream, last)
                    if caught_up is None:
                        snapshot = await self._snapshot(stream)
                        yield snapshot
                        last = snapshot.id
                        continue
                    for event in caught_up:
                        yield event
                        last = event.id
                if item is RESYNC or seq <= last:
                    continue
                yield StreamEvent(seq, event_name(data), data)
                last = seq

    async def _snapshot(self, stream: keys.Stream) -> Snapshot:
        seq, records = await self._store.snapshot(stream, self._snapshot_limit)
        return Snapshot(seq, records)

    async def _read_after(self, stream: keys.Stream, cursor: int) -> list[StreamEvent] | None:
        """Every logged event after `cursor`, or None if the log cannot prove it has them all."""
        events: list[StreamEvent] = []
        after = cursor
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(stream.seq)
                pipe.xrange(stream.log, min=f"{after + 1}-0", max="+", count=REPLAY_PAGE)
                raw_seq, entries = await pipe.execute()
            seq = int(raw_seq or 0)
            if seq < after:
                return None  # the counter restarted (expired): the cursor is not from this log
            for entry_id, fields in entries:
                number = int(entry_id.split(b"-")[0])
                if number != after + 1:
                    return None  # trimmed away: the log no longer holds the whole gap
                data = fields[b"e"].decode()
                events.append(StreamEvent(number, event_name(data), data))
                after = number
            if after >= seq:
                return events
            if not entries:
                return None
