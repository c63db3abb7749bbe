"""Password hashing on its own small thread pool, so sign-ins never queue ahead of other work.

scrypt takes tens of milliseconds of CPU per call. Run on asyncio's default executor, a flood of
sign-ins queued ahead of the disk writes of uploads; here it has `threads` threads of its own,
and at most `waiting` more sign-ins may wait for one. The rest are refused at once (HasherBusy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from auth.passwords import hash_password, verify_password

T = TypeVar("T")


class HasherBusy(Exception):
    """Every hashing thread is busy and the waiting room is full: try again shortly."""


class PasswordHasher:
    """scrypt off the event loop, on a bounded pool this process owns; close() it on exit."""

    def __init__(self, threads: int, waiting: int) -> None:
        if threads < 1 or waiting < 0:
            raise ValueError("a hasher needs at least one thread and a non-negative waiting room")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kiln-hash")
        self._capacity = threads + waiting
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Calls hashing or waiting for a thread right now."""
        return self._admitted

    async def hash(self, password: str) -> str:
        """A new encoding of the password (ValueError when it is too long); never refused."""
        return await self._run(hash_password, password)

    async def verify(self, password: str, encoded: str) -> bool:
        """Whether the password matches; HasherBusy at once when too many are ahead of it."""
        return await self._admit(verify_password, password, encoded)

    async def hash_admitted(self, password: str) -> str:
        """`hash`, refused like `verify` when too many are ahead (a sign-in's dummy work)."""
        return await self._admit(hash_password, password)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _admit(self, function: Callable[..., T], *args: str) -> T:
        if self._admitted >= self._capacity:
            raise HasherBusy("too many sign-ins are being checked; try again in a moment")
        self._admitted += 1
        try:
            return await self._run(function, *args)
        finally:
            self._admitted -= 1

    async def _run(self, function: Callable[..., T], *args: str) -> T:
        # A caller cancelled while waiting (its client went away) drops its queued work too.
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
