"""What a developer writes by hand: trimesh.load, the statistics, scene.save_image (the baseline).

    python bench/naive_mesh.py MODEL [OUTPUT.png]

Prints one JSON line: the statistics, `work_s` (seconds from just before loading to the end,
imports excluded), `render` ("ok", or why the OpenGL render failed) and the load/stats/render
split. `save_image` needs an OpenGL context: pyglet<2 and a display (e.g. Xvfb + Mesa).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trimesh


def main() -> int:
    path = Path(sys.argv[1])
    output = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    start = time.perf_counter()
    print(f"      naive {path.suffix[1:]}: load at 0.00 s", file=sys.stderr, flush=True)
    loaded = trimesh.load(path)
    if isinstance(loaded, trimesh.Scene):
        scene = loaded
        mesh = loaded.to_mesh()
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
        scene = loaded.scene()
    else:
        raise SystemExit(f"{path.name} holds no triangle mesh")
    loaded_at = time.perf_counter() - start
    print(f"      naive {path.suffix[1:]}: stats at {loaded_at:.2f} s", file=sys.stderr, flush=True)
    stats: dict[str, Any] = {
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "bounds": mesh.bounds.tolist(),
        "extents": mesh.extents.tolist(),
        "area": float(mesh.area),
        "watertight": bool(mesh.is_watertight),
    }
    stats["volume"] = float(mesh.volume) if stats["watertight"] else None
    stats["bodies"] = int(mesh.body_count)
    measured_at = time.perf_counter() - start
    print(f"      naive {path.suffix[1:]}: save_image at {measured_at:.2f} s", file=sys.stderr,
          flush=True)
    render = "ok"
    try:
        png = scene.save_image(resolution=(512, 512))
        if not png:
            render = "failed: save_image returned nothing"
        elif output is not None:
            output.write_bytes(png)
        else:
            with tempfile.NamedTemporaryFile(suffix=".png") as target:
                target.write(png)
    except Exception as error:  # the baseline reports its failure instead of crashing
        render = f"failed: {type(error).__name__}: {str(error)[:120]}"
    work = time.perf_counter() - start
    print(json.dumps({"work_s": work, "load_s": loaded_at, "stats_s": measured_at - loaded_at,
                      "render_s": work - measured_at, "render": render, "stats": stats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
