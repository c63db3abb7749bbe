"""Kiln against the Celery + RabbitMQ + Redis PSUBSCRIBE + WebSocket stack, on the same workload.

The comparator and both load drivers are ../shared/bench/seed_stack (set it up once as its README
says, in a writable copy, and pass that copy as --seed-dir). Each pair runs the seed stack
(`run_seed.sh USERS FILES`) and Kiln (`kiln serve` over its own redis-server, driven by the seed
stack's `drive_kiln.py`) one after the other, alternating which goes first, and prints both
drivers' summaries side by side and the ratios of the medians.

Service CPU is read from /proc every 20 ms for every process of the service (Kiln: `kiln serve`,
its children and its redis-server; the seed stack: uvicorn, the Celery worker, its redis-server
and RabbitMQ), from the first upload (the driver prints that moment: see SITECUSTOMIZE) to the
last SUCCESS, so sign-ins are reported apart (`setup_s.login`).

    .venv/bin/python bench/versus_seed.py --seed-dir DIR [--pairs 3] [--users 200] [--files 2]
        [--kiln KEY=VALUE ...]      # e.g. --kiln KILN_TURNTABLE_FRAMES=0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
BOX = ROOT / "tests" / "corpus" / "OBJ" / "box.obj"
"""The workload's file (410 bytes, 12 faces), as in the seed stack's recorded runs."""
ATTEMPTS = 3
"""A driver that fails (the seed stack's driver sometimes hangs in its own shutdown and its
watchdog exits 3) is run again, up to this many times."""
DRIVER_TIMEOUT = 90
"""The drivers' --timeout (their watchdog fires 60 s later): a run here takes under 30 s."""
SETUP_CONCURRENCY = 8
"""Sign-ins and stream opens at a time, before the timed run (uploads are all at once): Kiln
hashes passwords on a small pool and answers 503 `busy` past its waiting room (8 by default)
rather than queue sign-ins ahead of signed-in work, so a driver signing 50 in at once would lose
users; both drivers get the same setting."""
SITECUSTOMIZE = '''
import sys, time
if sys.argv and sys.argv[0].endswith(("drive_kiln.py", "drive_seed.py")):
    sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(sys.argv[0])))
    import drive_common
    _bounded = drive_common._bounded
    async def _marked(users, n, fn, errors, kind, *args, **kwargs):
        if kind == "upload":
            print(f"KILN_BENCH_T0 {time.time():.6f}", file=sys.stderr, flush=True)
        return await _bounded(users, n, fn, errors, kind, *args, **kwargs)
    drive_common._bounded = _marked
'''
"""Put on the drivers' PYTHONPATH: prints the wall time of the first upload, nothing else."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, or 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def processes(match: Callable[[int, str], bool]) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if match(int(entry.name), cmdline):
                found.add(int(entry.name))
    return found


class CpuSampler(threading.Thread):
    """(wall time, CPU seconds of the service) every 20 ms; the set of processes every 0.5 s."""

    def __init__(self, match: Callable[[int, str], bool]) -> None:
        super().__init__(daemon=True)
        self.match = match
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        pids: set[int] = set()
        last: dict[int, float] = {}
        found_at = 0.0
        while not self.stop.is_set():
            now = time.time()
            if now - found_at > 0.5:
                pids |= processes(self.match)
                found_at = now
            for pid in pids:
                last[pid] = max(last.get(pid, 0.0), cpu_seconds(pid))  # a dead one keeps its last
            self.samples.append((now, sum(last.values())))
            self.stop.wait(0.02)

    def between(self, start: float, end: float) -> float:
        def at(moment: float) -> float:
            before = [cpu for when, cpu in self.samples if when <= moment]
            return before[-1] if before else self.samples[0][1]
        return at(end) - at(start)


def run_driver(argv: list[str], cwd: Path, env: dict[str, str], sampler: CpuSampler,
               out: Path) -> dict[str, Any]:
    sampler.start()
    try:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=900, check=False)
    finally:
        sampler.stop.set()
        sampler.join()
    marks = [float(line.split()[1]) for line in done.stderr.splitlines()
             if line.startswith("KILN_BENCH_T0 ")]
    if done.returncode != 0 or not out.exists() or not marks:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    t0, span = marks[0], summary["first_upload_to_last_success_s"]
    cpu = sampler.between(t0, t0 + span)
    summary["service_cpu_ms_per_task"] = round(1000 * cpu / max(1, summary["tasks"]["succeeded"]),
                                               2)
    return summary


def driver_env(seed_dir: Path, hook: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, "PYTHONPATH": str(hook)}
    env["PATH"] = f"{seed_dir / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_seed(seed_dir: Path, hook: Path, users: int, files: int, tmp: Path) -> dict[str, Any]:
    out = tmp / "seed.json"
    out.unlink(missing_ok=True)

    def match(pid: int, cmd: str) -> bool:
        return ("seed_tasks" in cmd or "seed_app" in cmd or "beam.smp" in cmd
                or ("redis-server" in cmd and ":6397" in cmd))

    return run_driver(["./run_seed.sh", str(users), str(files), "--file", str(BOX), "--out",
                       str(out), "--concurrency", str(SETUP_CONCURRENCY), "--timeout",
                       str(DRIVER_TIMEOUT)], seed_dir,
                      driver_env(seed_dir, hook, {}), CpuSampler(match), out)


def run_kiln(seed_dir: Path, hook: Path, users: int, files: int, tmp: Path,
             kiln_env: dict[str, str]) -> dict[str, Any]:
    out = tmp / "kiln.json"
    out.unlink(missing_ok=True)
    data = Path(tempfile.mkdtemp(prefix="kiln-data-", dir=tmp))
    redis_port, web_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                              str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(data)],
                             stdout=subprocess.DEVNULL)
    env = {**os.environ, "REDIS_URL": redis_url, "KILN_DATA_DIR": str(data), **kiln_env}
    kiln_bin = ROOT / ".venv" / "bin" / "kiln"
    web = subprocess.Popen([str(kiln_bin), "serve", "--host", "127.0.0.1", "--port",
                            str(web_port)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("kiln serve did not become healthy in 60 s")
            time.sleep(0.1)
        tree = {web.pid, redis.pid}

        def match(pid: int, cmd: str) -> bool:
            return pid in tree or parent(pid) == web.pid  # the children: their own sessions

        argv = [str(seed_dir / ".venv" / "bin" / "python"), "drive_kiln.py", "--base-url", base,
                "--user-cmd", f"{kiln_bin} users add", "--users", str(users), "--files",
                str(files), "--file", str(BOX), "--redis-url", redis_url, "--out", str(out),
                "--concurrency", str(SETUP_CONCURRENCY), "--timeout", str(DRIVER_TIMEOUT)]
        return run_driver(argv, seed_dir, driver_env(seed_dir, hook, env), CpuSampler(match), out)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(30)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(data, ignore_errors=True)


ROWS: list[tuple[str, Callable[[dict[str, Any]], float], bool]] = [
    ("tasks/s", lambda s: s["tasks_per_s"], True),
    ("service CPU ms per task (first upload to last SUCCESS)",
     lambda s: s["service_cpu_ms_per_task"], False),
    ("upload request p50 ms", lambda s: s["upload_request_ms"]["p50"], False),
    ("event latency p99 ms (in the driver)", lambda s: s["event_latency_ms"]["p99"], False),
    ("events per task", lambda s: s["events"]["received"] / max(1, s["tasks"]["succeeded"]),
     False),
    ("Redis connections, peak", lambda s: s["redis_connected_clients"]["peak"], False),
    ("sign-ins of all users, s", lambda s: s["setup_s"]["login"], False),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed-dir", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--kiln", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", choices=("seed", "kiln"), help="run one side (to try settings)")
    args = parser.parse_args()
    kiln_env = dict(item.split("=", 1) for item in args.kiln)
    results: dict[str, list[dict[str, Any]]] = {"seed": [], "kiln": []}
    with tempfile.TemporaryDirectory(prefix="kiln-versus-") as tmp_name:
        tmp = Path(tmp_name)
        hook = tmp / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        for pair in range(args.pairs):
            order = ["seed", "kiln"] if pair % 2 == 0 else ["kiln", "seed"]
            order = [side for side in order if args.only in (None, side)]
            for side in order:
                print(f"pair {pair + 1}/{args.pairs}: {side} ({args.users} users x {args.files})"
                      f", load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        if side == "seed":
                            summary = run_seed(args.seed_dir, hook, args.users, args.files, tmp)
                        else:
                            summary = run_kiln(args.seed_dir, hook, args.users, args.files, tmp,
                                               kiln_env)
                        break
                    except SystemExit as failed:
                        if attempt == ATTEMPTS:
                            raise
                        print(f"  {str(failed)[:300]}\n  run again", file=sys.stderr, flush=True)
                results[side].append(summary)
                print(f"  {summary['tasks_per_s']} tasks/s, "
                      f"{summary['service_cpu_ms_per_task']} ms CPU/task, "
                      f"errors {summary['errors']['total']}", file=sys.stderr, flush=True)
                if summary["errors"]["total"]:
                    print(f"  {summary['errors']}", file=sys.stderr, flush=True)
    print(f"\n{args.users} users x {args.files} files, {args.pairs} pairs; Kiln settings: "
          f"{kiln_env or 'defaults'}\n")
    print("| measure | seed stack (runs) | Kiln (runs) | Kiln / seed (medians) |")
    print("|---|---|---|---|")
    if args.only:
        return 0
    for name, value, higher_is_better in ROWS:
        seed = [value(s) for s in results["seed"]]
        kiln = [value(s) for s in results["kiln"]]
        ratio = statistics.median(kiln) / statistics.median(seed) if statistics.median(seed) else 0
        better = "better" if (ratio > 1) == higher_is_better and ratio != 1 else "worse"
        print(f"| {name} | {', '.join(f'{v:g}' for v in seed)} | "
              f"{', '.join(f'{v:g}' for v in kiln)} | {ratio:.2f} ({better}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
