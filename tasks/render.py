"""Headless thumbnails and turntable sprites of a model: orthographic, Lambert-shaded, textured.

Drawn by OpenGL where a context can be made (`tasks.draw_gl`: the GPU, or Mesa's llvmpipe on
the CPU), so the cost follows the model; otherwise, or when asked, by numpy
(`tasks.draw_numpy`). Both draw the same picture from the same `tasks.scene`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tasks import draw_gl, draw_numpy, topology
from tasks.scene import Frame, Scene, Surface, prepare, turntable_frame, view_frame, view_rotation

__all__ = ["RENDERERS", "Surface", "render_turntable", "render_view", "renderer",
           "turntable_layout", "warm"]

MAX_SIZE = 4096
MAX_FRAMES = 360
# anti-aliasing: draw this many times larger and average, while the face count is small enough
SUPERSAMPLE = 2
SUPERSAMPLE_MAX_FACES = 500_000
SUPERSAMPLE_MAX_SIZE = 2048  # of the drawn image, before averaging: bounds memory
RENDERERS = ("auto", "gl", "numpy")
RENDERER_ENV = "KILN_RENDERER"


def renderer(choice: str | None = None) -> str:
    """"gl" or "numpy": `choice` (default $KILN_RENDERER, else "auto": gl when it can be made)."""
    choice = (choice or os.environ.get(RENDERER_ENV) or "auto").strip().lower()
    if choice not in RENDERERS:
        raise ValueError(f"{RENDERER_ENV} must be one of {', '.join(RENDERERS)}, not {choice!r}")
    if choice == "numpy":
        return "numpy"
    if choice == "gl" or draw_gl.available():
        return "gl"
    return "numpy"


def warm() -> None:
    """Make the OpenGL context now (a child calls it before its first task): about 60 ms."""
    renderer()


def render_view(
    parts: Sequence[Surface], *, size: int = 512, yaw: float = 35.0, pitch: float = 25.0,
    max_faces: int | None = None, using: str | None = None,
) -> Image.Image:
    """An RGBA image (transparent background) of all parts, framed so the whole model fits.

    Orthographic projection (so texture interpolation is exactly perspective-correct): the camera
    turns `yaw` degrees around +Y (0 looks from +Z towards -Z, 90 from +X) and looks down
    `pitch` degrees. The model's outline in this view is centred and fills the image but for a
    MARGIN. Raises ValueError for a size outside 1..MAX_SIZE or more faces than `max_faces`:
    the caller passes an already simplified mesh. `using` picks the renderer (see `renderer`).
    """
    _check_size(size)
    # vertices no face uses may be anything, NaN included: their arithmetic must not warn
    with np.errstate(all="ignore"):
        scene = prepare(parts, max_faces)
        if scene is None:
            return Image.new("RGBA", (size, size))
        rotation = view_rotation(yaw, pitch)
        pixels = _draw(scene, [rotation], [view_frame(scene, rotation)], size, 1, using, 1)
    return Image.fromarray(pixels, "RGBA")


def render_turntable(
    parts: Sequence[Surface], *, frames: int = 24, frame_size: int = 256, columns: int = 6,
    pitch: float = 20.0, max_faces: int | None = None, threads: int = 1, using: str | None = None,
) -> Image.Image:
    """`frames` views at yaw = 360*i/frames, left-to-right, top-to-bottom in `columns`; RGBA.

    Every frame shares one centre (the model's bounding-box centre) and one scale (its largest
    extent over all frames), so the model turns in place. The sprite's geometry is
    `turntable_layout(frames, frame_size, columns)`; unused cells are transparent. numpy draws
    the frames on `threads` threads (it lets go of the GIL for most of a frame's work).
    """
    layout = turntable_layout(frames, frame_size, columns)
    with np.errstate(all="ignore"):
        scene = prepare(parts, max_faces)
        if scene is None:
            size = (layout["columns"] * frame_size, layout["rows"] * frame_size)
            return Image.new("RGBA", size)
        rotations = [view_rotation(360.0 * i / frames, pitch) for i in range(frames)]
        frame = turntable_frame(scene, rotations)
        sprite = _draw(scene, rotations, [frame] * frames, frame_size, layout["columns"], using,
                       threads, turntable=True)
    return Image.fromarray(sprite, "RGBA")


def turntable_layout(frames: int, frame_size: int, columns: int) -> dict[str, int]:
    """{"frames","frame_width","frame_height","columns","rows"} — the page needs it to scrub."""
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be within 1..{MAX_FRAMES}, not {frames}")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    _check_size(frame_size)
    columns = min(columns, frames)
    return {
        "frames": frames, "frame_width": frame_size, "frame_height": frame_size,
        "columns": columns, "rows": -(-frames // columns),
    }


def _check_size(size: int) -> None:
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"image size must be within 1..{MAX_SIZE}, not {size}")


def _draw(
    scene: Scene, rotations: Sequence[NDArray[np.float64]], frames: Sequence[Frame], size: int,
    columns: int, using: str | None, threads: int, turntable: bool = False,
) -> NDArray[np.uint8]:
    """Views in a grid of `columns` cells of size x size, by the chosen renderer: RGBA uint8.

    OpenGL skips the faces a closed model turns away in every view of a `turntable` (half the
    drawing; finding whether it may costs a tenth of that).
    """
    cheap = len(scene.faces) <= SUPERSAMPLE_MAX_FACES and size * SUPERSAMPLE <= SUPERSAMPLE_MAX_SIZE
    factor = SUPERSAMPLE if cheap else 1
    if renderer(using) == "gl":
        facing = topology.facing(scene.coords.T, scene.faces) if turntable else 0
        return draw_gl.draw_views(scene, rotations, frames, size, columns, factor > 1, facing)
    rows = -(-len(rotations) // columns)
    sprite = np.zeros((rows * size, columns * size, 4), np.uint8)

    def draw(i: int) -> None:
        top, left = (size * n for n in divmod(i, columns))
        with np.errstate(all="ignore"):  # error state is per thread
            image = draw_numpy.draw(scene, rotations[i], frames[i], size, factor)
        sprite[top:top + size, left:left + size] = image

    if threads > 1 and len(rotations) > 1:
        workers = min(threads, len(rotations))
        with ThreadPoolExecutor(workers, thread_name_prefix="kiln-frame") as pool:
            list(pool.map(draw, range(len(rotations))))
    else:
        for i in range(len(rotations)):
            draw(i)
    return sprite
