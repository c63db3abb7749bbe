"""OpenGL draws what the numpy renderer draws, and numpy takes over where OpenGL cannot run."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from tasks import draw_gl
from tasks.archive import ArchiveLimits
from tasks.mesh import surfaces
from tasks.mesh_load import Source, load_model
from tasks.render import Surface, render_turntable, render_view, renderer
from tests.conftest import corpus
from tests.helpers.images import ssim
from tests.helpers.payloads import limits as all_limits

ROOT = Path(__file__).resolve().parents[2]
MODELS = [
    ("OBJ/box.obj", "obj"), ("OBJ/spider.obj", "obj"), ("OBJ/WusonOBJ.obj", "obj"),
    ("Collada/duck.dae", "dae"), ("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "glb"),
    ("glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb", "glb"),
]


def parts_of(relative: str, kind: str, work: Path) -> list[Surface]:
    path = corpus(relative)
    files = tuple(sorted(item.name for item in path.parent.iterdir() if item.is_file()))
    model = load_model(Source(path.parent, path.name, files, kind), max_pixels=10**8,
                       work_dir=work, archive_limits=ArchiveLimits.from_payload(all_limits()))
    return surfaces(model)


def test_opengl_is_what_draws_here() -> None:
    # the test command installs Mesa's EGL: without it the comparisons below would compare
    # numpy with itself
    assert draw_gl.available()
    assert renderer("auto") == "gl" and renderer("numpy") == "numpy"


@pytest.mark.parametrize(("relative", "kind"), MODELS)
def test_opengl_matches_the_numpy_renderer_on_the_corpus(
    relative: str, kind: str, tmp_path: Path
) -> None:
    parts = parts_of(relative, kind, tmp_path)
    views = {using: render_view(parts, using=using) for using in ("gl", "numpy")}
    assert ssim(views["gl"], views["numpy"]) >= 0.97
    turntables = {using: render_turntable(parts, frames=12, frame_size=128, using=using)
                  for using in ("gl", "numpy")}
    assert ssim(turntables["gl"], turntables["numpy"]) >= 0.97
    # the outline agrees too: coverage within 2% of the numpy renderer's
    covered = {using: int((np.asarray(image)[..., 3] > 0).sum()) for using, image in views.items()}
    assert math.isclose(covered["gl"], covered["numpy"], rel_tol=0.02)


def test_numpy_draws_when_no_opengl_context_can_be_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draw_gl, "_context", draw_gl.Unavailable("no EGL here"))
    assert not draw_gl.available()
    assert renderer("auto") == "numpy"
    box = trimesh.creation.box()
    parts = [Surface(vertices=box.vertices, faces=box.faces)]
    image = render_view(parts, size=64, using="auto")
    assert image.getchannel("A").getextrema() == (0, 255)
    # asked for by name, OpenGL is required: no silent fallback
    with pytest.raises(draw_gl.Unavailable):
        render_view(parts, size=64, using="gl")


def test_the_renderer_choice_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="KILN_RENDERER"):
        renderer("vulkan")
    monkeypatch.setenv("KILN_RENDERER", "numpy")
    assert renderer() == "numpy"


def test_views_of_different_sizes_reuse_few_targets() -> None:
    box = trimesh.creation.box()
    parts = [Surface(vertices=box.vertices, faces=box.faces)]
    for size in (16, 32, 48, 64, 80, 96):
        assert render_view(parts, size=size, using="gl").size == (size, size)
    render_turntable(parts, frames=4, frame_size=16, using="gl")
    assert len(draw_gl._programs()._targets) <= draw_gl.TARGETS


def test_a_view_is_the_same_every_time_and_in_every_order() -> None:
    box = trimesh.creation.box()
    parts = [Surface(vertices=box.vertices, faces=box.faces)]
    first = render_view(parts, size=96, using="gl").tobytes()
    render_turntable(parts, frames=6, frame_size=40, using="gl")
    assert render_view(parts, size=96, using="gl").tobytes() == first
    Image.new("RGBA", (1, 1))  # nothing else in the process disturbs the context


def test_under_a_tight_memory_limit_numpy_draws_instead_of_crashing() -> None:
    # llvmpipe crashes the process (SIGSEGV) when it cannot map its threads: a child under a
    # small RLIMIT_AS must not even try
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))\n"
        "import trimesh\n"
        "from tasks import draw_gl\n"
        "from tasks.render import Surface, render_view, renderer\n"
        "assert not draw_gl.available() and renderer('auto') == 'numpy'\n"
        "box = trimesh.creation.box()\n"
        "image = render_view([Surface(vertices=box.vertices, faces=box.faces)], size=32)\n"
        "assert image.getchannel('A').getextrema() == (0, 255)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "no room for an OpenGL context" in done.stderr


def test_a_texture_larger_than_opengl_takes_is_still_drawn() -> None:
    # llvmpipe takes textures up to 16384 px a side; a larger upload fails silently (black)
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=np.float64)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    white = np.full((4, 17000, 3), 255, dtype=np.uint8)
    quad = Surface(vertices=corners, faces=np.array([[0, 1, 2], [0, 2, 3]]), uv=uv,
                   texture=white)
    for using in ("gl", "numpy"):
        image = np.asarray(render_view([quad], size=32, yaw=0, pitch=0, using=using))
        assert image[16, 16, :3].min() > 150, using


def test_anti_aliasing_is_bounded_by_the_samples_it_would_take() -> None:
    box = trimesh.creation.box()
    parts = [Surface(vertices=box.vertices, faces=box.faces)]
    # 360 frames of 256 px: 1536 x 15360 pixels, over MAX_SAMPLES at four samples each
    tall = render_turntable(parts, frames=360, frame_size=256, using="gl")
    assert tall.size == (1536, 15360)
    alpha = np.asarray(tall)[..., 3]
    assert set(np.unique(alpha).tolist()) == {0, 255}  # drawn, without anti-aliasing
