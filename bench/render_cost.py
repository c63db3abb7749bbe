"""Child CPU of the default mesh pipeline by model size, OpenGL against numpy, and their likeness.

For every model (the corpus's meshes, and generated textured tori of 1k, 10k and 100k faces written
as GLB), in one warm process per renderer, exactly as a pool child runs it:
  - cpu ms:  CPU seconds of `tasks.mesh.process` (stats, thumbnail, web model, LODs, turntable),
             every thread of the process plus the reaped LOD fork, median of `--repeat` runs
  - SSIM:    the OpenGL thumbnail and turntable against the numpy renderer's, which drew every
             thumbnail before OpenGL did (the comparator: today's images)

    .venv/bin/python bench/render_cost.py [--repeat N]

Targets (issue 10): at most 60 ms of child CPU under 1,000 faces, at most 1 s at 100k faces,
SSIM >= 0.97. The two renderers run interleaved, model by model, in two processes started once.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
CORPUS_MODELS = [
    ("OBJ/box.obj", "obj"), ("OBJ/cube_usemtl.obj", "obj"), ("PLY/cube.ply", "ply"),
    ("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "glb"), ("OBJ/spider.obj", "obj"),
    ("STL/sphereWithHole.stl", "stl"), ("Collada/duck.dae", "dae"), ("OBJ/WusonOBJ.obj", "obj"),
    ("glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb", "glb"),
]
GENERATED = (1_000, 10_000, 100_000)
SMALL_FACES, SMALL_MS = 1_000, 60.0
LARGE_FACES, LARGE_MS = 100_000, 1000.0
MIN_SSIM = 0.97


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    forks = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + forks.ru_utime + forks.ru_stime


def serve(renderer: str) -> None:
    """A warm worker: reads `{"dir","main","format","repeat","out"}` lines, answers JSON lines."""
    sys.path.insert(0, str(ROOT))
    from settings import Settings
    from tasks.mesh import process
    from tasks.progress import Payload
    from tasks.render import renderer as chosen
    from tasks.render import warm

    warm()
    assert chosen(renderer) == renderer, f"{renderer} cannot draw here"
    for line in sys.stdin:
        job = json.loads(line)
        files = Path(job["dir"])
        times, faces = [], 0
        for run in range(job["repeat"] + 1):  # the first run warms caches: not counted
            out = Path(job["out"]) / f"run{run}"
            payload: Payload = {
                "source": str(files / job["main"]), "files_dir": str(files), "main": job["main"],
                "format": job["format"],
                "files": sorted(p.name for p in files.iterdir() if p.is_file()),
                "artifacts_dir": str(out / "artifacts"), "work_dir": str(out / "work"),
                "max_pixels": 178_956_970,
                "limits": Settings(renderer=renderer).pipeline_limits(),
            }
            before = cpu_seconds()
            result = process(payload, lambda stage, fraction: None)
            if run:
                times.append(cpu_seconds() - before)
            faces = result["stats"]["faces"]
        print(json.dumps({"cpu_ms": statistics.median(times) * 1000, "faces": faces,
                          "artifacts": str(out / "artifacts")}), flush=True)


def generate(directory: Path, faces: int) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from mesh_pipeline import write_glb

    return write_glb(directory, faces).name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.helpers.images import ssim
    from worker.pool import child_environment

    python = sys.executable
    env = child_environment(None)  # one drawing thread, the steady heap: as a pool child runs
    workers = {name: subprocess.Popen([python, __file__, "--serve", name], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env)
               for name in ("gl", "numpy")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-render-cost-") as tmp:
        models: list[tuple[str, Path, str, str]] = []
        for relative, fmt in CORPUS_MODELS:
            path = CORPUS / relative
            models.append((relative, path.parent, path.name, fmt))
        for faces in GENERATED:
            directory = Path(tmp) / f"torus{faces}"
            directory.mkdir()
            models.append((f"torus, {faces:,} faces (GLB)", directory,
                           generate(directory, faces), "glb"))
        for label, directory, name, fmt in models:
            print(f"{label} ...", file=sys.stderr, flush=True)
            answers = {}
            for renderer, worker in workers.items():  # interleaved: model by model
                out = Path(tmp) / "out" / renderer / label.replace("/", "_").replace(" ", "")
                shutil.rmtree(out, ignore_errors=True)
                job = {"dir": str(directory), "main": name, "format": fmt, "out": str(out),
                       "repeat": args.repeat}
                assert worker.stdin is not None and worker.stdout is not None
                started = time.perf_counter()
                worker.stdin.write(json.dumps(job) + "\n")
                worker.stdin.flush()
                answers[renderer] = json.loads(worker.stdout.readline())
                answers[renderer]["wall_s"] = time.perf_counter() - started
            likeness = {}
            for artifact in ("thumbnail.png", "turntable.png"):
                images = [Path(answers[r]["artifacts"]) / artifact for r in ("gl", "numpy")]
                likeness[artifact] = ssim(*(_rgba(path) for path in images))
            rows.append((label, answers, likeness))
    for worker in workers.values():
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
    _print(rows)
    return 0


def _rgba(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGBA")


def _print(rows: list[tuple[str, dict[str, Any], dict[str, float]]]) -> None:
    print()
    print("| model | faces | child CPU, OpenGL | child CPU, numpy | numpy / OpenGL "
          "| SSIM thumbnail | SSIM turntable | target |")
    print("|---|---|---|---|---|---|---|---|")
    for label, answers, likeness in rows:
        faces = answers["gl"]["faces"]
        gl_ms, np_ms = answers["gl"]["cpu_ms"], answers["numpy"]["cpu_ms"]
        bound = SMALL_MS if faces < SMALL_FACES else LARGE_MS if faces <= LARGE_FACES else None
        alike = min(likeness.values()) >= MIN_SSIM
        verdict = ("-" if bound is None else "met" if gl_ms <= bound and alike else "NOT met")
        target = "" if bound is None else f" (<= {bound:.0f} ms)"
        print(f"| {label} | {faces:,} | {gl_ms:.0f} ms | {np_ms:.0f} ms | {np_ms / gl_ms:.1f}x "
              f"| {likeness['thumbnail.png']:.4f} | {likeness['turntable.png']:.4f} "
              f"| {verdict}{target} |")


if __name__ == "__main__":
    sys.exit(main())
