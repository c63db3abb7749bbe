"""The headless renderer frames, shades, textures and depth-sorts models, and survives bad input.

Every test runs twice: drawn by OpenGL (llvmpipe here) and by the numpy fallback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh
from numpy.typing import NDArray
from PIL import Image

from tasks.render import Surface, render_turntable, render_view, turntable_layout
from tests.conftest import corpus

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


@pytest.fixture(autouse=True, params=["gl", "numpy"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KILN_RENDERER", request.param)
    return str(request.param)


def pixels(image: Image.Image) -> NDArray[np.int64]:
    assert image.mode == "RGBA"
    return np.asarray(image).astype(np.int64)


def box(size: tuple[float, float, float] = (1, 1, 1), at: tuple[float, float, float] = (0, 0, 0),
        color: tuple[int, int, int] = (200, 200, 205)) -> Surface:
    mesh = trimesh.creation.box(extents=size)
    return Surface(vertices=np.asarray(mesh.vertices) + at, faces=np.asarray(mesh.faces),
                   color=color)


def quad(z: float = 0.0, color: tuple[int, int, int] = (200, 200, 205), turn: float = 0.0,
         at: tuple[float, float, float] = (0, 0, 0), **extra: object) -> Surface:
    """A 2 x 2 square facing +Z (counter-clockwise seen from +Z), turned `turn` degrees about Y."""
    corners = np.array([[-1, -1, z], [1, -1, z], [1, 1, z], [-1, 1, z]], dtype=np.float64)
    angle = np.radians(turn)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                         [-np.sin(angle), 0, np.cos(angle)]])
    return Surface(vertices=corners @ rotation.T + at, faces=np.array([[0, 1, 2], [0, 2, 3]]),
                   color=color, **extra)  # type: ignore[arg-type]


def coverage_box(alpha: NDArray[np.int64]) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero(alpha)
    return int(rows.min()), int(rows.max()), int(columns.min()), int(columns.max())


def test_cube_is_centred_framed_and_shaded() -> None:
    image = pixels(render_view([box()], size=128))
    alpha = image[..., 3]
    for corner in (alpha[0, 0], alpha[0, -1], alpha[-1, 0], alpha[-1, -1]):
        assert corner == 0
    assert 0.35 < (alpha > 0).mean() < 0.85
    top, bottom, left, right = coverage_box(alpha)
    assert abs((top + bottom) / 2 - 63.5) <= 2 and abs((left + right) / 2 - 63.5) <= 2
    # the fit leaves a small margin and uses most of the frame
    assert min(top, left, 127 - bottom, 127 - right) >= 2
    assert max(bottom - top, right - left) >= 105
    # three faces are seen, each flat-shaded with its own brightness
    solid = image[alpha == 255][:, :3]
    assert len(np.unique(solid.sum(axis=1) // 8)) >= 3
    assert solid.min() > 40  # ambient: no face is black


def test_nearer_surface_hides_farther_seen_from_both_sides() -> None:
    near, far = quad(z=0.5, color=RED), quad(z=-0.5, color=BLUE)
    for parts in ([near, far], [far, near]):
        front = pixels(render_view(parts, size=64, yaw=0, pitch=0))
        back = pixels(render_view(parts, size=64, yaw=180, pitch=0))
        middle = front[16:48, 16:48]
        assert (middle[..., 0] > 100).all() and (middle[..., 2] == 0).all()
        middle = back[16:48, 16:48]
        assert (middle[..., 2] > 100).all() and (middle[..., 0] == 0).all()


def test_interpenetrating_surfaces_cross_where_their_depths_do() -> None:
    flat = quad(color=RED)
    tilted = quad(color=BLUE, turn=30)  # its left half comes towards the camera
    image = pixels(render_view([flat, tilted], size=64, yaw=0, pitch=0))
    row = image[32]
    assert row[12, 2] > 100 and row[12, 0] == 0  # left: the tilted quad is in front
    assert row[50, 0] > 100 and row[50, 2] == 0  # right: it is behind


def quadrant_texture() -> NDArray[np.uint8]:
    texture = np.zeros((8, 8, 4), dtype=np.uint8)
    texture[:4, :4, :3], texture[:4, 4:, :3] = RED, GREEN
    texture[4:, :4, :3], texture[4:, 4:, :3] = BLUE, YELLOW
    texture[..., 3] = 7  # alpha is ignored
    return texture


def hue(color: NDArray[np.int64]) -> tuple[int, int, int]:
    return tuple(int(c) for c in (color[:3] > color[:3].max() * 0.6))  # type: ignore[return-value]


def test_texture_is_upright_and_not_mirrored() -> None:
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    image = pixels(render_view([quad(uv=uv, texture=quadrant_texture())], size=64, yaw=0, pitch=0))
    # v=0 is the texture's bottom row: the image's top-left quarter shows its top-left quarter
    assert hue(image[18, 18]) == (1, 0, 0)
    assert hue(image[18, 46]) == (0, 1, 0)
    assert hue(image[46, 18]) == (0, 0, 1)
    assert hue(image[46, 46]) == (1, 1, 0)
    assert (image[..., 3][image[..., 3] > 0] == 255).mean() > 0.9


def test_texture_coordinates_wrap() -> None:
    uv = np.array([[0, 0], [2, 0], [2, 1], [0, 1]], dtype=np.float64) - [3, 0]
    image = pixels(render_view([quad(uv=uv, texture=quadrant_texture())], size=64, yaw=0, pitch=0))
    tops = [hue(image[18, column]) for column in (10, 22, 42, 54)]
    assert tops == [(1, 0, 0), (0, 1, 0), (1, 0, 0), (0, 1, 0)]


def test_vertex_colors_are_interpolated() -> None:
    colors = np.array([RED, RED, BLUE, BLUE], dtype=np.uint8)
    image = pixels(render_view([quad(vertex_colors=colors)], size=64, yaw=0, pitch=0))
    assert hue(image[60, 32]) == (1, 0, 0) and hue(image[4, 32]) == (0, 0, 1)
    assert image[32, 32, 0] > 40 and image[32, 32, 2] > 40  # a blend halfway


def test_a_face_turned_away_is_darker_but_not_black() -> None:
    facing = quad(at=(-1.5, 0, 0))
    turned = quad(turn=-75, at=(1.5, 0, 0))
    image = pixels(render_view([facing, turned], size=128, yaw=0, pitch=0))
    solid = image[..., 3] == 255
    left, right = solid.copy(), solid.copy()
    left[:, 64:], right[:, :64] = False, False
    assert left.sum() > 2000 and right.sum() > 200
    facing_brightness = image[left][:, :3].mean()
    turned_brightness = image[right][:, :3].mean()
    assert facing_brightness > turned_brightness * 1.3
    assert turned_brightness > 0.25 * 200


def test_back_faces_are_drawn_and_lit_like_front_faces() -> None:
    front = quad()
    flipped = Surface(vertices=front.vertices, faces=front.faces[:, ::-1])
    a = pixels(render_view([front], size=32, yaw=0, pitch=0))
    b = pixels(render_view([flipped], size=32, yaw=0, pitch=0))
    assert (a[..., 3] > 0).mean() > 0.5
    assert np.abs(a - b).max() <= 1


def test_y_is_up_and_x_is_right() -> None:
    parts = [box(), box((0.4, 0.4, 0.4), at=(1.0, 1.0, 0.0), color=RED)]
    image = pixels(render_view(parts, size=64, yaw=0, pitch=0))
    red = (image[..., 0] > 100) & (image[..., 1] < 50)
    rows, columns = np.nonzero(red)
    assert rows.mean() < 24 and columns.mean() > 40


def test_turntable_sprite_matches_its_layout_and_keeps_one_scale() -> None:
    layout = turntable_layout(12, 48, 5)
    assert layout == {"frames": 12, "frame_width": 48, "frame_height": 48, "columns": 5, "rows": 3}
    slab = [box((2.0, 1.0, 0.2)), box((0.3, 0.3, 0.3), at=(0.8, 0.6, 0.0), color=RED)]
    sprite = pixels(render_turntable(slab, frames=12, frame_size=48, columns=5, pitch=0))
    assert sprite.shape == (3 * 48, 5 * 48, 4)
    frames = [sprite[(i // 5) * 48:(i // 5 + 1) * 48, (i % 5) * 48:(i % 5 + 1) * 48]
              for i in range(12)]
    assert not sprite[2 * 48:, 2 * 48:].any()  # unused cells stay transparent
    boxes = [coverage_box(frame[..., 3]) for frame in frames]
    heights = {bottom - top for top, bottom, _, _ in boxes}
    widths = {right - left for _, _, left, right in boxes}
    assert max(heights) - min(heights) <= 1  # same scale: the height never changes
    assert max(widths) - min(widths) > 20  # while the slab turns edge-on and back
    assert all(abs(top + bottom - 47) <= 2 for top, bottom, _, _ in boxes)
    assert not np.array_equal(frames[0], frames[6])  # the asymmetric model shows its other side
    assert not np.array_equal(frames[1], frames[11])


def test_turntable_frames_follow_yaw() -> None:
    model = [box(), box((0.4, 0.4, 0.4), at=(1.0, 0.0, 0.0), color=RED)]
    sprite = pixels(render_turntable(model, frames=4, frame_size=40, columns=4, pitch=0))
    red_columns = []
    for i in range(4):
        frame = sprite[:, i * 40:(i + 1) * 40]
        red = (frame[..., 0] > 100) & (frame[..., 1] < 50)
        red_columns.append(np.nonzero(red)[1].mean() if red.any() else None)
    # yaw 0 looks from +Z (the marker at +X is right), 180 from -Z (it is left), 90 hides it
    assert red_columns[0] is not None and red_columns[0] > 28
    assert red_columns[2] is not None and red_columns[2] < 12
    assert red_columns[1] is None or red_columns[3] is None


def test_empty_input_gives_a_transparent_image() -> None:
    nothing = Surface(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64))
    for parts in ([], [nothing]):
        image = render_view(parts, size=16)
        assert image.size == (16, 16) and not pixels(image).any()
    sprite = render_turntable([], frames=3, frame_size=8, columns=2)
    assert sprite.size == (16, 16) and not pixels(sprite).any()


def test_hostile_geometry_does_not_crash() -> None:
    good = box()
    vertices = np.concatenate([good.vertices, [[np.nan, 0, 0], [np.inf, 1, 1], [0, -np.inf, 2]]])
    faces = np.concatenate([good.faces, [[0, 1, 8], [9, 10, 2], [0, 1, 99], [-1, 2, 3]]])
    degenerate = Surface(vertices=np.ones((3, 3)), faces=np.array([[0, 1, 2], [0, 0, 0]]))
    broken_uv = np.full((len(vertices), 2), np.nan)
    hostile = Surface(vertices=vertices, faces=faces, uv=broken_uv, texture=quadrant_texture(),
                      vertex_colors=np.zeros((2, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = pixels(render_view([hostile, degenerate], size=64))
        reference = pixels(render_view([box()], size=64))
        assert (image[..., 3] > 0).sum() == (reference[..., 3] > 0).sum()
        assert not pixels(render_view([degenerate], size=64)).any()
        huge = Surface(vertices=np.array([[0, 0, 0], [1e300, 0, 0], [0, 1e300, 1e300]]),
                       faces=np.array([[0, 1, 2]]))
        render_view([huge], size=16)


def test_sizes_and_limits() -> None:
    assert render_view([box()], size=1).size == (1, 1)
    for size in (0, 4097):
        with pytest.raises(ValueError):
            render_view([box()], size=size)
    with pytest.raises(ValueError):
        render_view([box(), box()], max_faces=20)
    assert render_view([box()], size=8, max_faces=12).size == (8, 8)
    for frames, columns in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            turntable_layout(frames, 8, columns)


def test_large_triangles_fill_without_cracks() -> None:
    image = pixels(render_view([quad(color=GREEN)], size=1024, yaw=0, pitch=0))
    alpha = image[..., 3]
    top, bottom, left, right = coverage_box(alpha)
    assert (alpha[top + 1:bottom, left + 1:right] == 255).all()


def test_rendering_is_deterministic() -> None:
    model = [box(), box((0.4, 0.4, 0.4), at=(1.0, 1.0, 0.0), color=RED)]
    assert render_view(model, size=96).tobytes() == render_view(model, size=96).tobytes()
    sprite = render_turntable(model, frames=6, frame_size=32)
    assert sprite.tobytes() == render_turntable(model, frames=6, frame_size=32).tobytes()


def surfaces(scene: trimesh.Scene) -> list[Surface]:
    """The scene's meshes, placed, with their base-colour texture where they have one."""
    parts = []
    for mesh in scene.dump():
        assert isinstance(mesh, trimesh.Trimesh)
        material = getattr(mesh.visual, "material", None)
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        uv = getattr(mesh.visual, "uv", None)
        if image is None or uv is None or min(image.size) <= 2:  # trimesh's 2x2 placeholder
            parts.append(Surface(vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces)))
        else:
            parts.append(Surface(vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces),
                                 uv=np.asarray(uv), texture=np.asarray(image.convert("RGB"))))
    return parts


def save(image: Image.Image, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / name)


def test_corpus_models_render(tmp_path: Path, renderer: str) -> None:
    wuson = surfaces(trimesh.Scene(trimesh.load(corpus("OBJ/WusonOBJ.obj"), process=False)))
    thumbnail = render_view(wuson)
    alpha = pixels(thumbnail)[..., 3]
    top, bottom, left, right = coverage_box(alpha)
    assert abs((top + bottom) / 2 - 255.5) <= 3 and abs((left + right) / 2 - 255.5) <= 3
    assert max(bottom - top, right - left) > 400
    save(thumbnail, f"render-{renderer}-wuson.png")
    save(render_turntable(wuson), f"render-{renderer}-wuson-turntable.png")

    duck = surfaces(trimesh.load_scene(corpus("Collada/duck.dae")))
    assert any(part.texture is not None for part in duck)
    thumbnail = render_view(duck, size=256)
    colors = pixels(thumbnail)[pixels(thumbnail)[..., 3] == 255][:, :3]
    assert (colors[:, 0] > colors[:, 2] + 60).mean() > 0.5  # the yellow duck texture shows
    save(thumbnail, f"render-{renderer}-duck.png")


def test_the_callers_arrays_are_left_alone() -> None:
    model = box(at=(5.0, 0.0, 0.0))
    vertices = np.asfortranarray(model.vertices)
    kept = vertices.copy()
    render_view([Surface(vertices=vertices, faces=model.faces)], size=16)
    assert np.array_equal(vertices, kept)
