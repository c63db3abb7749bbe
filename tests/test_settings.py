"""Settings from the environment: the new knobs parse, refuse bad values and reach their user."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import Settings, SettingsError
from worker.jobs import MESH_STATS_ONLY, PIPELINES, pipelines_for
from worker.runner import child_pool


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"KILN_DATA_DIR": str(tmp_path), "KILN_JWT_SECRET": "s" * 48, **values}


def test_the_mesh_pipeline_is_full_unless_stats_is_asked_for(tmp_path: Path) -> None:
    full = Settings.from_env(_env(tmp_path))
    assert full.mesh_pipeline == "full" and pipelines_for(full) == dict(PIPELINES)
    stats = Settings.from_env(_env(tmp_path, KILN_MESH_PIPELINE="Stats"))
    assert pipelines_for(stats) == {**PIPELINES, "mesh": MESH_STATS_ONLY}
    with pytest.raises(SettingsError, match="KILN_MESH_PIPELINE"):
        Settings.from_env(_env(tmp_path, KILN_MESH_PIPELINE="render"))


def test_child_retirement_limits_reach_the_pool(tmp_path: Path) -> None:
    default = child_pool(Settings.from_env(_env(tmp_path)))
    assert (default._max_tasks, default._max_resident) == (1000, 1024**3)
    chosen = Settings.from_env(_env(tmp_path, KILN_CHILD_MAX_TASKS="7",
                                    KILN_CHILD_MAX_RESIDENT=str(300 * 1024**2)))
    pool = child_pool(chosen)
    assert (pool._max_tasks, pool._max_resident) == (7, 300 * 1024**2)
    with pytest.raises(SettingsError, match="KILN_CHILD_MAX_TASKS"):
        Settings.from_env(_env(tmp_path, KILN_CHILD_MAX_TASKS="0"))
