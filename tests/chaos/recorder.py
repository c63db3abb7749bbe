"""An SSE recorder that rides out every fault by reconnecting with Last-Event-ID, and keeps it all.

The recorder follows `/api/events` of one session. Whenever the stream ends — the server was
killed, it closed the stream (a slow reader cut off, an expired token), it answered 429 or 503,
the connection was refused or went silent past the read timeout — it reconnects after a short
backoff with `Last-Event-ID` set to the last id it saw, until it is stopped (`until_done` stops
it once every task it expects has had a terminal event). `history` keeps every event (with the
connection it came on) and every connection (its cursor and why it ended), for `check_history`
(tests/chaos/history.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Sequence

import httpx

from tests.chaos.history import TERMINAL, Connection, History, Received, check_history, describe
from tests.client import parse_sse

FATAL_STATUS = frozenset({400, 401, 403, 404})
"""Answers that no reconnect can fix: the recorder stops and its waiters see the error."""

__all__ = ["TERMINAL", "Connection", "History", "Received", "Recorder", "check_history",
           "small_receive_buffer"]


class Recorder:
    """Follows one session's events through any fault (see the module docstring).

    `first_cursor=0` replays the session from its first event (a fresh session needs no
    snapshot); None asks for the snapshot. `socket_options` reach the client's socket (a small
    SO_RCVBUF makes a slow reader that the server notices).
    """

    def __init__(self, base_url: str, token: str, *, first_cursor: int | None = 0,
                 scope: str | None = None, read_timeout: float = 5.0,
                 backoff: float = 0.1, max_backoff: float = 1.0,
                 socket_options: Sequence[tuple[int, int, int]] | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.scope = scope
        self.history = History()
        self.expected: set[str] = set()
        self.cursor = first_cursor
        self._read_timeout = read_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._socket_options = list(socket_options or [])
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._task: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._cut = False
        self.error: BaseException | None = None

    # -- control -------------------------------------------------------------------------

    def start(self) -> Recorder:
        self._task = asyncio.create_task(self._run(), name="chaos-recorder")
        return self

    async def __aenter__(self) -> Recorder:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def expect(self, task_ids: Iterable[str]) -> None:
        """Tasks this recorder waits for (acknowledged uploads of its session)."""
        self.expected.update(task_ids)
        self._changed.set()

    def pause(self) -> None:
        """Stop reading the open stream (it stays open: a client that has stalled)."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def cut(self) -> None:
        """Drop the open connection, as a browser losing its network would; the recorder then
        reconnects with Last-Event-ID like any other time its stream ends."""
        if self._following is not None and not self._following.done():
            self._cut = True
            self._following.cancel()

    async def stop(self) -> History:
        self._stop.set()
        self._reading.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.history

    @property
    def done(self) -> bool:
        """Every expected task has had its terminal event."""
        finished = {e.data.get("task_id") for e in self.history.events
                    if e.event == "task" and e.data.get("state") in TERMINAL}
        return bool(self.expected) and self.expected <= finished

    async def until(self, predicate: Callable[[History], bool], timeout: float = 30.0,  # noqa: ASYNC109
                    what: str = "the condition") -> History:
        """Wait until `predicate(history)` holds; fail with the history after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.history):
                    if self.error is not None:
                        raise AssertionError(f"the recorder stopped: {self.error!r}")
                    if self._task is not None and self._task.done() and not predicate(
                            self.history):
                        raise AssertionError(f"the recorder ended before {what}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout:g} s\n"
                                 f"{describe(self.history)}") from None
        return self.history

    async def until_done(self, timeout: float = 30.0) -> History:  # noqa: ASYNC109
        """Wait until every expected task is terminal, then stop reading."""
        await self.until(lambda _: self.done, timeout, "terminal event for every expected task")
        return await self.stop()

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        transport = httpx.AsyncHTTPTransport(socket_options=self._socket_options or None)
        timeout = httpx.Timeout(connect=2.0, read=self._read_timeout, write=5.0, pool=5.0)
        delay = self._backoff
        try:
            async with httpx.AsyncClient(base_url=self.base_url, transport=transport,
                                         timeout=timeout) as http:
                while not self._stop.is_set():
                    connection = Connection(len(self.history.connections) + 1, self.cursor,
                                            time.monotonic())
                    self.history.connections.append(connection)
                    self._changed.set()
                    self._following = asyncio.create_task(self._follow(http, connection))
                    try:
                        await self._following
                    except httpx.HTTPError as exc:
                        connection.ended = type(exc).__name__
                    except asyncio.CancelledError:
                        if not self._cut:
                            raise
                        self._cut = False
                        connection.ended = "cut by the client"
                    if self._stop.is_set():
                        break
                    delay = self._backoff if connection.events else min(delay * 2,
                                                                         self._max_backoff)
                    await asyncio.sleep(delay)  # backoff before a reconnect, as EventSource does
        except asyncio.CancelledError:
            if self._following is not None:
                self._following.cancel()
            raise
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            if self.history.connections and self.history.connections[-1].ended == "open":
                self.history.connections[-1].ended = "stopped"
            self._changed.set()

    async def _follow(self, http: httpx.AsyncClient, connection: Connection) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.cursor is not None:
            headers["Last-Event-ID"] = str(self.cursor)
        params = {"scope": self.scope} if self.scope else {}
        async with http.stream("GET", "/api/events", headers=headers, params=params) as response:
            connection.status = response.status_code
            self._changed.set()
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")[:200]
                connection.ended = f"HTTP {response.status_code}"
                if response.status_code in FATAL_STATUS:
                    raise RuntimeError(f"GET /api/events answered {response.status_code}: {body}")
                return
            async for event in parse_sse(response.aiter_lines()):
                self.history.events.append(Received(connection.number, event.id, event.event,
                                                    event.data, time.monotonic()))
                connection.events += 1
                if event.id is not None:
                    self.cursor = event.id
                self._changed.set()
                if self._stop.is_set():
                    connection.ended = "stopped"
                    return
                await self._reading.wait()
            connection.ended = "closed by the server"


def small_receive_buffer(size: int = 4096) -> list[tuple[int, int, int]]:
    """Socket options for a client whose kernel buffers little: its stalls reach the server."""
    return [(socket.SOL_SOCKET, socket.SO_RCVBUF, size)]
