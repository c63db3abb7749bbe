"""A real uvicorn serving the real app on 127.0.0.1, in a thread, stopped when the test ends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import uvicorn

from api.http_limits import protocol_class
from server import build_app
from settings import Settings

ServerFactory = Callable[..., "LiveServer"]
"""The `live_server_factory` fixture: `factory(settings, pipelines=...) -> LiveServer`."""


@dataclass
class LiveServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.thread.is_alive():
            raise RuntimeError("the live server did not stop")


def start_live_server(settings: Settings, *, pipelines: Mapping[str, str] | None = None,
                      timeout: float = 60, port: int = 0,
                      graceful_shutdown: int = 2) -> LiveServer:
    """The app on 127.0.0.1, on `port` (0: a free one; a given one lets a test restart it)."""
    app = build_app(settings, pipelines=pipelines)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="asyncio", http=protocol_class(settings), lifespan="on",
                            log_level="warning",
                            timeout_graceful_shutdown=graceful_shutdown, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the live server did not start")
        time.sleep(0.01)  # waiting for uvicorn's startup in its thread
    return LiveServer(f"http://127.0.0.1:{port}", settings, server, thread)
