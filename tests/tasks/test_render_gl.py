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

from tasks import draw_gl, topology
from tasks.archive import ArchiveLimits
from tasks.mesh import surfaces
from tasks.mesh_load import Source, load_model
from tasks.render import Surface, render_turntable, render_view, renderer
from tasks.scene import prepare, turntable_frame, view_rotation
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


def test_many_faces_are_anti_aliased_by_blocks_and_few_by_samples() -> None:
    many, few = draw_gl.BLOCKS_MIN_FACES, draw_gl.BLOCKS_MIN_FACES - 1
    assert draw_gl.antialiasing(many, 1536, 1024, 16384) == "blocks"
    assert draw_gl.antialiasing(few, 1536, 1024, 16384) == "samples"
    # twice the size must fit in a texture; more samples than MAX_SAMPLES: no anti-aliasing
    assert draw_gl.antialiasing(many, 1000, 8300, 16384) == "samples"
    assert draw_gl.antialiasing(many, 1536, 15360, 16384) is None


@pytest.mark.parametrize("way", ["blocks", "samples"])
def test_both_ways_of_anti_aliasing_draw_the_numpy_picture(
    way: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = parts_of("OBJ/spider.obj", "obj", tmp_path)
    monkeypatch.setattr(draw_gl, "BLOCKS_MIN_FACES", 1 if way == "blocks" else 10**9)
    seen: list[str | None] = []
    choose = draw_gl.antialiasing

    def chosen(*args: int) -> str | None:
        seen.append(choose(*args))
        return seen[-1]

    monkeypatch.setattr(draw_gl, "antialiasing", chosen)
    gl = render_view(parts, size=256, using="gl")
    assert seen == [way]
    alpha = np.asarray(gl)[..., 3]
    assert ((alpha > 0) & (alpha < 255)).any()  # edges partly covered
    assert ssim(gl, render_view(parts, size=256, using="numpy")) >= 0.97


def test_a_closed_model_turns_the_same_with_its_hidden_faces_skipped(tmp_path: Path) -> None:
    inside_out = trimesh.creation.icosphere(subdivisions=2)
    inside_out.invert()
    models = {
        "open": parts_of("STL/sphereWithHole.stl", "stl", tmp_path),  # nothing skipped
        "box": parts_of("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "glb", tmp_path),
        "inside out": [Surface(vertices=inside_out.vertices, faces=inside_out.faces)],
    }
    facing = {"open": 0, "box": 1, "inside out": -1}
    for name, parts in models.items():
        scene = prepare(parts, None)
        assert scene is not None
        assert topology.facing(scene.coords.T, scene.faces) == facing[name], name
        rotations = [view_rotation(30.0 * i, 20.0) for i in range(12)]
        frame = turntable_frame(scene, rotations)
        drawn = [draw_gl.draw_views(scene, rotations, [frame] * 12, 96, 4, True, way)
                 for way in (0, facing[name])]
        # the same outline; inside it, only where a back face tied a front one at an edge
        assert np.abs(drawn[0][..., 3].astype(int) - drawn[1][..., 3]).max() <= 1, name
        assert ssim(Image.fromarray(drawn[0]), Image.fromarray(drawn[1])) >= 0.99, name
    # skipping the other side shows the inside of the far half instead: the sign matters
    scene = prepare(models["inside out"], None)
    assert scene is not None
    right, wrong = (draw_gl.draw_views(scene, rotations, [frame] * 12, 96, 4, True, way)
                    for way in (-1, 1))
    assert ssim(Image.fromarray(right), Image.fromarray(wrong)) < 0.9
