"""An observer apart from the load driver: one user of its own, a steady trickle of uploads, and
the time each of its events takes to reach it, so event latency is not measured by a process that
starves itself.

Run by bench/versus_seed.py with the seed stack's Python, in its folder (it speaks to either
target through the drivers' own transports). It signs in, opens its stream, waits for SIGUSR1 (sent
when the driver's first upload goes out), then uploads one file every `--interval` seconds (never
more than `--in-flight` at once) until SIGTERM, and writes every
upload and event with its times as JSON to `--out`:

    python bench/observer.py --target kiln --base-url URL --user-cmd "kiln users add" \
        --file box.obj --out observer.json [--interval 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

EARLY: list[int] = []
"""SIGUSR1 received before the event loop took the signal over."""
SIGN_IN_WAIT = 120.0
"""Seconds the observer retries its sign-in: the seed stack's script starts its service itself."""


async def sign_in(transport: Any, user: Any) -> None:
    deadline = time.monotonic() + SIGN_IN_WAIT
    while True:
        try:
            user.token = await transport.login(user)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def observe(args: argparse.Namespace, payload: list[tuple[str, bytes]]) -> dict[str, Any]:
    from drive_common import User, event_time  # the seed stack's folder is on sys.path

    if args.target == "kiln":
        from drive_kiln import KilnTransport
        transport: Any = KilnTransport(args.base_url, shlex.split(args.user_cmd), 5.0)
        user = User(0, f"observer{secrets.token_hex(3)}", secrets.token_urlsafe(18))
        await transport.create_user(user)
    else:
        from drive_seed import SeedTransport
        transport = SeedTransport(args.base_url, args.password)
        user = User(0, f"observer{secrets.token_hex(3)}", args.password)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    if EARLY:  # the driver started before this process was listening
        go.set()
    await sign_in(transport, user)
    reader = await transport.open_stream(user)
    print("READY", flush=True)
    if not args.now:  # wait for the load driver's first upload
        waiters = [asyncio.create_task(go.wait()), asyncio.create_task(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    uploads: list[dict[str, Any]] = []
    errors = 0
    slots = asyncio.Semaphore(args.in_flight)

    async def upload_one() -> None:
        nonlocal errors
        async with slots:
            sent = time.time()
            try:
                task_ids = await transport.upload(user, payload)
            except Exception:
                errors += 1
                return
            uploads.extend({"task_id": task_id, "sent": sent, "answered": time.time()}
                           for task_id in task_ids)

    running: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        task = asyncio.create_task(upload_one())
        running.add(task)
        task.add_done_callback(running.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.interval)
    for task in running:
        task.cancel()
    reader.cancel()
    await asyncio.gather(reader, *running, return_exceptions=True)
    await transport.aclose()
    events = [{"task_id": event.get("task_id"), "state": event.get("state"),
               "ts": event_time(event), "received": received} for received, event in user.events]
    return {"uploads": uploads, "events": events, "upload_errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=("kiln", "seed"), required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--user-cmd", default="kiln users add")
    parser.add_argument("--password", default="secret", help="the seed stack's demo password")
    parser.add_argument("--file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--now", action="store_true",
                        help="upload from the start, not from the first SIGUSR1")
    parser.add_argument("--in-flight", type=int, default=20)
    signal.signal(signal.SIGUSR1, lambda signum, frame: EARLY.append(signum))
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    result = asyncio.run(observe(args, [(Path(args.file).name, Path(args.file).read_bytes())]))
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
