"""Coalesce a child's progress reports to a few events a second; stage changes are always sent."""

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
        self._must: list[tuple[str, float]] = []
        self._latest: tuple[str, float] | None = None
        self._stage: str | None = None
        self._wakeup = asyncio.Event()
        self._closing = False
        self._pump = asyncio.create_task(self._run(), name="kiln-progress")

    def update(self, stage: str, fraction: float) -> None:
        fraction = min(1.0, max(0.0, fraction))
        if stage != self._stage:
            if self._latest is not None and self._latest[0] == self._stage:
                self._must.append(self._latest)  # the old stage's last word is not dropped
            self._latest = None
            self._stage = stage
            self._must.append((stage, fraction))
        else:
            self._latest = (stage, fraction)
        self._wakeup.set()

    async def close(self) -> None:
        """Send what is pending, then stop."""
        self._closing = True
        self._wakeup.set()
        await self._pump

    def cancel(self) -> None:
        self._pump.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_allowed = 0.0
        while True:
            if not self._must and self._latest is None:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._must:
                item = self._must.pop(0)
            else:
                delay = next_allowed - loop.time()
                if delay > 0 and not self._closing:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    continue  # look again: a stage change may have come, or the delay is over
                latest, self._latest = self._latest, None
                assert latest is not None
                item = latest
            if not await self._deliver(*item):
                return
            next_allowed = loop.time() + self._interval

    async def _deliver(self, stage: str, fraction: float) -> bool:
        if await self._send(stage, fraction):
            return True
        self._on_rejected()
        return False
