"""Coalesce a child's progress reports: one rate limit per task, the latest report wins.

The first report goes out at once (a task that finishes within one interval sends exactly one
PROGRESS); after that at most one every 1/hz seconds, carrying the newest stage and fraction, so
a stage change waits its turn like any other report. What is still pending when the run ends is
dropped: its terminal event says more. State changes never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

Send = Callable[[str, float], Awaitable[bool]]
"""Publishes one PROGRESS event; returns False when the task is no longer ours to report."""


class ProgressCoalescer:
    """Receives `update(stage, fraction)` on the event loop; sends through one ordered pump."""

    def __init__(self, send: Send, *, hz: float, on_rejected: Callable[[], None]) -> None:
        self._send = send
        self._interval = 1.0 / hz
        self._on_rejected = on_rejected
        self._latest: tuple[str, float] | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._pump = asyncio.create_task(self._run(), name="kiln-progress")

    def update(self, stage: str, fraction: float) -> None:
        self._latest = (stage, min(1.0, max(0.0, fraction)))  # also maps NaN to 0.0
        self._wakeup.set()

    async def close(self) -> None:
        """Stop; a report still waiting for its turn is dropped (the terminal event follows)."""
        self._closing = True
        self._wakeup.set()
        await self._pump

    def cancel(self) -> None:
        self._pump.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_allowed = 0.0
        while not self._closing:
            if self._latest is None:
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
            latest, self._latest = self._latest, None
            if not await self._send(*latest):
                self._on_rejected()
                return
            next_allowed = loop.time() + self._interval
