"""How fast does an idle Kiln start an uploaded task? (issue: about 10 ms; arq's poll: ~250 ms)

Runs a private redis-server and a real uvicorn with the embedded worker on 127.0.0.1, uploads a
small mesh N times, each once the task before it has ended (so the worker is idle: the case
being measured, whatever a task costs), and measures
  - server side: the task's `created` timestamp -> its STARTED event's `ts` (enqueue to start)
  - client side: sending POST /api/uploads -> receiving STARTED on the SSE stream

    .venv/bin/python bench/pickup.py [N]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import ROOT, live_service, sign_in  # noqa: E402


async def measure(base: str, n: int, mesh: bytes) -> tuple[list[float], list[float]]:
    server_side, client_side = [], []
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        headers = await sign_in(http)
        async with http.stream("GET", "/api/events", headers=headers) as events:
            lines = events.aiter_lines()
            for i in range(n):
                await asyncio.sleep(0.05)  # the last task has ended: the worker is idle
                sent = time.perf_counter()
                response = await http.post("/api/uploads", headers=headers,
                                           files=[("file", ("cube.obj", mesh))])
                tid = response.json()["tasks"][0]["task_id"]
                started = 0.0
                async for line in lines:
                    if not line.startswith("data: ") or tid not in line:
                        continue
                    event = json.loads(line[6:])
                    if event["state"] == "STARTED":
                        client_side.append(time.perf_counter() - sent)
                        started = event["ts"]
                    elif event["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
                        break  # each upload waits for the last to end: pickup of an idle worker
                task = (await http.get(f"/api/tasks/{tid}", headers=headers)).json()
                server_side.append(started - task["created"])
                print(f"\r  {i + 1}/{n} tasks", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return server_side, client_side


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return (f"{name:<34} median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   "
            f"max {ms[-1]:6.1f} ms")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    mesh = (ROOT / "examples" / "cube.obj").read_bytes()
    with live_service(worker_concurrency=2) as live:
        print(f"pickup of {n} uploads on an idle service (2 child processes)", file=sys.stderr)
        server_side, client_side = asyncio.run(measure(live.base_url, n, mesh))
    print(summary("enqueue -> STARTED (server clock)", server_side))
    print(summary("upload sent -> STARTED received", client_side))


if __name__ == "__main__":
    main()
