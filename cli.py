"""The `kiln` command: serve, run a standalone worker, manage users."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from auth.accounts import AccountError
from redis_server import redis_for
from services import Services, open_services
from settings import Settings, SettingsError

log = logging.getLogger("kiln")


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@contextlib.asynccontextmanager
async def _services(settings: Settings) -> AsyncIterator[Services]:
    """Services on REDIS_URL, or on the data directory's private redis (started if not running)."""
    async with redis_for(settings) as url, open_services(settings, url) as services:
        yield services


GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def tune_collector() -> None:
    """Make the cyclic garbage collector cheap for a server that holds thousands of streams
    (`kiln serve` calls it before uvicorn imports the app, so what is frozen is mostly the
    libraries; tests, which build many apps in one process, do not call it).

    What is made while starting lives as long as the process: frozen, no collection walks it
    again. Every request allocates a few hundred short-lived objects, so at Python's default
    threshold the youngest generation was collected every few requests, and each full
    collection walked every object of every open stream. Measured with bench/streams.py at
    3,000 streams: the collector took a fifth of the CPU of opening a stream.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.http_limits import protocol_class

    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    print(f"Kiln on http://{host}:{port}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    tune_collector()
    uvicorn.run("server:app", host=host, port=port, loop="uvloop",
                http=protocol_class(settings),
                timeout_graceful_shutdown=5, log_level="info", proxy_headers=False)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.runner import running_worker

    async def run() -> None:
        async with _services(settings) as services, \
                running_worker(services, burst=args.burst) as running:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            waiter: asyncio.Task[object] = asyncio.create_task(stop.wait())
            done_when: list[asyncio.Task[object]] = [waiter]
            if args.burst:
                done_when.append(running.supervisor)
            await asyncio.wait(done_when, return_when=asyncio.FIRST_COMPLETED)
            log.info("worker stopping")

    asyncio.run(run())
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise AccountError("the two passwords differ")
    return first


def _account_command(run: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run a users command: 0, or 1 with the account error's words."""
    try:
        asyncio.run(run())
    except AccountError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_users_add(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> None:
        password = _read_password(args)
        async with _services(settings) as services:
            user = await services.accounts.create(args.name, password, admin=args.admin)
        role = "an admin" if user.is_admin else "a user"
        print(f"created {role} named {user.name}")

    return _account_command(run)


def cmd_users_weight(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> None:
        async with _services(settings) as services:
            await services.accounts.set_weight(args.name, args.weight)
        print(f"{args.name} now weighs {args.weight:g} in the fair share")

    return _account_command(run)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="kiln", description="Process 3D and 2D assets in the background; watch them live.")
    root.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the web app with its embedded worker")
    serve.add_argument("--host", help="address to bind (default KILN_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default KILN_PORT or 8000)")
    serve.set_defaults(run=cmd_serve)

    worker = sub.add_parser("worker", help="run a standalone worker (no web app)")
    worker.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    worker.set_defaults(run=cmd_worker)

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True, metavar="ACTION")
    add = users.add_parser("add", help="create a user; the password is read from stdin "
                                       "when it is not a terminal")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="give the user the admin role")
    add.set_defaults(run=cmd_users_add)
    weight = users.add_parser("weight", help="a user's share of the worker slots (default 1)")
    weight.add_argument("name")
    weight.add_argument("weight", type=float)
    weight.set_defaults(run=cmd_users_weight)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 2
    return int(args.run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
