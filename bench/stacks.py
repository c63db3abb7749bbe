"""Where the CPU went, from py-spy's raw (collapsed) stacks: `bench/versus_seed.py --profile FILE`.

Prints the share of samples per process kind (web, child), then the functions that hold the most
samples themselves (self) and, inclusively, the Kiln and library functions that most samples pass
through. Samples under `--skip` (default: password hashing, which the bench reports apart, and the
children's preload) are left out, and so are idle pool threads, which py-spy counts as busy.

    .venv/bin/python bench/stacks.py FILE [--top 25] [--skip scrypt --skip import_module]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

IDLE = "concurrent/futures/thread.py:81)"
"""A pool thread waiting for work: py-spy does not see it as idle."""
FRAME = re.compile(r"^(?P<name>.+?) \((?P<file>[^:]+):\d+\)$")


def kind(stack: str) -> str:
    return "child" if "worker/child.py" in stack or "tasks/child.py" in stack else "web"


def frames(stack: str) -> list[str]:
    named = []
    for frame in stack.split(";"):
        match = FRAME.match(frame)
        named.append(f"{match['name']} ({match['file']})" if match else frame)
    return named


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--skip", action="append", default=None,
                        help="leave out samples with a frame containing this text")
    args = parser.parse_args()
    skip = args.skip if args.skip is not None else [
        "passwords.py", "import_module", "warm (tasks"]
    by_kind: Counter[str] = Counter()
    own: Counter[str] = Counter()
    through: Counter[str] = Counter()
    total = 0
    for line in args.file.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or any(text in stack for text in skip) or stack.endswith(IDLE):
            continue
        count = int(count_text)
        parts = stack.split(";")
        named = frames(";".join(part for part in parts if not part.startswith("process ")))
        process_kind = kind(stack)
        total += count
        by_kind[process_kind] += count
        if named:
            own[f"{process_kind}: {named[-1]}"] += count
        for frame in set(named):
            through[f"{process_kind}: {frame}"] += count
    print(f"{total} samples (skipped: {', '.join(skip) or 'none'})")
    for name, count in by_kind.most_common():
        print(f"  {name}: {100 * count / total:.1f}%")
    for title, counter in (("self", own), ("inclusive", through)):
        print(f"\n{title}, top {args.top}:")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
