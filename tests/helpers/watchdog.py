"""Before pytest-timeout stops a hung test, print where every asyncio task of its loop waits.

pytest-timeout's own dump shows threads only: an async test hangs with its main thread idle in
`select`, and the task that waits forever is invisible. This prints each task's stack to stderr
(shown under the failed test's "Captured stderr") a few seconds before the timeout fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Iterator

import pytest

MARGIN = 5.0  # seconds before the test's timeout


def _dump(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    print(f"\n--- {len(tasks)} asyncio tasks, {MARGIN:g} s before the test times out ---",
          file=sys.stderr)
    for task in tasks:
        print(f"{task!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)


@contextlib.contextmanager
def tasks_dumped_before_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Arm the dump for the test `request` runs (in its event loop); disarm it at the end."""
    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else \
        float(request.config.getini("timeout") or 0)
    if timeout <= MARGIN:
        yield
        return
    loop = asyncio.get_running_loop()
    timer = threading.Timer(timeout - MARGIN, loop.call_soon_threadsafe, (_dump, loop))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
