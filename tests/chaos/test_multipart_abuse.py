"""Multipart abuse against a live server (RELIABILITY F2): ten thousand form fields, ten thousand
tiny files, a boundary of a megabyte. Each is refused quickly with a JSON error naming a code; the
server goes on answering, and no received part is left behind in `incoming/`."""

from __future__ import annotations

import time

import httpx

from tests.chaos.processes import Processes
from tests.chaos.session import CUBE, Session

MANY = 10_000
QUICK = 5.0
"""Seconds a refusal may take, the whole body sent."""
BOUNDARY = "kiln-chaos-boundary"


def _body(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body of (field name, file name or None, bytes) parts."""
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def _refused(http: httpx.AsyncClient, session: Session, body: bytes, boundary: str,
                   statuses: tuple[int, ...]) -> str:
    """POST `body` as an upload; assert a quick refusal in `statuses` with a JSON error code."""
    started = time.monotonic()
    response = await http.post(
        "/api/uploads", content=body, headers={
            "Authorization": f"Bearer {session.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    took = time.monotonic() - started
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert took < QUICK, f"the refusal took {took:.1f} s"
    error = response.json().get("error")
    assert isinstance(error, str) and error, response.text[:300]
    return error


async def _healthy(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200, response.text[:300]


async def test_multipart_abuse_is_refused_quickly_and_leaves_nothing(
        processes: Processes, redis_url: str) -> None:
    web = processes.serve(env={"KILN_EMBEDDED_WORKER": "false"})
    await web.ready()
    session = await Session.open(web.url, redis_url)
    incoming = processes.data_dir / "incoming"
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=QUICK * 2) as http:
            fields = _body([(f"f{n}", None, b"x") for n in range(MANY)])
            assert await _refused(http, session, fields, BOUNDARY, (413,)) == "too_many_fields"
            await _healthy(http)

            # a file does not make the fields beside it free: they are counted all the same
            mixed = _body([("file", "cube.obj", CUBE)]
                          + [(f"f{n}", None, b"x") for n in range(MANY)])
            assert await _refused(http, session, mixed, BOUNDARY, (413,)) == "too_many_fields"
            await _healthy(http)

            files = _body([("file", f"t{n}.obj", b"v 0 0 0\n") for n in range(MANY)])
            assert await _refused(http, session, files, BOUNDARY, (413,)) == "too_many_files"
            await _healthy(http)

            # a boundary that fits in the request head, but not in any sane body
            long = "b" * 4096
            body = _body([("file", "cube.obj", CUBE)], long)
            assert await _refused(http, session, body, long, (400,)) == "malformed_upload"
            await _healthy(http)

            # a megabyte of boundary cannot be anything but a request head over its limit
            huge = "b" * (1024 * 1024)
            body = _body([("file", "cube.obj", CUBE)], huge)
            assert await _refused(http, session, body, huge, (400, 413, 431)) in (
                "malformed_upload", "headers_too_large")

        async with httpx.AsyncClient(base_url=web.url, timeout=QUICK) as fresh:
            await _healthy(fresh)
        assert sorted(p.name for p in incoming.iterdir()) == [], "upload parts left behind"
    finally:
        await session.close()

