"""One signed-in chaos session: upload files, list its tasks, check what its recorder saw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from records import keys
from tests.chaos.history import check_history
from tests.chaos.recorder import Recorder
from tests.client import KilnClient
from tests.users import add_user

ROOT = Path(__file__).resolve().parents[2]
CUBE = (ROOT / "examples" / "cube.obj").read_bytes()
"""A small OBJ: a mesh task."""
GRADIENT = (ROOT / "examples" / "gradient.png").read_bytes()
"""A small PNG: a texture task."""
PASSWORD = "correct horse battery"


class Session:
    """A user signed in once against `base_url`; `acknowledged` holds every task a 202 named."""

    def __init__(self, client: KilnClient) -> None:
        self.client = client
        self.acknowledged: list[str] = []

    @classmethod
    async def open(cls, base_url: str, redis_url: str, name: str = "alice") -> Session:
        await add_user(redis_url, name, PASSWORD)
        client = KilnClient(base_url)
        await client.login(name, PASSWORD)
        return cls(client)

    @property
    def token(self) -> str:
        assert self.client.token is not None
        return self.client.token

    def recorder(self, **options: Any) -> Recorder:
        """A recorder of this session's stream (see Recorder for the options)."""
        return Recorder(str(self.client.http.base_url).rstrip("/"), self.token, **options)

    async def upload(self, *files: tuple[str, bytes]) -> list[str]:
        """Upload `files` (name, bytes) in one request; the task ids of its 202."""
        response = await self.client.upload(*files)
        assert response.status_code == 202, response.text
        ids = [str(t["task_id"]) for t in response.json()["tasks"]]
        self.acknowledged += ids
        return ids

    async def listing(self, timeout: float = 20.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """Every task of this session (GET /api/tasks?scope=session), waiting out a restart."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = await self.client.get("/api/tasks", params={
                    "scope": "session", "limit": "200"})
                if response.status_code == 200:
                    tasks: list[dict[str, Any]] = response.json()["tasks"]
                    return tasks
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                failure = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"GET /api/tasks kept failing: {failure}")
            await asyncio.sleep(0.1)  # the server is coming back: ask again shortly

    async def check(self, recorder: Recorder, acknowledged: Iterable[str] | None = None) -> None:
        """`check_history` of what `recorder` saw against this session's task list."""
        await recorder.stop()
        ids = self.acknowledged if acknowledged is None else list(acknowledged)
        check_history(recorder.history, ids, await self.listing())

    async def close(self) -> None:
        await self.client.http.aclose()


SETTLE_S = 5.0
"""How long arq may take to retire the job of a task that has just ended: its function emits the
SUCCESS, then releases the job's slot with the scheduler, and only then does arq delete the job
and take it out of its queue."""


async def leftover_jobs(redis_url: str) -> list[str]:
    """Queue and arq keys still there SETTLE_S after every task ended (none: results are not
    kept); read again until then, polling Redis, as the last jobs are being retired."""
    client = Redis.from_url(redis_url)
    deadline = time.monotonic() + SETTLE_S
    try:
        while True:
            queued = [job.decode() for job in await client.zrange(keys.QUEUE, 0, -1)]
            found = [f"{keys.QUEUE} holds {', '.join(queued)}"] if queued else []
            for pattern in ("arq:job:*", "arq:in-progress:*", "arq:retry:*"):
                found += [k.decode() async for k in client.scan_iter(match=pattern)]
            if not found or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
