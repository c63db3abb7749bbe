"""A task queued as an upload would queue it, without the HTTP in front (worker tests)."""

from __future__ import annotations

from pathlib import Path

from records.queue import new_task_identity
from services import Services


async def submit_stub(services: Services, tmp_path: Path) -> str:
    """Queue a one-file mesh task (a one-vertex OBJ) for session s1 of user u1; its id."""
    who = new_task_identity(owner="u1", session="s1", batch="b1", kind="mesh", filename="a.obj")
    source = tmp_path / "a.obj"
    source.write_text("v 0 0 0\n")
    services.storage.adopt(who.task_id, [(source.name, source)])
    assert await services.queue.submit(who, format="obj", size=8, files=[source.name])
    return who.task_id
