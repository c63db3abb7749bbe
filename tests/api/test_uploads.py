"""Upload refusals: size cap counted on the wire, kind from the bytes, nothing left on disk."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.client import KilnClient
from tests.conftest import corpus, make_settings
from tests.live import LiveServer, ServerFactory
from tests.users import add_user

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

PSD = b"8BPS\x00\x01" + b"\x00" * 200
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b"x" * 100


def _stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "incoming").rglob("*") if p.is_file()] + \
           [p for p in (data_dir / "tasks").rglob("*") if p.is_file()]


@pytest.fixture
def small_cap_server(redis_url: str, tmp_path: Path,
                     live_server_factory: ServerFactory) -> LiveServer:
    settings = make_settings(redis_url, tmp_path / "data", max_upload_bytes=64 * 1024,
                             embedded_worker=False)
    return live_server_factory(settings)


async def _signed_in(server: LiveServer, redis_url: str) -> KilnClient:
    await add_user(redis_url, "alice")
    client = KilnClient(server.url)
    await client.login("alice", "correct horse battery")
    return client


async def test_over_the_cap_is_413_and_leaves_no_file(small_cap_server: LiveServer,
                                                      redis_url: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        big = ("big.obj", b"v 0 0 0\n" * 20_000)  # 160 KB, over the 64 KiB cap
        response = await client.upload(corpus("OBJ/box.obj"), big)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert "big.obj" in response.json()["message"] and response.json()["file"] == "big.obj"
        tasks = await client.get("/api/tasks")
        assert tasks.json()["total"] == 0
    assert _stored_files(small_cap_server.settings.data_dir) == []


async def test_a_lying_or_missing_content_length_changes_nothing(small_cap_server: LiveServer,
                                                                 redis_url: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    boundary = "kilnboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.obj\"\r\n\r\n").encode() + b"v 0 0 0\n" * 20_000 + \
        f"\r\n--{boundary}--\r\n".encode()

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]
            await asyncio.sleep(0)

    headers = {**client.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with client:
        no_length = await client.http.post("/api/uploads", content=chunked(), headers=headers)
        assert no_length.status_code == 413
    # on the raw wire: a Content-Length that claims less than is sent ends the body early
    # (malformed); one that tells the truth still meets the cap counted on the bytes themselves
    port = int(small_cap_server.url.rsplit(":", 1)[1])
    for claimed, status in ((200, b" 400 "), (len(body), b" 413 ")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /api/uploads HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {headers['Authorization']}\r\n"
                f"Content-Type: {headers['Content-Type']}\r\n"
                f"Content-Length: {claimed}\r\n\r\n")
        writer.write(head.encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status in status_line, (claimed, status_line)
    assert _stored_files(small_cap_server.settings.data_dir) == []


@pytest.mark.parametrize("name,content,status,code", [
    ("layers.png", PSD, 415, "unsupported_type"),
    ("poster.png", EPS, 415, "unsupported_type"),
    ("notes.obj", b"hello, this is not a mesh\n", 415, "unsupported_type"),
    ("empty.png", b"", 400, "empty_file"),
])
async def test_refused_kinds(small_cap_server: LiveServer, redis_url: str, name: str,
                             content: bytes, status: int, code: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        response = await client.upload(corpus("OBJ/box.obj"), (name, content))
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert name in response.json()["message"]
        assert response.json()["file"] == name
    assert _stored_files(small_cap_server.settings.data_dir) == []


async def test_a_refusal_names_the_file_as_the_client_sent_it(small_cap_server: LiveServer,
                                                              redis_url: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        orphan = await client.upload(corpus("OBJ/box.obj"), ("Walls.MTL", b"newmtl wall\n"))
        assert orphan.status_code == 415, orphan.text
        assert orphan.json() == {"error": "unsupported_type", "file": "Walls.MTL",
                                 "message": orphan.json()["message"]}
        # under a name that clashes (ignoring case) with another file's, so it is stored renamed
        png = corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png").read_bytes()
        empty = await client.upload(("box.png", png), ("BOX.png", b""))
        assert empty.json()["error"] == "empty_file"
        assert empty.json()["file"] == "BOX.png"
        not_about_a_file = await client.post("/api/uploads", json={"file": "x"})
        assert "file" not in not_about_a_file.json()


async def test_malformed_requests(small_cap_server: LiveServer, redis_url: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        not_multipart = await client.post("/api/uploads", json={"file": "x"})
        assert not_multipart.status_code == 400
        assert not_multipart.json()["error"] == "malformed_upload"
        no_files = await client.post("/api/uploads", data={"just": "a field"})
        assert no_files.status_code == 400
        truncated = await client.http.post(
            "/api/uploads", content=b"--b\r\nContent-Disposition: form-data; name=\"f\"; "
            b"filename=\"a.obj\"\r\n\r\nv 0 0 0\n",
            headers={**client.headers, "Content-Type": "multipart/form-data; boundary=b"})
        assert truncated.status_code == 400
    assert _stored_files(small_cap_server.settings.data_dir) == []


async def test_kind_comes_from_the_bytes_not_the_name(small_cap_server: LiveServer,
                                                      redis_url: str) -> None:
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        png = corpus("glTF2/BoxTextured-glTF/CesiumLogoFlat.png").read_bytes()
        triangle = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
        response = await client.upload(("model.obj", png), ("../../etc/passwd", triangle))
        assert response.status_code == 202, response.text
        tasks = response.json()["tasks"]
        assert [t["kind"] for t in tasks] == ["texture", "mesh"]
        assert tasks[1]["filename"] == "passwd"
        stored = sorted(p.name for p in _stored_files(small_cap_server.settings.data_dir))
        assert stored == ["model.obj", "passwd"]


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                     "\u2066", "\u2067", "\u2068", "\u2069"])
async def test_bidi_controls_are_stripped_from_stored_names(small_cap_server: LiveServer,
                                                           redis_url: str, control: str) -> None:
    # `photo<RLO>jbo.exe` would be shown as `photoexe.obj`
    client = await _signed_in(small_cap_server, redis_url)
    async with client:
        response = await client.upload((f"photo{control}jbo.exe", b"v 0 0 0\nv 1 0 0\n"
                                        b"v 0 1 0\nf 1 2 3\n"))
        assert response.status_code == 202, response.text
        (task,) = response.json()["tasks"]
        assert task["filename"] == "photojbo.exe"
        listed = (await client.http.get(f"/api/tasks/{task['task_id']}",
                                        headers=client.headers)).json()
        assert listed["filename"] == "photojbo.exe"


async def test_httpx_client_sanity(small_cap_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=small_cap_server.url) as http:
        assert (await http.get("/healthz")).json()["status"] == "ok"
