"""A small Kiln client for tests: sign in, upload, read the SSE stream event by event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    id: int | None
    event: str
    data: dict[str, Any]


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Events of an SSE body (comments and pings skipped)."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                raw_id = fields.get("id")
                yield Event(int(raw_id) if raw_id else None, fields.get("event", "message"),
                            json.loads("\n".join(data)))
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value


class KilnClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.token: str | None = None

    async def __aenter__(self) -> KilnClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def login(self, username: str, password: str) -> dict[str, Any]:
        response = await self.http.post("/api/auth/login",
                                        json={"username": username, "password": password})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        self.token = body["access_token"]
        self.http.cookies.clear()  # tests use the Bearer header unless they say otherwise
        return body

    async def upload(self, *files: Path | tuple[str, bytes], form: dict[str, str] | None = None,
                     params: dict[str, str] | None = None) -> httpx.Response:
        """POST /api/uploads with these files (and plain `form` fields, query `params`)."""
        parts = []
        for item in files:
            if isinstance(item, Path):
                parts.append(("file", (item.name, item.read_bytes())))
            else:
                parts.append(("file", item))
        return await self.http.post("/api/uploads", files=parts, data=form, params=params,
                                    headers=self.headers)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.headers, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.post(path, headers=self.headers, **kw)

    async def events(self, *, last_event_id: int | str | None = None, scope: str | None = None,
                     params: dict[str, str] | None = None) -> AsyncGenerator[Event, None]:
        headers = dict(self.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        params = dict(params or {})
        if scope:
            params["scope"] = scope
        async with self.http.stream("GET", "/api/events", headers=headers, params=params,
                                    timeout=httpx.Timeout(30, read=60)) as response:
            assert response.status_code == 200, await response.aread()
            async for event in parse_sse(response.aiter_lines()):
                yield event


async def signed_in(url: str, redis_url: str, name: str, *, admin: bool = False) -> KilnClient:
    """A client of the server at `url`, signed in as a new user `name` (tests/users.py)."""
    from tests.users import add_user

    await add_user(redis_url, name, admin=admin)
    client = KilnClient(url)
    await client.login(name, "correct horse battery")
    return client


async def live_events(client: KilnClient) -> AsyncGenerator[Event, None]:
    """A stream of the client's session, its opening snapshot already read: live from here."""
    stream = client.events()
    await collect(stream, lambda ev: len(ev) >= 1)
    return stream


NOT_TASKS = ("batch", "deleted")
"""Stream events about batches and deletions, which `collect` leaves out unless asked."""


async def collect(stream: AsyncIterator[Event], until: Callable[[list[Event]], bool],
                  timeout: float = 30,  # noqa: ASYNC109 -- a test's deadline
                  skip: Sequence[str] = NOT_TASKS) -> list[Event]:
    """Read events until `until(events)` holds, leaving out those named in `skip`; fails the
    test after `timeout` seconds."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in stream:
            if event.event in skip:
                continue
            seen.append(event)
            if until(seen):
                return seen
    raise AssertionError(f"stream ended early after {len(seen)} events")


def terminal_for(task_ids: Sequence[str]) -> Callable[[list[Event]], bool]:
    wanted = set(task_ids)

    def done(events: list[Event]) -> bool:
        finished = {e.data["task_id"] for e in events if e.event == "task"
                    and e.data["state"] in ("SUCCESS", "FAILURE", "REVOKED")}
        return wanted <= finished

    return done
