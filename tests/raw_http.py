"""Raw HTTP/1.1 over asyncio sockets, for the protocol attacks no well-behaved client can send."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port, limit=1024 * 1024)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One response with a Content-Length body (what Kiln's JSON answers carry)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawResponse(int(status_line.split(" ", 2)[1]), headers, body)


async def exchange(url: str, raw: bytes, timeout: float = 5.0  # noqa: ASYNC109 -- a test's bound
                   ) -> RawResponse:
    """Send `raw` as is (without waiting for it to drain) and read one response."""
    reader, writer = await connect(url)
    try:
        writer.write(raw)
        async with asyncio.timeout(timeout):
            return await read_response(reader)
    finally:
        writer.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server closed the connection (EOF or a reset) without answering."""
    try:
        return await reader.read(1) == b""
    except ConnectionError:
        return True
