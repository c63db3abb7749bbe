"""A private, supervised redis-server kept in one directory, for when REDIS_URL is unset."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from settings import Settings

logger = logging.getLogger(__name__)

SUN_PATH_MAX = 107  # bytes of a unix socket path on Linux: sun_path[108] less its NUL
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
STABLE_RUN = 5.0  # a server that lived this long was healthy: the backoff starts over
STOP_GRACE = 10.0  # seconds SIGTERM gets (redis fsyncs its AOF) before SIGKILL
PROBE_TIMEOUT = 1.0


class RedisStartError(RuntimeError):
    """redis-server could not be started; the message says why and quotes the end of redis.log."""


class PrivateRedis:
    """One redis-server whose config, data (AOF), socket and log live in `directory`.

    It listens on a unix socket (mode 700) and no TCP port, unless that socket's path would not
    fit in sun_path; then on 127.0.0.1, a free port and a generated password. After start(), a
    task restarts the server (same url) whenever it exits unasked, until stop().
    """

    def __init__(
        self,
        directory: Path,
        *,
        executable: str = "redis-server",
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory.resolve()
        self.executable = executable
        self._log = log or logger.warning
        self._socket = self.directory / "redis.sock"
        self._tcp = len(os.fsencode(self._socket)) > SUN_PATH_MAX
        self._password = secrets.token_hex(24) if self._tcp else ""
        self._port = 0
        self._timeout = 10.0
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where clients connect; stays the same across supervised restarts."""
        if not self._tcp:
            return "unix://" + quote(os.fsencode(self._socket))
        return f"redis://:{self._password}@127.0.0.1:{self._tcp_port()}"

    def _tcp_port(self) -> int:
        """The TCP port, picked once so that restarts keep the same url."""
        if not self._port:
            self._port = _free_port()
        return self._port

    @property
    def pid(self) -> int | None:
        """The running redis-server's process id, or None."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- see below
        """Launch redis-server, return once it answers PING, then keep it running until stop().

        `timeout` bounds the wait for PING at this start and at every supervised restart, so
        it cannot be the caller's asyncio.timeout().
        """
        if self._process is not None:
            return
        if shutil.which(self.executable) is None:
            raise RedisStartError(
                f"{self.executable!r} was not found on PATH: install Redis "
                "(Debian: apt-get install redis-server) or set REDIS_URL"
            )
        if await self.find_running() is not None:
            raise RedisStartError(
                f"a redis-server already serves {self.directory}; use connect_or_start() "
                f"or stop it (its pid is in {self.directory / 'redis.pid'})"
            )
        self._timeout = timeout
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="private redis-server")

    async def stop(self) -> None:
        """Stop supervising, then SIGTERM the server and wait (SIGKILL after a grace period)."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                process.kill()
                await process.wait()
        (self.directory / "redis.url").unlink(missing_ok=True)

    async def find_running(self) -> str | None:
        """The url of a live redis-server that already serves this directory, or None."""
        try:
            url = (self.directory / "redis.url").read_text().strip()
        except OSError:
            return None
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
        try:
            served = await client.config_get("dir")
        except (RedisError, OSError):
            return None
        finally:
            await client.aclose()
        dirs = [os.fsdecode(value) for value in served.values()]
        return url if dirs == [str(self.directory)] else None

    async def _launch(self) -> None:
        """Start one redis-server process and wait for PING; raise RedisStartError if it fails."""
        try:
            log_fd = self._prepare_directory()
            try:
                process = await asyncio.create_subprocess_exec(
                    self.executable,
                    str(self.directory / "redis.conf"),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    start_new_session=True,  # Ctrl-C goes to the service, which calls stop()
                )
            finally:
                os.close(log_fd)
        except OSError as exc:
            raise RedisStartError(f"cannot run {self.executable!r}: {exc}") from exc
        self._process = process
        try:
            await self._wait_until_ready(process)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            self._process = None
            raise
        _write_private(self.directory / "redis.url", self.url + "\n")

    def _prepare_directory(self) -> int:
        """Create the directory (0700), write redis.conf (0600) and open redis.log for appending."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        _write_private(self.directory / "redis.conf", self._config())
        return os.open(self.directory / "redis.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _config(self) -> str:
        """redis.conf, rewritten at every launch; mode 0600 as it holds the password (TCP only)."""
        home = self.directory
        lines = [
            "# Written by Kiln at every start of its private redis-server; edits are lost.",
            f"dir {_quoted(str(home))}",
            f"pidfile {_quoted(str(home / 'redis.pid'))}",
            f"logfile {_quoted(str(home / 'redis.log'))}",
            "daemonize no",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
        ]
        if self._tcp:
            port = self._tcp_port()
            lines += ["bind 127.0.0.1", f"port {port}", f"requirepass {self._password}"]
        else:
            lines += ["port 0", f"unixsocket {_quoted(str(self._socket))}", "unixsocketperm 700"]
        return "\n".join(lines) + "\n"

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> None:
        """Poll PING until it answers; fail early if the process exits, late at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
        try:
            while True:
                if process.returncode is not None:
                    raise RedisStartError(
                        f"redis-server exited with code {process.returncode} while starting"
                        + self._log_tail()
                    )
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if loop.time() > deadline:
                    raise RedisStartError(
                        f"redis-server did not answer PING within {self._timeout:g} s"
                        + self._log_tail()
                    )
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def _supervise(self) -> None:
        """Restart the server whenever it exits; stop() cancels this task before it signals."""
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF
        while True:
            process = self._process
            assert process is not None
            launched = loop.time()
            code = await process.wait()
            if loop.time() - launched >= STABLE_RUN:
                backoff = FIRST_BACKOFF
            self._log(f"private redis-server (pid {process.pid}) exited with code {code}")
            while True:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                try:
                    await self._launch()
                except Exception as exc:  # keep supervising whatever went wrong
                    self._log(f"private redis-server did not restart ({exc}); trying again")
                else:
                    break
            self._log(f"private redis-server restarted (pid {self.pid})")

    def _log_tail(self, lines: int = 20) -> str:
        """The end of redis.log, to append to an error message."""
        path = self.directory / "redis.log"
        try:
            with path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
                tail = f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return f" (no {path})"
        return f"; last lines of {path}:\n" + "\n".join(tail) if tail else f" ({path} is empty)"


async def connect_or_start(
    directory: Path,
    *,
    executable: str = "redis-server",
    log: Callable[[str], None] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 -- handed to PrivateRedis.start
) -> tuple[str, PrivateRedis | None]:
    """The url of the private redis-server serving `directory`, starting one if none is live.

    Returns (url, None) when one already runs (its owner, say the service, keeps it), else
    (url, server) with a server this call started: the caller must `await server.stop()`.
    """
    server = PrivateRedis(directory, executable=executable, log=log)
    url = await server.find_running()
    if url is not None:
        return url, None
    await server.start(timeout)
    return server.url, server


@contextlib.asynccontextmanager
async def redis_for(settings: Settings, *, own: bool = False,
                    log: Callable[[str], None] | None = None) -> AsyncIterator[str]:
    """The Redis of every entry point: REDIS_URL, else the data directory's private redis-server.

    `own` (the service): start one here, supervised, and stop it on exit. Otherwise (the CLI's
    commands, a standalone worker) use the one running there, the service's, or start one for
    the while.
    """
    if settings.redis_url:
        yield settings.redis_url
        return
    private: PrivateRedis | None
    if own:
        private = PrivateRedis(settings.private_redis_dir, log=log)
        await private.start()
        url = private.url
    else:
        url, private = await connect_or_start(settings.private_redis_dir, log=log)
    try:
        yield url
    finally:
        if private is not None:
            await private.stop()


def redis_url_of(settings: Settings) -> str:
    """Where `redis_for` finds Redis, known without starting anything (arq's CLI connects before
    any startup hook runs): REDIS_URL, else the url the data directory's running private
    redis-server wrote (`redis.url`), else where one would listen."""
    if settings.redis_url:
        return settings.redis_url
    try:
        return (settings.private_redis_dir / "redis.url").read_text().strip()
    except OSError:
        return PrivateRedis(settings.private_redis_dir).url


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quoted(value: str) -> str:
    """`value` as a double-quoted redis.conf string, so paths may hold spaces and quotes."""
    out = ['"']
    for ch in value:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", errors="surrogateescape") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
