"""Upload → the thumbnail on the client's SSE stream, next to upload → the whole result.

For the 1M-face textured torus of bench/mesh_pipeline.py (GLB, and OBJ with its MTL and
texture), through a real service (a private redis-server, uvicorn, the embedded worker with its
child pool) on 127.0.0.1. Each run times, from the moment the upload request is sent:
  - upload answered:  the 202 (the files written and the task queued)
  - thumbnail seen:   the first event on the stream carrying thumbnail.png (a PROGRESS with the
                      stats and thumbnail so far, `tasks.progress.share`)
  - result:           the SUCCESS event (LODs, turntable and all)

    .venv/bin/python bench/first_result.py [--faces 1000000] [--repeat 3] [--formats glb,obj]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live import live_service, sign_in  # noqa: E402
from mesh_pipeline import write_glb, write_obj  # noqa: E402

TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


async def one_run(base: str, files: list[Path]) -> dict[str, float]:
    """Upload the files as one model; seconds from sending to each milestone."""
    async with httpx.AsyncClient(base_url=base, timeout=600) as http:
        headers = await sign_in(http)
        async with http.stream("GET", "/api/events", headers=headers) as events:
            lines = events.aiter_lines()
            parts = [("file", (path.name, path.read_bytes())) for path in files]
            sent = time.perf_counter()
            response = await http.post("/api/uploads", headers=headers, files=parts)
            answered = time.perf_counter() - sent
            response.raise_for_status()
            (task,) = response.json()["tasks"]
            seen: dict[str, float] = {"upload answered": answered}
            async for line in lines:
                if not line.startswith("data: ") or task["task_id"] not in line:
                    continue
                event = json.loads(line[6:])
                names = {artifact["name"] for artifact in event.get("artifacts") or []}
                if "thumbnail.png" in names and "thumbnail seen" not in seen:
                    seen["thumbnail seen"] = time.perf_counter() - sent
                if event["state"] in TERMINAL:
                    if event["state"] != "SUCCESS":
                        raise SystemExit(f"the task ended {event['state']}: {event.get('error')}")
                    seen["result"] = time.perf_counter() - sent
                    return seen
    raise SystemExit("the stream ended before the task did")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="glb,obj")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-first-result-") as tmp, live_service() as live:
        for fmt in [f for f in args.formats.split(",") if f]:
            directory = Path(tmp) / fmt
            directory.mkdir()
            print(f"generating {fmt.upper()} ({args.faces:,} faces)...", file=sys.stderr,
                  flush=True)
            main_file = (write_glb if fmt == "glb" else write_obj)(directory, args.faces)
            files = [main_file, *(p for p in sorted(directory.iterdir()) if p != main_file)]
            size = sum(p.stat().st_size for p in files)
            for run in range(1, args.repeat + 1):
                print(f"  [{fmt} {run}/{args.repeat}] uploading {size / 2**20:.1f} MB ...",
                      file=sys.stderr, flush=True)
                seen = asyncio.run(one_run(live.base_url, files))
                rows.append({"format": fmt, "run": run, **seen})
                print("    " + ", ".join(f"{k} {v:.2f} s" for k, v in seen.items()),
                      file=sys.stderr, flush=True)
    print("\n| format | run | upload answered s | thumbnail seen s | result s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['format']} | {row['run']} | {row['upload answered']:.2f} | "
              f"{row['thumbnail seen']:.2f} | {row['result']:.2f} |")
    for fmt in sorted({row["format"] for row in rows}):
        mine = [row for row in rows if row["format"] == fmt]
        thumb = statistics.median(row["thumbnail seen"] for row in mine)
        whole = statistics.median(row["result"] for row in mine)
        print(f"\n{fmt.upper()}: the thumbnail on the stream after {thumb:.2f} s (median), the "
              f"whole result after {whole:.2f} s: {whole - thumb:.2f} s earlier")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
