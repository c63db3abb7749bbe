"""The README is executable: its curl session runs verbatim, its tables match the code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import tomllib

from tests.conftest import ROOT
from tests.live import LiveServer
from tests.users import add_user

README = (ROOT / "README.md").read_text()


def _block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block after {heading!r}"
    return match.group(1)


async def test_the_curl_session_runs_verbatim(live_server: LiveServer, redis_url: str) -> None:
    await add_user(redis_url, "alice", "walkthrough password")
    env = {**os.environ, "KILN": live_server.url, "KILN_USER": "alice",
           "KILN_PASSWORD": "walkthrough password"}
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", _block_after("## A curl session"), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            upload = json.loads(await process.stdout.readline())
            assert {t["kind"] for t in upload["tasks"]} == {"mesh", "texture"}
            wanted = {t["task_id"] for t in upload["tasks"]}
            while wanted:
                line = (await process.stdout.readline()).decode()
                assert line, "curl ended: " + (await process.stderr.read()).decode()  # type: ignore[union-attr]
                lines.append(line)
                if line.startswith("data: ") and '"type":"task"' in line:
                    event = json.loads(line[6:])
                    if event["state"] == "SUCCESS":
                        wanted.discard(event["task_id"])
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await process.wait()
    states = [json.loads(line[6:])["state"] for line in lines
              if line.startswith("data: ") and '"type":"task"' in line]
    assert states[0] == "PENDING" and "STARTED" in states and "PROGRESS" in states
    assert any(line.startswith("id: ") for line in lines)


def test_every_setting_is_in_the_readme_table() -> None:
    source = (ROOT / "settings.py").read_text()
    used = set(re.findall(r'"((?:KILN|REDIS)_[A-Z_]+)"', source))
    table = set(re.findall(r"^\| `((?:KILN|REDIS)_[A-Z_]+)` \|", README, re.M))
    assert used == table


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test" in _block_after("## Two commands")
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_top_level_module_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert set(config["py-modules"]) == modules
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert set(config["packages"]) == packages
