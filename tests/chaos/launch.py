"""`python -m tests.chaos.launch serve|worker ...`: the real `kiln` CLI, with test pipelines.

When `KILN_TEST_PIPELINES` holds a JSON object (task kind -> "module:function"), it replaces
`worker.jobs.PIPELINES`, the mapping `build_worker` starts from, before `cli.main` runs, so a real
`kiln serve` or `kiln worker` runs the stand-ins of `tests/helpers/pipelines.py`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

PIPELINES_ENV = "KILN_TEST_PIPELINES"


def install_pipelines(raw: str) -> None:
    """Make `raw` (JSON kind -> function) the default pipelines of every worker built here."""
    from worker import jobs

    mapping = json.loads(raw)
    if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise SystemExit(f"{PIPELINES_ENV} must be a JSON object of strings, got {raw!r}")
    setattr(jobs, "PIPELINES", mapping)  # noqa: B010 -- pipelines_for reads it at each call


def main(argv: Sequence[str] | None = None) -> int:
    raw = os.environ.get(PIPELINES_ENV, "").strip()
    if raw:
        install_pipelines(raw)
    import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
