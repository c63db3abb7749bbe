"""Kiln's SSE response on its own: a client that goes ends the stream, even when a library
under the stream loses the first cancel (as asyncio.wait_for does on Python 3.11)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest
from starlette.types import Message

from api.sse import EventStream


class _Client:
    """An ASGI client: receives what the app sends; goes away when told to."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self.requested = False
        self.streaming = asyncio.Event()  # the head and a first message are out

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if len(self.sent) >= 2:
            self.streaming.set()


def _scope(method: str = "GET") -> dict[str, object]:
    return {"type": "http", "method": method, "path": "/api/events", "headers": [],
            "state": {}}


async def test_a_stream_ends_when_its_client_goes_even_if_the_first_cancel_is_lost() -> None:
    cleaned_up = asyncio.Event()
    lost = 0

    async def body() -> AsyncGenerator[bytes, None]:
        nonlocal lost
        try:
            yield b"event: snapshot\ndata: {}\n\n"
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    if lost:
                        raise
                    lost += 1  # what wait_for does when the cancel lands as its wait ends
        finally:
            cleaned_up.set()

    client = _Client()
    stream = asyncio.create_task(EventStream(body())(_scope(), client.receive, client.send))
    await asyncio.wait_for(client.streaming.wait(), 5)
    client.gone.set()
    await asyncio.wait_for(stream, 5)  # returns: the stream's end is its normal end
    assert lost == 1 and cleaned_up.is_set()
    assert not stream.cancelled()
    assert client.sent[-1]["body"] == b"event: snapshot\ndata: {}\n\n", \
        "nothing is sent to a client that went"


async def test_the_server_ends_a_stream_cleanly_through_its_scope() -> None:
    async def body() -> AsyncGenerator[bytes, None]:
        yield b": ping\n\n"
        await asyncio.Event().wait()
        yield b"never"

    client = _Client()
    scope = _scope()
    stream = asyncio.create_task(EventStream(body())(scope, client.receive, client.send))
    await asyncio.wait_for(client.streaming.wait(), 5)
    state = scope["state"]
    assert isinstance(state, dict)
    state["kiln.end_stream"]()  # what Kiln's uvicorn protocol calls at shutdown
    await asyncio.wait_for(stream, 5)
    assert client.sent[-1] == {"type": "http.response.body", "body": b""}, \
        "the stream must end with the end of its body"
    assert "kiln.end_stream" not in state


async def test_a_stream_that_ends_by_itself_after_a_lost_cancel_is_not_cancelled_later() -> None:
    async def body() -> AsyncGenerator[bytes, None]:
        yield b": ping\n\n"
        with contextlib.suppress(asyncio.CancelledError):  # lost, as wait_for loses it
            await asyncio.Event().wait()
        # and then the body ends by itself

    client = _Client()

    async def request_then_more_work() -> str:
        await EventStream(body())(_scope(), client.receive, client.send)
        await asyncio.sleep(0.3)  # three re-cancel periods: a stray cancel would land here
        return "done"

    task = asyncio.create_task(request_then_more_work())
    await asyncio.wait_for(client.streaming.wait(), 5)
    client.gone.set()
    assert await asyncio.wait_for(task, 5) == "done"
    assert task.cancelling() == 0


@pytest.mark.parametrize("case", ["HEAD", "a shutdown that began before the stream"])
async def test_only_the_headers_and_an_empty_body_and_the_body_never_starts(case: str) -> None:
    started = False

    async def body() -> AsyncGenerator[bytes, None]:
        nonlocal started
        started = True
        yield b"never"

    client = _Client()
    scope = _scope("HEAD" if case == "HEAD" else "GET")
    if case != "HEAD":
        scope["state"] = {"kiln.end_stream": "ended"}  # what the protocol sets at shutdown
    await asyncio.wait_for(EventStream(body())(scope, client.receive, client.send), 5)
    assert not started
    start, end = client.sent
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert end == {"type": "http.response.body", "body": b""}


async def test_a_stream_whose_disconnect_watcher_fails_ends() -> None:
    async def body() -> AsyncGenerator[bytes, None]:
        yield b": ping\n\n"
        await asyncio.Event().wait()
        yield b"never"

    async def broken_receive() -> Message:
        raise RuntimeError("the server's receive failed")

    client = _Client()
    await asyncio.wait_for(EventStream(body())(_scope(), broken_receive, client.send), 5)
