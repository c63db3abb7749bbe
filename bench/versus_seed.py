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
        [--profile FILE]            # py-spy's collapsed stacks of Kiln's processes, last run

`--profile` needs py-spy (`.venv/bin/python -m pip install py-spy`); count where the CPU went with
`bench/stacks.py FILE`.
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
OBSERVER = ROOT / "bench" / "observer.py"
ATTEMPTS = 3
"""A driver that fails (the seed stack's driver sometimes hangs in its own shutdown and its
watchdog exits 3) is run again, up to this many times."""
DRIVER_TIMEOUT = 240
"""The drivers' --timeout (their watchdog fires 60 s later), setup included: creating 200 Kiln
users (a `kiln users add` process each) and signing them in takes 60-75 s, then Kiln's defaults
need about 20 s for 400 tasks. At 90 s, runs ended with tasks still going ("incomplete")."""
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
    import asyncio
    async def _sample_until_cancelled(self):
        while not asyncio.current_task().cancelling():
            self.samples.append(await self.sample())
            await asyncio.sleep(self.interval_s)
    drive_common.RedisClientsSampler.run = _sample_until_cancelled
'''
"""Put on the drivers' PYTHONPATH: prints the wall time of the first upload, and stops the
drivers' Redis sampler once it is cancelled (redis-py can swallow a cancel that lands inside a
command; the loop then never ended and the driver hung at exit). Nothing else changes."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process and of its reaped children, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return sum(int(value) for value in fields[11:15]) / TICKS


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def processes(match: Callable[[int, str], str | None]) -> dict[int, str]:
    """Every process `match` names: pid -> its name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            name = match(int(entry.name), cmdline)
            if name:
                found[int(entry.name)] = name
    return found


class CpuSampler(threading.Thread):
    """(wall time, CPU seconds by process name) every 20 ms; the set of processes every 0.5 s.

    A process's figure includes the children it reaped (cutime), except those counted here on
    their own: a Kiln child retired and reaped by `kiln serve` stays under its own name and is not
    counted a second time in its parent's."""

    def __init__(self, match: Callable[[int, str], str | None]) -> None:
        super().__init__(daemon=True)
        self.match = match
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        names: dict[int, str] = {}
        parents: dict[int, int] = {}
        raw: dict[int, float] = {}
        reaped: dict[int, float] = {}  # what a process's cutime holds of processes counted here
        found_at = 0.0
        while not self.stop.is_set():
            now = time.time()
            if now - found_at > 0.5:
                for pid, name in processes(self.match).items():
                    if pid not in names:
                        names[pid], parents[pid] = name, parent(pid)
                found_at = now
            for pid in list(parents):
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    raw[pid] = cpu
                    continue
                reaper = parents.pop(pid)  # gone: its parent reaped it
                if reaper in names:  # counted here, and its cutime now holds this one's figure
                    reaped[reaper] = reaped.get(reaper, 0.0) + raw.get(pid, 0.0)
            totals: dict[str, float] = {}
            for pid, name in names.items():
                totals[name] = totals.get(name, 0.0) + raw.get(pid, 0.0) - reaped.get(pid, 0.0)
            self.samples.append((now, totals))
            self.stop.wait(0.02)

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by process name from `start` to `end`."""
        def at(moment: float) -> dict[str, float]:
            before = [cpu for when, cpu in self.samples if when <= moment]
            return before[-1] if before else self.samples[0][1]
        first, last = at(start), at(end)
        return {name: last[name] - first.get(name, 0.0) for name in last}


def run_driver(argv: list[str], cwd: Path, env: dict[str, str], sampler: CpuSampler,
               out: Path, observer: list[str]) -> dict[str, Any]:
    """Run a driver beside the CPU sampler and the observer; its summary, with theirs added.
    The observer starts uploading when the driver's first upload is sent (SIGUSR1)."""
    watched = out.with_name(out.stem + "-observer.json")
    watched.unlink(missing_ok=True)
    watching = subprocess.Popen([str(cwd / ".venv" / "bin" / "python"), str(OBSERVER),
                                 *observer, "--file", str(BOX), "--out", str(watched)],
                                cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    lines: list[str] = []

    def relay(stream: Any) -> None:
        for line in stream:
            lines.append(line)
            if line.startswith("KILN_BENCH_T0 ") and watching.poll() is None:
                watching.send_signal(signal.SIGUSR1)

    sampler.start()
    driver = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=relay, args=(driver.stderr,), daemon=True)
    reader.start()
    try:
        driver.wait(900)
        reader.join(30)
    finally:
        if driver.poll() is None:
            driver.kill()
        sampler.stop.set()
        sampler.join()
        watching.terminate()
        watching.wait(60)
    stderr = "".join(lines)
    marks = [float(line.split()[1]) for line in lines if line.startswith("KILN_BENCH_T0 ")]
    if driver.returncode != 0 or not out.exists() or not marks:
        raise SystemExit(f"{argv[0]} failed (exit {driver.returncode}, summary "
                         f"{'written' if out.exists() else 'missing'}, {len(marks)} start "
                         f"marks):\n{stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(out.read_text())
    t0, span = marks[0], summary["first_upload_to_last_success_s"]
    tasks = max(1, summary["tasks"]["succeeded"])
    by_process = sampler.between(t0, t0 + span)
    summary["service_cpu_ms_per_task"] = round(1000 * sum(by_process.values()) / tasks, 2)
    summary["service_cpu_ms_per_task_by_process"] = {
        name: round(1000 * cpu / tasks, 2) for name, cpu in sorted(by_process.items())}
    summary["observer"] = observed(watched, t0, t0 + span)
    return summary


def observed(path: Path, start: float, end: float) -> dict[str, Any]:
    """The observer's figures for its uploads sent from `start` to `end`: the latency of each of
    their events (received - published), and upload sent -> STARTED / SUCCESS received."""
    if not path.exists():
        raise SystemExit("the observer wrote nothing: see its stderr above")
    data = json.loads(path.read_text())
    sent = {u["task_id"]: u["sent"] for u in data["uploads"] if start <= u["sent"] <= end}
    events = [e for e in data["events"] if e["task_id"] in sent]
    latency = sorted(1000 * (e["received"] - e["ts"]) for e in events if e["ts"] is not None)

    def after_upload(state: str) -> list[float]:
        return sorted(1000 * (e["received"] - sent[e["task_id"]]) for e in events
                      if e["state"] == state)

    def pct(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q / 100 * len(values)))], 1) if values else 0

    started, succeeded = after_upload("STARTED"), after_upload("SUCCESS")
    return {"tasks": len(sent), "upload_errors": data["upload_errors"],
            "event_latency_ms": {"p50": pct(latency, 50), "p99": pct(latency, 99)},
            "upload_to_started_ms": {"p50": pct(started, 50), "p99": pct(started, 99)},
            "upload_to_success_ms": {"p50": pct(succeeded, 50), "p99": pct(succeeded, 99)},
            "unfinished": len(sent) - len(succeeded)}


def driver_env(seed_dir: Path, hook: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, "PYTHONPATH": str(hook)}
    env["PATH"] = f"{seed_dir / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_seed(seed_dir: Path, hook: Path, users: int, files: int, tmp: Path) -> dict[str, Any]:
    out = tmp / "seed.json"
    out.unlink(missing_ok=True)

    def match(pid: int, cmd: str) -> str | None:
        for part, name in (("seed_tasks", "celery"), ("seed_app", "web"),
                           ("beam.smp", "rabbitmq")):
            if part in cmd:
                return name
        return "redis" if "redis-server" in cmd and ":6397" in cmd else None

    return run_driver(["./run_seed.sh", str(users), str(files), "--file", str(BOX), "--out",
                       str(out), "--concurrency", str(SETUP_CONCURRENCY), "--timeout",
                       str(DRIVER_TIMEOUT)], seed_dir,
                      driver_env(seed_dir, hook, {}), CpuSampler(match), out,
                      ["--target", "seed", "--base-url", "http://127.0.0.1:8791"])


def run_kiln(seed_dir: Path, hook: Path, users: int, files: int, tmp: Path,
             kiln_env: dict[str, str], profile: Path | None = None,
             log: Path | None = None) -> dict[str, Any]:
    out = tmp / "kiln.json"
    out.unlink(missing_ok=True)
    data = Path(tempfile.mkdtemp(prefix="kiln-data-", dir=tmp))
    redis_port, web_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                              str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(data)],
                             stdout=subprocess.DEVNULL)
    # the seed stack limits no one's uploads: nor does Kiln here (the observer sends 4 a second)
    env = {**os.environ, "REDIS_URL": redis_url, "KILN_DATA_DIR": str(data),
           "KILN_UPLOAD_REQUESTS_PER_MINUTE": "0", **kiln_env}
    kiln_bin = ROOT / ".venv" / "bin" / "kiln"
    log_file = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115  # closed below
    web = subprocess.Popen([str(kiln_bin), "serve", "--host", "127.0.0.1", "--port",
                            str(web_port)], env=env, stdout=log_file,
                           stderr=log_file, start_new_session=True)
    if not isinstance(log_file, int):
        log_file.close()  # the child has its own copy
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

        def match(pid: int, cmd: str) -> str | None:
            if pid in tree:
                return "web" if pid == web.pid else "redis"
            return "children" if parent(pid) == web.pid else None  # in their own sessions

        argv = [str(seed_dir / ".venv" / "bin" / "python"), "drive_kiln.py", "--base-url", base,
                "--user-cmd", f"{kiln_bin} users add", "--users", str(users), "--files",
                str(files), "--file", str(BOX), "--redis-url", redis_url, "--out", str(out),
                "--concurrency", str(SETUP_CONCURRENCY), "--timeout", str(DRIVER_TIMEOUT)]
        spy = None if profile is None else subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(web.pid),
             "--subprocesses", "--rate", "250", "--format", "raw", "--output",
             str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return run_driver(argv, seed_dir, driver_env(seed_dir, hook, env), CpuSampler(match),
                              out, ["--target", "kiln", "--base-url", base, "--user-cmd",
                                    f"{kiln_bin} users add"])
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                spy.wait(60)
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
    ("event latency p50 ms (observer)", lambda s: s["observer"]["event_latency_ms"]["p50"], False),
    ("event latency p99 ms (observer)", lambda s: s["observer"]["event_latency_ms"]["p99"], False),
    ("upload to SUCCESS p50 ms (observer)",
     lambda s: s["observer"]["upload_to_success_ms"]["p50"], False),
    ("observer tasks in the window", lambda s: s["observer"]["tasks"], True),
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
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of Kiln's last run")
    parser.add_argument("--kiln-log", type=Path, help="append `kiln serve`'s output to this file")
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
                                               kiln_env, args.profile, args.kiln_log)
                        break
                    except SystemExit as failed:
                        if attempt == ATTEMPTS:
                            raise
                        print(f"  {str(failed)[:300]}\n  run again", file=sys.stderr, flush=True)
                results[side].append(summary)
                print(f"  {summary['tasks_per_s']} tasks/s, "
                      f"{summary['service_cpu_ms_per_task']} ms CPU/task "
                      f"{summary['service_cpu_ms_per_task_by_process']}, "
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
    for side, runs in results.items():
        splits = [run["service_cpu_ms_per_task_by_process"] for run in runs]
        names = sorted({name for split in splits for name in split})
        medians = ", ".join(f"{name} {statistics.median(split.get(name, 0) for split in splits):g}"
                            for name in names)
        print(f"\n{side}: service CPU ms per task by process (medians): {medians}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
