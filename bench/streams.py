"""Idle streams: memory per stream, how fast streams open, and CPU per delivered event, for Kiln's
`GET /api/events` against a bare sse-starlette app that only fans out (the comparator, below).

Both servers run as their own processes on 127.0.0.1 (Kiln: `kiln serve` without its worker, over
its own redis-server). For each, this script opens N streams (raw sockets, 50 at a time; each
counts once its first event arrived), reads the server's RSS before and after, then has E events
delivered to every stream and reads the server's CPU for it.

    .venv/bin/python bench/streams.py [--streams 2000] [--events 20]

Targets (issue 10): at most 30 KB per idle stream (at 10,000 streams), opening at least 0.8x as
fast as bare sse-starlette, CPU per delivered event at most 1.5x bare sse-starlette's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OPEN_AT_ONCE = 50


def bare_app() -> object:
    """The comparator: every client gets every published event; nothing else."""
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    clients: set[asyncio.Queue[str]] = set()

    async def events(request: Request) -> EventSourceResponse:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        clients.add(queue)

        async def feed() -> AsyncIterator[dict[str, str]]:
            try:
                yield {"event": "ready", "data": "{}"}
                while True:
                    yield {"event": "task", "data": await queue.get()}
            finally:
                clients.discard(queue)

        return EventSourceResponse(feed(), ping=15)

    async def publish(request: Request) -> PlainTextResponse:
        for n in range(int(request.query_params.get("n", "1"))):
            data = json.dumps({"type": "task", "n": n, "state": "PROGRESS", "progress": 0.5})
            for queue in list(clients):
                queue.put_nowait(data)
            await asyncio.sleep(0)
        return PlainTextResponse(str(len(clients)))

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/events", events), Route("/health", health),
                             Route("/publish", publish, methods=["POST"])])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in 60 s")


Streams = tuple[list[asyncio.StreamWriter], list[asyncio.StreamReader], float]


async def open_streams(port: int, path: str, headers: str, count: int, first: bytes) -> Streams:
    """`count` streams, OPEN_AT_ONCE at a time, each once its `first` bytes came; the rate."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
               f"{headers}\r\n")
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request.encode())
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(first), 30)
            writers.append(writer)
            readers.append(reader)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return writers, readers, count / (time.perf_counter() - started)


async def drain_events(readers: list[asyncio.StreamReader], events: int) -> None:
    async def one(reader: asyncio.StreamReader) -> None:
        seen = 0
        while seen < events:
            line = await reader.readline()
            if not line:
                raise SystemExit("a stream ended")
            if line.startswith(b"event: task"):
                seen += 1

    await asyncio.wait_for(asyncio.gather(*(one(r) for r in readers)), 120)


async def measure(pid: int, port: int, path: str, headers: str, count: int, events: int,
                  first: bytes, publish: Callable[[int], Awaitable[None]]) -> dict[str, float]:
    before = rss_kb(pid)
    writers, readers, rate = await open_streams(port, path, headers, count, first)
    await asyncio.sleep(1)  # let the server settle before reading its memory
    after = rss_kb(pid)
    cpu = cpu_s(pid)
    await publish(events)
    await drain_events(readers, events)
    spent = cpu_s(pid) - cpu
    for writer in writers:
        writer.close()
    return {"kb_per_stream": (after - before) / count, "opens_per_s": rate,
            "cpu_us_per_event": 1e6 * spent / (count * events)}


def run_bare(count: int, events: int) -> dict[str, float]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--bare-server", str(port)])
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health")

        async def publish(n: int) -> None:
            await asyncio.to_thread(_post, f"http://127.0.0.1:{port}/publish?n={n}")

        return asyncio.run(measure(server.pid, port, "/events", "", count, events,
                                   b"event: ready", publish))
    finally:
        server.terminate()
        server.wait(10)


def run_kiln(count: int, events: int) -> dict[str, float]:
    from live import PASSWORD, USER

    with tempfile.TemporaryDirectory(prefix="kiln-streams-") as tmp:
        redis_port, port = _free_port(), _free_port()
        url = f"redis://127.0.0.1:{redis_port}/0"
        redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                                  str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        env = {**os.environ, "REDIS_URL": url, "KILN_DATA_DIR": tmp,
               "KILN_EMBEDDED_WORKER": "false", "KILN_SSE_PER_SESSION": str(count + 10)}
        kiln = str(ROOT / ".venv" / "bin" / "kiln")
        subprocess.run([kiln, "users", "add", USER], input=PASSWORD, text=True, env=env,
                       check=True, capture_output=True)
        server = subprocess.Popen([kiln, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_healthy(f"http://127.0.0.1:{port}/healthz")
            token = json.loads(_post(f"http://127.0.0.1:{port}/api/auth/login",
                                     {"username": USER, "password": PASSWORD}))["access_token"]
            session = json.loads(_b64url(token.split(".")[1]))["sid"]
            owner = json.loads(_b64url(token.split(".")[1]))["sub"]

            async def publish(n: int) -> None:
                await _emit_progress(url, session, owner, n)

            return asyncio.run(measure(server.pid, port, "/api/events",
                                       f"Authorization: Bearer {token}\r\n", count, events,
                                       b"event: snapshot", publish))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
            redis.terminate()
            redis.wait(10)


async def _emit_progress(url: str, session: str, owner: str, n: int) -> None:
    """n PROGRESS events of one task of the session, written as a worker writes them."""
    from records.events import Guard, TaskState
    from records.queue import NewTask, new_task_identity
    from services import open_services
    from settings import Settings

    settings = Settings(redis_url=url, data_dir=Path(tempfile.mkdtemp()))
    async with open_services(settings, url) as services:
        who = new_task_identity(owner=owner, session=session, batch="bench", kind="mesh",
                                filename="a.obj")
        await services.queue.submit_all([NewTask(who, "obj", 1, ("a.obj",))])
        await services.events.emit(who, Guard.CLAIM, TaskState.STARTED, attempt=1, run="r",
                                   stage="starting")
        for i in range(n):
            await services.events.emit(who, Guard.RUN, TaskState.PROGRESS, attempt=1, run="r",
                                       stage="load", progress=i / n)


def _b64url(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _post(url: str, body: dict[str, str] | None = None) -> str:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return str(answer.read().decode())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        import uvicorn

        uvicorn.run(bare_app(), host="127.0.0.1", port=args.bare_server,  # type: ignore[arg-type]
                    log_level="warning", access_log=False)
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = {}
    for name, run in (("bare sse-starlette", run_bare), ("Kiln", run_kiln)):
        print(f"{name}: {args.streams} streams, {args.events} events each ...", file=sys.stderr,
              flush=True)
        rows[name] = run(args.streams, args.events)
    print(f"\n{args.streams} idle streams, {args.events} events delivered to each\n")
    print("| measure | bare sse-starlette | Kiln | Kiln / bare |")
    print("|---|---|---|---|")
    bare, kiln = rows["bare sse-starlette"], rows["Kiln"]
    for key, label in (("kb_per_stream", "RSS per idle stream, KB"),
                       ("opens_per_s", "streams opened per second"),
                       ("cpu_us_per_event", "server CPU per delivered event, µs")):
        print(f"| {label} | {bare[key]:.1f} | {kiln[key]:.1f} | {kiln[key] / bare[key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
