"""The `kiln` command as a user runs it: serve with a private redis-server, add users."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

KILN = [sys.executable, "-m", "cli"]
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "REDIS_URL"))}
    return {**env, **extra}


def test_users_add_reads_the_password_from_stdin(redis_url: str, tmp_path: Path) -> None:
    env = _env(REDIS_URL=redis_url, KILN_DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([*KILN, "users", "add", "carol", "--admin"], input="a long password\n",
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "created an admin named carol" in done.stdout
    assert "a long password" not in done.stdout + done.stderr
    again = subprocess.run([*KILN, "users", "add", "carol"], input="another password\n",
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_users_weight_sets_a_users_share_of_the_slots(redis_url: str, tmp_path: Path) -> None:
    env = _env(REDIS_URL=redis_url, KILN_DATA_DIR=str(tmp_path / "data"))

    def kiln(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*KILN, "users", *args], input="a long password\n",
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

    assert kiln("add", "dora").returncode == 0
    done = kiln("weight", "dora", "2.5")
    assert done.returncode == 0 and "dora now weighs 2.5" in done.stdout, done.stderr
    assert kiln("weight", "nobody", "2").returncode == 1
    refused = kiln("weight", "dora", "0")
    assert refused.returncode == 1 and "above 0" in refused.stderr

    async def weight() -> bytes | None:
        from redis.asyncio import Redis

        from records import keys
        client = Redis.from_url(redis_url)
        try:
            uid = await client.hget(keys.USERNAMES, "dora")
            value: bytes | None = await client.hget(keys.user(uid.decode()), "weight")
            return value
        finally:
            await client.aclose()

    assert asyncio.run(weight()) == b"2.5"


def test_serve_runs_its_own_redis_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = _env(KILN_DATA_DIR=str(tmp_path / "data"), KILN_PORT=str(port), KILN_WORKERS="1")
    process = subprocess.Popen([*KILN, "serve"], env=env, cwd=ROOT, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    assert process.stderr is not None
    output: list[str] = []
    try:
        password = None
        deadline = time.monotonic() + 60
        while password is None or "Application startup complete" not in "".join(output):
            assert time.monotonic() < deadline and process.poll() is None, "".join(output)
            line = process.stderr.readline()
            output.append(line)
            if "created the user 'admin'" in line:
                password = process.stderr.readline().strip()
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", password)
        redis_pid = int((tmp_path / "data" / "redis" / "redis.pid").read_text())
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            assert http.get("/healthz").json()["redis"] == "ok"
            login = http.post("/api/auth/login", json={"username": "admin", "password": password})
            assert login.status_code == 200
        appendonly = tmp_path / "data" / "redis" / "appendonlydir"
        assert appendonly.is_dir()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)
        rest = process.stderr.read()
        process.stderr.close()
    assert process.returncode == 0, "".join(output) + rest
    assert not Path(f"/proc/{redis_pid}").exists(), "the private redis-server outlived kiln serve"
    assert password not in "".join(line for line in output if "password" not in line)


async def _queued_task(redis_url: str, data_dir: Path) -> tuple[str, object]:
    from records.queue import new_task_identity
    from services import open_services
    from settings import Settings

    settings = Settings(redis_url=redis_url, data_dir=data_dir)
    async with open_services(settings, redis_url) as services:
        who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh",
                                filename="cube.obj")
        source = data_dir / "upload.obj"
        source.write_bytes((ROOT / "examples" / "cube.obj").read_bytes())
        services.storage.adopt(who.task_id, [(source.name, source)])
        assert await services.queue.submit(who, format="obj", size=1, files=[source.name])
    return who.task_id, settings


async def _state(redis_url: str, task_id: str) -> dict[str, object]:
    from redis.asyncio import Redis

    from api.views import task_view
    from records.store import TaskStore

    client = Redis.from_url(redis_url)
    record = await TaskStore(client).get(task_id)
    await client.aclose()
    assert record is not None
    return task_view(record)


async def test_standalone_workers_run_queued_tasks(redis_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = _env(REDIS_URL=redis_url, KILN_DATA_DIR=str(data_dir), KILN_WORKERS="1")
    for command in ([*KILN, "worker", "--burst"],
                    [sys.executable, "-m", "arq", "worker_settings.WorkerSettings", "--burst"]):
        task_id, _ = await _queued_task(redis_url, data_dir)
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                       env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        view = await _state(redis_url, task_id)
        assert view["state"] == "SUCCESS", (command, view, done.stderr[-2000:])
        assert view["result"]["faces"] == 12  # type: ignore[index]


def test_the_web_process_never_imports_a_parser() -> None:
    """Parsers run in child processes only: importing the app must not load any of them."""
    heavy = ("trimesh", "PIL", "numpy", "assimp_py", "py7zr", "lxml", "collada", "DracoPy")
    probe = ("import sys, server; "
             f"print([m for m in {heavy!r} if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert output.strip() == "[]"


def test_serve_tunes_the_garbage_collector_for_many_streams() -> None:
    """`kiln serve` freezes what it made while starting and collects young objects less often
    (cli.tune_collector; bench/streams.py measures the gain)."""
    probe = ("import gc, cli; before = gc.get_threshold()[0]; cli.tune_collector(); "
             "print(before, gc.get_threshold()[0], gc.get_freeze_count() > 10_000)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after, frozen = done.stdout.split()
    assert int(before) < int(after) == 10_000 and frozen == "True", done.stdout
    source = (ROOT / "cli.py").read_text()
    serve = source[source.index("def cmd_serve"):source.index("def cmd_worker")]
    assert serve.index("tune_collector()") < serve.index("uvicorn.run("), \
        "cmd_serve must tune the collector before it starts serving"
