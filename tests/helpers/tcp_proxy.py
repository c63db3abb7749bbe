"""A loopback TCP proxy for fault tests: forward, stall open connections, refuse or cut them.

It runs its own event loop in a daemon thread, so it keeps working whatever the test's loop or a
live server's thread is doing. Every control method returns once the change is in effect.

    with TcpProxy("127.0.0.1", redis_port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.stall()      # existing and new connections stay open but nothing passes
        proxy.stall_existing()  # the open connections go silent; new ones flow (half-open links)
        proxy.forward()    # bytes flow again (what was sent while stalled is delivered now)
        proxy.refuse()     # new connections are refused (the listener is closed), old ones kept
        proxy.cut()        # every open connection is closed (the peers see EOF / reset)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Literal, TypeVar

Mode = Literal["forward", "stall", "refuse"]
T = TypeVar("T")

CHUNK = 65536


class TcpProxy:
    """Listens on 127.0.0.1 (a free port unless `port` is given) and relays to `target`."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: Mode = "forward"
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._links: dict[asyncio.Future[Any], asyncio.Event] = {}  # relay -> its gate
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def open_connections(self) -> int:
        """Client connections currently relayed (or held, while stalled)."""
        return len(self._links)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the proxy's thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def forward(self) -> None:
        """Relay bytes both ways; reopen the listener if it was refusing."""
        self._call(self._set_mode("forward"))

    def stall(self) -> None:
        """Stop relaying without closing anything: a half-open link seen from both ends. New
        connections are accepted and held the same way."""
        self._call(self._set_mode("stall"))

    def stall_existing(self) -> None:
        """Silence the connections open now, for good, without closing them; new connections
        are relayed as usual (a peer that vanished behind a NAT while the server lives)."""
        self._call(self._stall_existing())

    def refuse(self) -> None:
        """Close the listener so new connections are refused; open ones keep flowing."""
        self._call(self._set_mode("refuse"))

    def cut(self) -> None:
        """Close every open connection now (the listener stays as it is)."""
        self._call(self._cut())

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_mode(self, mode: Mode) -> None:
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "refuse" and self._server is None:
            await self._listen()
        for gate in self._links.values():
            if mode == "stall":
                gate.clear()
            else:
                gate.set()
        self.mode = mode

    async def _stall_existing(self) -> None:
        for gate in self._links.values():
            gate.clear()

    async def _cut(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # linger 0: the peer gets a reset, as from a crashed host
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._cut()

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        relay: asyncio.Future[Any] | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_w)
            gate = asyncio.Event()
            if self.mode != "stall":
                gate.set()
            relay = asyncio.ensure_future(
                asyncio.gather(self._pump(client_r, upstream_w, gate),
                               self._pump(upstream_r, client_w, gate)))
            self._links[relay] = gate
            with contextlib.suppress(asyncio.CancelledError):
                await relay  # cancelled by cut(): the link ends, the handler returns
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if relay is not None:
                self._links.pop(relay, None)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    gate: asyncio.Event) -> None:
        while True:
            await gate.wait()
            data = await source.read(CHUNK)
            if not data:
                break
            # the chunk read just before a stall is held too, not slipped through
            await gate.wait()
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
