"""Events and Redis commands per task, from the upload to its SUCCESS, on a quiet service.

Starts Kiln (embedded worker) on its own redis-server, signs in, opens the session's stream and
uploads N small OBJ files (`examples/cube.obj`) in one request, then waits for every SUCCESS.
Redis's `INFO commandstats` before and after (calls inside Lua scripts included, the commands
of this script's own connection excluded) gives the commands per task, by command.

    .venv/bin/python bench/commands.py [N]   # default 20; e.g. KILN_* settings via Settings
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

import httpx
import redis.asyncio as redis_async

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import ROOT, live_service, sign_in  # noqa: E402


async def commandstats(url: str) -> Counter[str]:
    client = redis_async.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"])
                    for name, value in stats.items()})


async def measure(base: str, redis_url: str, n: int) -> tuple[Counter[str], Counter[str]]:
    mesh = (ROOT / "examples" / "cube.obj").read_bytes()
    events: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        headers = await sign_in(http)
        async with http.stream("GET", "/api/events", headers=headers) as stream:
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("event: snapshot"):
                    break
            before = await commandstats(redis_url)
            files = [("file", (f"cube{i}.obj", mesh)) for i in range(n)]
            response = await http.post("/api/uploads", headers=headers, files=files)
            wanted = {task["task_id"] for task in response.json()["tasks"]}
            done: set[str] = set()
            async for line in lines:
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event.get("task_id") in wanted:
                    events[event["state"]] += 1
                    if event["state"] in ("SUCCESS", "FAILURE", "REVOKED"):
                        done.add(event["task_id"])
                        if done == wanted:
                            break
            after = await commandstats(redis_url)
    used = after - before
    used["info"] -= 1  # the second INFO is this script's
    return events, +used


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with live_service(worker_concurrency=2) as live:
        events, commands = asyncio.run(measure(live.base_url, live.redis_url, n))
    print(f"{n} tasks, each a 12-face OBJ with the default pipeline")
    print(f"events per task: {sum(events.values()) / n:.2f}  "
          + "  ".join(f"{state} {count / n:.2f}" for state, count in sorted(events.items())))
    print(f"Redis commands per task: {sum(commands.values()) / n:.1f}")
    for name, count in commands.most_common():
        print(f"  {name:<24} {count / n:7.2f}")


if __name__ == "__main__":
    main()
