"""Kiln's mesh pipeline against a naive trimesh script on a generated 1M-face mesh, OBJ and GLB.

Generates (deterministically) a displaced, textured torus of about 1,000,000 triangles, writes it
as OBJ (+ MTL + PNG, with `vt` and `vn`) and as GLB (texture embedded) into a temporary
directory, then runs for each format and each repetition, every side in a fresh child process:
  - kiln:  `tasks.mesh.process(payload, progress)`: load, analyse, thumbnail, web model, LODs,
           turntable (the whole pipeline, artifacts written to a temporary directory)
  - naive: `bench/naive_mesh.py`: `trimesh.load`, the same statistics, `scene.save_image`

Measured per child:
  - work s:    seconds inside the child from just before the model is opened to the end (imports
               and interpreter start-up excluded: a Kiln pool child has them loaded already)
  - process s: wall seconds of the whole child process, as the parent sees it
  - peak RSS:  `ru_maxrss` of that one child, from `os.wait4(pid)` (Linux: kB). A child's figure
               never falls below its parent's own peak (exec keeps the old high-water mark), so
               the models are generated in children too and this process stays small; it prints
               its own peak as that floor. Xvfb is not the child's descendant: not counted.

`save_image` needs an OpenGL context: the naive side runs under an Xvfb display this script
starts (Mesa llvmpipe software GL) with pyglet<2 put on its PYTHONPATH by `--pyglet-path` (never
installed into the project venv). Without them the naive render is reported as failed.

    .venv/bin/python bench/mesh_pipeline.py [--repeat N] [--faces F] [--pyglet-path DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
NAIVE = Path(__file__).resolve().with_name("naive_mesh.py")
DEFAULT_FACES = 1_000_000
TEXTURE_SIZE = 1024
TARGET_RATIO = 2.0  # the whole pipeline (issue 10)
TARGET_SAME_WORK = 3.0  # load, stats and thumbnail
TARGET_RSS_MB = 1024.0
CHILD_TIMEOUT_S = 600.0


# ---- the generated model ---------------------------------------------------------------------

def torus_grid(faces: int) -> tuple[int, int]:
    """(segments around the ring, segments around the tube) giving about `faces` triangles."""
    tube = max(8, round(math.sqrt(faces / 4)))
    return max(8, round(faces / (2 * tube))), tube


def displaced_torus(
    ring: int, tube: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.int64],
           NDArray[np.int64]]:
    """(positions, uv, normals, position faces, uv faces) of a bumpy closed torus.

    Positions are shared around both seams (the surface is watertight, genus 1); the UV grid
    has one more row and column, so seam corners use different `vt` than `v`, as exported
    models do. The displacement is a fixed sum of waves: deterministic, organic, never
    self-intersecting (its amplitude stays well under the tube radius).
    """
    rng = np.random.default_rng(20261122)
    u = np.arange(ring) / ring * 2 * np.pi
    v = np.arange(tube) / tube * 2 * np.pi
    uu, vv = np.meshgrid(u, v, indexing="ij")
    bump = np.zeros_like(uu)
    for _ in range(24):
        a, b = rng.integers(1, 12), rng.integers(-9, 10)
        phase = rng.uniform(0, 2 * np.pi)
        bump += rng.uniform(0.2, 1.0) / (a + abs(b)) * np.sin(a * uu + b * vv + phase)
    bump += 0.015 * np.sin(97 * uu) * np.sin(41 * vv)  # fine ridges: many distinct normals
    radius = 0.32 * (1 + 0.35 * bump / np.abs(bump).max())
    centre = 1.0 + 0.08 * np.sin(3 * uu)
    x = (centre + radius * np.cos(vv)) * np.cos(uu)
    z = (centre + radius * np.cos(vv)) * np.sin(uu)
    y = radius * np.sin(vv) + 0.15 * np.sin(2 * uu)
    positions = np.stack([x, y, z], axis=-1).reshape(-1, 3)

    grid_i, grid_j = np.meshgrid(np.arange(ring), np.arange(tube), indexing="ij")
    i, j = grid_i.reshape(-1), grid_j.reshape(-1)
    i1, j1 = (i + 1) % ring, (j + 1) % tube
    pa, pb, pc, pd = i * tube + j, i1 * tube + j, i1 * tube + j1, i * tube + j1
    position_faces = np.concatenate([np.stack([pa, pc, pb], 1), np.stack([pa, pd, pc], 1)])
    # the UV grid is (ring + 1) x (tube + 1): the seam gets its own texture coordinates
    span = tube + 1
    ua, ub, uc, ud = i * span + j, (i + 1) * span + j, (i + 1) * span + j + 1, i * span + j + 1
    uv_faces = np.concatenate([np.stack([ua, uc, ub], 1), np.stack([ua, ud, uc], 1)])
    gu, gv = np.meshgrid(np.arange(ring + 1) / ring, np.arange(tube + 1) / tube, indexing="ij")
    uv = np.stack([gu.reshape(-1) * 4, gv.reshape(-1)], axis=-1)  # the texture repeats 4x
    normals = _vertex_normals(positions, position_faces)
    return positions, uv, normals, position_faces, uv_faces


def _vertex_normals(
    positions: NDArray[np.float64], faces: NDArray[np.int64]
) -> NDArray[np.float64]:
    cross = np.cross(positions[faces[:, 1]] - positions[faces[:, 0]],
                     positions[faces[:, 2]] - positions[faces[:, 0]])
    summed = np.zeros_like(positions)
    for axis in range(3):
        summed[:, axis] = np.bincount(faces.reshape(-1), np.repeat(cross[:, axis], 3),
                                      len(positions))
    summed /= np.linalg.norm(summed, axis=1, keepdims=True)
    return summed


def texture_image() -> Any:
    """A deterministic stone-like albedo (a PIL image): bands, cells and grain."""
    from PIL import Image

    n = TEXTURE_SIZE
    y, x = np.mgrid[0:n, 0:n] / n
    grain = np.random.default_rng(7).random((n, n))
    tone = 0.55 + 0.2 * np.sin(12 * np.pi * x + 3 * np.sin(4 * np.pi * y)) + 0.15 * grain
    cells = (np.floor(x * 8) + np.floor(y * 8)) % 2
    rgb = np.stack([tone * (0.85 + 0.1 * cells), tone * 0.75, tone * (0.6 - 0.1 * cells)], -1)
    return Image.fromarray(np.clip(rgb * 255, 0, 255).astype(np.uint8), "RGB")


def write_obj(directory: Path, faces: int) -> Path:
    """mesh.obj + mesh.mtl + albedo.png, as a DCC tool exports them (v, vt, vn, f v/vt/vn)."""
    positions, uv, normals, position_faces, uv_faces = displaced_torus(*torus_grid(faces))
    texture_image().save(directory / "albedo.png")
    (directory / "mesh.mtl").write_text(
        "newmtl stone\nKa 1 1 1\nKd 0.8 0.8 0.8\nKs 0 0 0\nmap_Kd albedo.png\n")
    corners = np.empty((len(position_faces), 9), dtype=np.int64)
    corners[:, 0::3] = position_faces + 1
    corners[:, 1::3] = uv_faces + 1
    corners[:, 2::3] = position_faces + 1
    path = directory / "mesh.obj"
    with path.open("w") as out:
        out.write("# generated by bench/mesh_pipeline.py\nmtllib mesh.mtl\no torus\n")
        np.savetxt(out, positions, fmt="v %.6f %.6f %.6f")
        np.savetxt(out, uv, fmt="vt %.6f %.6f")
        np.savetxt(out, normals, fmt="vn %.4f %.4f %.4f")
        out.write("usemtl stone\ns 1\n")
        np.savetxt(out, corners, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return path


def write_glb(directory: Path, faces: int) -> Path:
    """model.glb: the same surface with its UV seams split (as glTF requires), texture embedded."""
    import trimesh

    positions, uv, _, position_faces, uv_faces = displaced_torus(*torus_grid(faces))
    # glTF vertices are (position, uv) pairs: one vertex per UV-grid point
    vertex_position = np.zeros(len(uv), dtype=np.int64)
    vertex_position[uv_faces.reshape(-1)] = position_faces.reshape(-1)
    material = trimesh.visual.material.PBRMaterial(  # type: ignore[no-untyped-call]
        name="stone", baseColorTexture=texture_image(), metallicFactor=0.0, roughnessFactor=0.8)
    mesh = trimesh.Trimesh(
        vertices=positions[vertex_position], faces=uv_faces, process=False,
        visual=trimesh.visual.TextureVisuals(uv=uv, material=material))  # type: ignore[no-untyped-call]
    path = directory / "model.glb"
    path.write_bytes(trimesh.Scene(mesh).export(file_type="glb"))  # type: ignore[no-untyped-call]
    return path


# ---- the two sides, each in its own child ----------------------------------------------------

def kiln_child(files_dir: Path, main: str, fmt: str) -> None:
    """Run tasks.mesh.process once; stage starts go to stderr, the summary to stdout as JSON."""
    sys.path.insert(0, str(ROOT))
    from settings import Settings
    from tasks.mesh import process
    from tasks.progress import Payload
    from tasks.render import warm

    warm()  # a pool child makes its OpenGL context before its first task, as it imports
    start = time.perf_counter()
    stages: dict[str, float] = {}

    def progress(stage: str, fraction: float) -> None:
        now = time.perf_counter() - start
        if fraction == 0.0 and stage not in stages:
            stages[stage] = now
            print(f"      kiln {fmt}: {stage} at {now:.2f} s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="kiln-bench-out-") as out:
        payload: Payload = {
            "source": str(files_dir / main), "files_dir": str(files_dir), "main": main,
            "files": sorted(p.name for p in files_dir.iterdir()), "format": fmt,
            "artifacts_dir": str(Path(out) / "artifacts"), "work_dir": str(Path(out) / "work"),
            "max_pixels": 178_956_970, "limits": Settings().pipeline_limits(),
        }
        result = process(payload, progress)
        work = time.perf_counter() - start
        names = [a["name"] for a in result["artifacts"]]
    stats = {k: result["stats"][k] for k in ("vertices", "faces", "area", "watertight",
                                             "volume", "bodies")}
    print(json.dumps({"work_s": work, "stages": stages, "stats": stats, "artifacts": names}))


def run_child(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one child; its JSON line, process wall seconds and its own peak RSS (MB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout:
        child = subprocess.Popen(argv, stdout=stdout, stderr=None, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        stdout.seek(0)
        lines = stdout.read().decode("utf-8", errors="replace").strip().splitlines()
    report: dict[str, Any] = {}
    if child.returncode == 0 and lines:
        report = json.loads(lines[-1])
    else:
        report = {"error": f"exit code {child.returncode}"}
    report["process_s"] = wall
    report["rss_mb"] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return report


def start_xvfb() -> tuple[subprocess.Popen[bytes] | None, str | None]:
    """A private Xvfb display for the naive side's OpenGL, unless one is set already."""
    if os.environ.get("DISPLAY"):
        return None, os.environ["DISPLAY"]
    binary = shutil.which("Xvfb")
    if binary is None:
        return None, None
    for number in range(99, 140):
        if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        server = subprocess.Popen([binary, f":{number}", "-screen", "0", "1024x768x24",
                                   "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                return server, f":{number}"
            time.sleep(0.1)
        server.terminate()
        server.wait()
    return None, None


# ---- the run ---------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--faces", type=int, default=DEFAULT_FACES)
    parser.add_argument("--formats", default="obj,glb")
    parser.add_argument("--pyglet-path", default=os.environ.get("KILN_BENCH_PYGLET", ""),
                        help="a directory holding pyglet<2 (pip install --target DIR 'pyglet<2')")
    parser.add_argument("--kiln-child", nargs=3, metavar=("DIR", "MAIN", "FORMAT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("DIR", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kiln_child:
        kiln_child(Path(args.kiln_child[0]), args.kiln_child[1], args.kiln_child[2])
        return 0
    if args.generate:
        path = (write_obj if args.generate[1] == "obj" else write_glb)(
            Path(args.generate[0]), args.faces)
        print(json.dumps({"name": path.name}))
        return 0

    python = sys.executable
    formats = [f for f in args.formats.split(",") if f]
    xvfb, display = start_xvfb()
    sys.path.insert(0, str(ROOT))
    from worker.pool import child_environment

    kiln_env = child_environment(None)  # as a pool child runs: one drawing thread, steady heap
    naive_env = dict(os.environ)
    if display:
        naive_env["DISPLAY"] = display
    if args.pyglet_path:
        naive_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (args.pyglet_path, naive_env.get("PYTHONPATH", "")) if p)
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores: other work skews times)",
          file=sys.stderr)
    print(f"OpenGL display for the naive render: {display or 'none'}; "
          f"pyglet from: {args.pyglet_path or 'the venv (if any)'}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="kiln-bench-mesh-") as tmp:
            for fmt in formats:
                directory = Path(tmp) / fmt
                directory.mkdir()
                print(f"generating {fmt.upper()} ({args.faces:,} faces)...", file=sys.stderr,
                      flush=True)
                # in a child: a child's ru_maxrss starts at its parent's peak (vfork + exec
                # keeps the parent's high-water mark), so this process must stay small
                made = run_child([python, __file__, "--generate", str(directory), fmt,
                                  "--faces", str(args.faces)])
                if "name" not in made:
                    raise SystemExit(f"generating the {fmt} model failed: {made['error']}")
                path = directory / made["name"]
                print(f"  {path.name}: {path.stat().st_size / 2**20:.1f} MB in "
                      f"{made['process_s']:.1f} s", file=sys.stderr, flush=True)
                for run in range(1, args.repeat + 1):
                    print(f"  [{fmt} {run}/{args.repeat}] kiln: tasks.mesh.process ...",
                          file=sys.stderr, flush=True)
                    kiln = run_child([python, __file__, "--kiln-child", str(directory),
                                      path.name, fmt], env=kiln_env)
                    rows.append({"format": fmt, "side": "kiln", "run": run, **kiln})
                    print(f"  [{fmt} {run}/{args.repeat}] naive: trimesh.load + stats + "
                          "save_image ...", file=sys.stderr, flush=True)
                    naive = run_child([python, str(NAIVE), str(path)], env=naive_env)
                    rows.append({"format": fmt, "side": "naive", "run": run, **naive})
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()
    print(f"load average after: {os.getloadavg()[0]:.2f}; this process's own peak RSS (a floor "
          f"under every child's): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          " MB", file=sys.stderr)
    print_table(rows)
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    """The measured table (Markdown) and, per format, the ratios against the targets."""
    print()
    print("| format | side | run | work s | to thumbnail s | process s | peak RSS MB | note |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        note = row.get("error") or ""
        if row["side"] == "naive" and "render" in row:
            note = f"save_image {row['render']}; watertight {row['stats']['watertight']}"
        if row["side"] == "kiln" and "stats" in row:
            note = f"{row['stats']['faces']:,} faces, {len(row['artifacts'])} artifacts"
        work = f"{row['work_s']:.2f}" if "work_s" in row else "-"
        same = _same_work(row)
        print(f"| {row['format']} | {row['side']} | {row['run']} | {work} | "
              f"{'-' if same is None else f'{same:.2f}'} | {row['process_s']:.2f} | "
              f"{row['rss_mb']:.0f} | {note} |")
    print()
    for fmt in dict.fromkeys(r["format"] for r in rows):
        kiln = [r for r in rows if r["format"] == fmt and r["side"] == "kiln" and "work_s" in r]
        naive = [r for r in rows if r["format"] == fmt and r["side"] == "naive" and "work_s" in r]
        if not kiln or not naive:
            print(f"{fmt.upper()}: a side failed; no ratio")
            continue
        k_work, n_work = (_median(r["work_s"] for r in side) for side in (kiln, naive))
        k_same = _median(_same_work(r) or math.nan for r in kiln)
        k_proc, n_proc = (_median(r["process_s"] for r in side) for side in (kiln, naive))
        k_rss = max(r["rss_mb"] for r in kiln)
        n_rss = max(r["rss_mb"] for r in naive)
        ratio = n_work / k_work
        same = n_work / k_same
        verdict = ("met" if ratio >= TARGET_RATIO and same >= TARGET_SAME_WORK
                   and k_rss <= TARGET_RSS_MB else "NOT met")
        rendered = all(r.get("render") == "ok" for r in naive)
        print(f"{fmt.upper()}: naive/kiln speed ratio {ratio:.2f}x (work; {n_proc / k_proc:.2f}x "
              f"whole processes; {same:.2f}x against Kiln's load+analyse+thumbnail "
              f"only); peak RSS kiln {k_rss:.0f} MB, naive {n_rss:.0f} MB; target >= "
              f"{TARGET_RATIO}x whole, >= {TARGET_SAME_WORK}x same work, <= "
              f"{TARGET_RSS_MB:.0f} MB: {verdict}"
              + ("" if rendered else "; NAIVE RENDER FAILED: its time excludes rendering"))


def _same_work(row: dict[str, Any]) -> float | None:
    """Seconds of the work the naive script also does: Kiln up to the end of its thumbnail."""
    if row["side"] == "naive":
        return row.get("work_s")
    stages = row.get("stages") or {}
    return stages.get("web_model")


def _median(values: Any) -> float:
    return float(np.median(list(values)))


if __name__ == "__main__":
    sys.exit(main())
