"""The SSE hub: one pub/sub connection per process, fanned out in memory to bounded mailboxes.

A channel is SUBSCRIBEd (exact name, never a pattern) while at least one local listener needs it,
and UNSUBSCRIBEd when the last one leaves; each change waits for Redis's confirmation under a
per-channel lock, so a listener knows its subscription is live before it reads the log. If the
pub/sub connection breaks, the hub reconnects, subscribes everything again and puts RESYNC in every
mailbox, so each stream reads what it may have missed from the channel's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from records import keys

log = logging.getLogger("kiln.hub")

RESYNC: Final = (-1, "")
"""Mailbox item: the live feed may have a hole; read the log from the last sequence sent."""

ControlHandler = Callable[[dict[str, Any]], None]


class Overflow(Exception):
    """A listener fell too far behind: its stream closes and the client resumes."""


class Mailbox:
    """A bounded queue of `(seq, json)` for one listener; overflow closes it, never blocks."""

    __slots__ = ("_items", "_limit", "_waiter", "overflowed")

    def __init__(self, limit: int) -> None:
        # made at the first item and dropped when drained: an idle stream holds no deque (a
        # deque is 600 bytes, a fiftieth of what an idle stream costs)
        self._items: deque[tuple[int, str]] | None = None
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False

    def close(self) -> None:
        """The hub is closing: the listener's next (or current) wait raises Overflow."""
        self.overflowed = True
        self._items = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def pending(self) -> int:
        """Items waiting to be taken."""
        return len(self._items) if self._items else 0

    def put(self, item: tuple[int, str]) -> None:
        if self.overflowed:
            return
        if self._items is None:
            self._items = deque()
        if len(self._items) >= self._limit and item is not RESYNC:
            self.overflowed = True
            self._items = None
        else:
            self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> tuple[int, str]:
        """The next item; raises Overflow once the listener has fallen behind."""
        while (item := await self.wait(None)) is None:
            pass
        return item

    async def wait(self, idle: float | None) -> tuple[int, str] | None:
        """The next item, or None once `idle` seconds pass without one (None: wait for ever);
        raises Overflow once the listener has fallen behind."""
        if not self._items and not self.overflowed:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(idle, _wake, waiter) if idle is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self.overflowed:
            raise Overflow
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if not items:
            self._items = None
        return item


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Channel:
    __slots__ = ("listeners", "lock", "subscribed")

    def __init__(self) -> None:
        self.listeners: set[Mailbox] = set()
        self.lock = asyncio.Lock()
        self.subscribed = False


class Hub:
    """Owns the process's single pub/sub connection; `listen(channel)` gives a live mailbox."""

    def __init__(self, redis: Redis, *, mailbox_size: int, ping_interval: float = 5.0,
                 reply_timeout: float = 2.0) -> None:
        self._redis = redis
        self._mailbox_size = mailbox_size
        self._ping_interval = ping_interval
        self._reply_timeout = reply_timeout
        self._channels: dict[bytes, _Channel] = {}
        self._confirm: dict[tuple[str, bytes], asyncio.Future[None]] = {}
        self._control_handlers: list[ControlHandler] = []
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False

    @property
    def connected(self) -> bool:
        """False while the pub/sub connection is being re-established."""
        return self._connected.is_set() and not self._closing

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def listener_count(self) -> int:
        return sum(len(c.listeners) for c in self._channels.values())

    def on_control(self, handler: ControlHandler) -> None:
        """Call `handler` with every message of the control channel (wake, cancel)."""
        self._control_handlers.append(handler)

    async def start(self) -> None:
        """Connect and subscribe the control channel. Outages are repaired in the background."""
        self._reader = asyncio.create_task(self._run(), name="kiln-hub")
        await self._connected.wait()

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for channel in self._channels.values():
            for box in channel.listeners:
                box.close()
        await self._drop_pubsub()

    @contextlib.asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[Mailbox]:
        """A mailbox that receives every message of `channel` from the moment this yields."""
        name = channel.encode()
        entry = self._channels.get(name)
        if entry is None:
            entry = self._channels[name] = _Channel()
        box = Mailbox(self._mailbox_size)
        entry.listeners.add(box)
        try:
            async with entry.lock:
                if not entry.subscribed:
                    await self._subscribe(name)
                    entry.subscribed = True
            yield box
        finally:
            entry.listeners.discard(box)
            if not entry.listeners:
                await asyncio.shield(self._release(name, entry))

    async def _subscribe(self, name: bytes) -> None:
        """Subscribe, riding out a reconnect in progress for up to twice the reply timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self._reply_timeout
        delay = 0.05
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._connected.wait()
                    await self._command("subscribe", name)
                return
            except (ConnectionError, RedisError, OSError, TimeoutError) as exc:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    # a cancel (the client went) that redis-py turned into an error: retrying
                    # would swallow it, and the stream would outlive its client
                    raise asyncio.CancelledError from exc
                if loop.time() + delay >= deadline:
                    raise RedisConnectionError("the pub/sub connection is down") from exc
                await asyncio.sleep(delay)
                delay *= 2

    async def _release(self, name: bytes, entry: _Channel) -> None:
        async with entry.lock:
            if entry.listeners:
                return
            if entry.subscribed:
                with contextlib.suppress(RedisError, OSError, TimeoutError, ConnectionError):
                    await self._command("unsubscribe", name)
                entry.subscribed = False
            if not entry.listeners and self._channels.get(name) is entry:
                del self._channels[name]

    async def _command(self, kind: str, name: bytes) -> None:
        """Send (un)subscribe and wait for Redis to confirm it on the reader."""
        pubsub = self._pubsub
        if pubsub is None or self._closing or not self._connected.is_set():
            # a dropped connection holds no subscriptions, and a reconnect subscribes only
            # the channels still marked subscribed: nothing to undo, nothing to wait for
            raise ConnectionError("the pub/sub connection is down")
        future = asyncio.get_running_loop().create_future()
        self._confirm[(kind, name)] = future
        try:
            if kind == "subscribe":
                await pubsub.subscribe(name)
            else:
                await pubsub.unsubscribe(name)
            # not wait_for: on Python 3.11 it loses a cancel that lands as the reply arrives
            # (cpython gh-86296), and a stream whose client went would live on
            async with asyncio.timeout(self._reply_timeout):
                await future
        finally:
            self._confirm.pop((kind, name), None)

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                await self._connect()
                backoff = 0.05
                await self._read()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError) as exc:
                self._connected.clear()
                log.warning("pub/sub connection lost (%s); reconnecting", type(exc).__name__)
                for future in self._confirm.values():
                    if not future.done():
                        future.set_exception(ConnectionError("pub/sub connection lost"))
                await self._drop_pubsub()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub()
        names = [keys.CONTROL_CHANNEL.encode()]
        names += [n for n, c in self._channels.items() if c.subscribed]
        self._pubsub = pubsub
        await pubsub.subscribe(*names)
        pending = set(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reply_timeout
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await pubsub.get_message(timeout=left)
            if message and message["type"] == "subscribe":
                pending.discard(message["channel"])
        self._connected.set()
        for channel in self._channels.values():
            for box in channel.listeners:
                box.put(RESYNC)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self) -> None:
        """Dispatch messages until the link fails. redis-py's own pub/sub health check only
        sends PING and never notices a missing reply (redis-py #2417), so the hub PINGs after
        `ping_interval` of silence and declares the link dead when nothing at all arrives
        within `reply_timeout`: a half-open link is noticed within the sum of the two."""
        pubsub = self._pubsub
        assert pubsub is not None
        control = keys.CONTROL_CHANNEL.encode()
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        answer_by: float | None = None  # set while a PING we sent awaits any reply
        while not self._closing:  # close() also cancels us; a PING's send may lose that cancel
            now = loop.time()
            if answer_by is None:
                wait = last_seen + self._ping_interval - now
                if wait <= 0:
                    await pubsub.ping()
                    answer_by = now + self._reply_timeout
                    continue
            else:
                wait = answer_by - now
                if wait <= 0:
                    raise TimeoutError("Redis did not answer PING")
            message = await pubsub.get_message(timeout=wait)
            if message is None:
                continue
            last_seen, answer_by = loop.time(), None
            kind = message["type"]
            if kind == "message":
                if message["channel"] == control:
                    self._dispatch_control(message["data"])
                else:
                    self._fan_out(message["channel"], message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                future = self._confirm.get((kind, message["channel"]))
                if future is not None and not future.done():
                    future.set_result(None)

    def _fan_out(self, channel: bytes, data: bytes) -> None:
        entry = self._channels.get(channel)
        if entry is None or not entry.listeners:
            return
        seq_raw, _, payload = data.partition(b" ")
        item = (int(seq_raw), payload.decode())
        for box in entry.listeners:
            box.put(item)

    def _dispatch_control(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("ignored a malformed control message")
            return
        for handler in self._control_handlers:
            try:
                handler(message)
            except Exception:
                log.exception("control handler failed")
