"""Coalesce a child's progress reports: one rate limit per task, the latest report wins.

The first report goes out at once (a task that finishes within one interval sends exactly one
PROGRESS); after that at most one every 1/hz seconds, carrying the newest stage and fraction, so
a stage change waits its turn like any other report. What is still pending when the run ends is
dropped (its terminal event says more), except a partial result: the client shows it while the
run goes on, and may have missed the terminal event's. State changes never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

Partial = dict[str, Any]
"""A result so far: the stats and artifacts a pipeline has (`tasks.progress.share`)."""
Send = Callable[[str, float, Partial | None], Awaitable[bool]]
"""Publishes one PROGRESS event (with a partial result or none); returns False when the task
is no longer ours to report."""


class ProgressCoalescer:
    """Receives `update(stage, fraction)` on the event loop; sends through one ordered pump."""

    def __init__(self, send: Send, *, hz: float, on_rejected: Callable[[], None]) -> None:
        self._send = send
        self._interval = 1.0 / hz
        self._on_rejected = on_rejected
        self._latest: tuple[str, float] | None = None
        self._current: tuple[str, float] = ("starting", 0.0)
        self._partial: Partial | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._pump: asyncio.Task[bool] = asyncio.create_task(self._run(), name="kiln-progress")

    def update(self, stage: str, fraction: float) -> None:
        self._latest = (stage, min(1.0, max(0.0, fraction)))  # also maps NaN to 0.0
        self._current = self._latest
        self._wakeup.set()

    def partial(self, result: Partial) -> None:
        """A result so far: goes out with the next report (the newest one wins)."""
        self._partial = result
        self._wakeup.set()

    async def close(self) -> None:
        """Stop; a report still waiting for its turn is dropped (the terminal event follows),
        unless it carries a partial result: that one goes out now."""
        self._closing = True
        self._wakeup.set()
        if await self._pump and self._partial is not None:
            await self._send_pending()

    def cancel(self) -> None:
        self._pump.cancel()

    async def _send_pending(self) -> bool:
        stage, fraction = self._latest or self._current
        partial, self._latest, self._partial = self._partial, None, None
        return await self._send(stage, fraction, partial)

    async def _run(self) -> bool:
        """Send reports until closed: True, or until one is refused: False."""
        loop = asyncio.get_running_loop()
        next_allowed = 0.0
        while not self._closing:
            if self._latest is None and self._partial is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = next_allowed - loop.time()
            if delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: see streaming.hub
                        await self._wakeup.wait()
                continue  # look again: the delay is over, or the run has ended
            if not await self._send_pending():
                self._on_rejected()
                return False
            next_allowed = loop.time() + self._interval
        return True
