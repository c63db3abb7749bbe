"""Views drawn by OpenGL: moderngl on EGL, which is Mesa's llvmpipe where there is no GPU.

It draws what `tasks.draw_numpy` draws, at a cost that follows the face count rather than the
pixel count: the same orthographic camera and framing, the same corner normals (a corner at a
crease gets a vertex of its own), the same two-sided Lambert light, bilinear repeating
textures, and anti-aliasing by multisampling or, for many faces, by drawing twice as large and
averaging 2 x 2 blocks as numpy does. One context per process, made
on first use by the thread that then does all the drawing (a pool child's main thread): an EGL
context is current in the thread that made it. It takes about 600 MiB of address space (not of
memory), which counts against the child's RLIMIT_AS.
"""

from __future__ import annotations

import logging
import math
import resource
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tasks.scene import (
    AMBIENT,
    DIFFUSE,
    LIGHT,
    MARGIN,
    NORMAL_CHUNK,
    Frame,
    Scene,
    corner_normals,
)

_VERTEX = """
#version 330
in vec3 in_position;
in vec3 in_normal;          // the corner's shading normal (see `_crease_corners_split`)
in vec3 in_color;
in vec2 in_uv;
uniform mat3 rotation;      // model -> view (x right, y up, z towards the camera)
uniform vec3 centre;        // view-space point at the middle of the frame
uniform vec3 scale;         // view units -> clip units
out vec3 v_normal;
out vec3 v_color;
out vec2 v_uv;
void main() {
    vec3 view = rotation * in_position - centre;
    gl_Position = vec4(view * scale, 1.0);
    v_normal = in_normal;
    v_color = in_color;
    v_uv = in_uv;
}
"""

_FRAGMENT = """
#version 330
in vec3 v_normal;
in vec3 v_color;
in vec2 v_uv;
uniform vec3 light;        // unit, in model space
uniform bool textured;
uniform sampler2D image;
uniform float ambient;
uniform float diffuse;
out vec4 colour;
void main() {
    // v = 0 is the image's bottom row; the texture's first row is the image's top
    vec3 base = textured ? texture(image, vec2(v_uv.x, 1.0 - v_uv.y)).rgb : v_color;
    float lambert = abs(dot(v_normal, light)) / max(length(v_normal), 1e-12);
    colour = vec4(base * (ambient + diffuse * lambert), 1.0);
}
"""

_QUAD = """
#version 330
void main() {
    // one triangle that covers the viewport
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

_AVERAGE_SAMPLES = """
#version 330
uniform sampler2DMS drawn;
out vec4 colour;
void main() {
    // colour averaged over the covered samples of the pixel, alpha = the share covered
    ivec2 pixel = ivec2(gl_FragCoord.xy);
    vec4 total = texelFetch(drawn, pixel, 0) + texelFetch(drawn, pixel, 1)
        + texelFetch(drawn, pixel, 2) + texelFetch(drawn, pixel, 3);  // unrolled: a third faster
    float covered = total.a;
    colour = vec4(covered > 0.0 ? total.rgb / covered : vec3(0.0), covered * 0.25);
}
"""

_AVERAGE_BLOCKS = """
#version 330
uniform sampler2D drawn;
out vec4 colour;
void main() {
    // the same average over the pixel's 2 x 2 block of a drawing twice as large
    ivec2 pixel = ivec2(gl_FragCoord.xy) * 2;
    vec4 total = texelFetch(drawn, pixel, 0) + texelFetch(drawn, pixel + ivec2(1, 0), 0)
        + texelFetch(drawn, pixel + ivec2(0, 1), 0) + texelFetch(drawn, pixel + ivec2(1, 1), 0);
    float covered = total.a;
    colour = vec4(covered > 0.0 ? total.rgb / covered : vec3(0.0), covered * 0.25);
}
"""

_log = logging.getLogger(__name__)
TARGETS = 4
MAX_SAMPLES = 32 * 1024 * 1024
"""Samples of one anti-aliased drawing at most (256 MiB of colour and depth)."""
# llvmpipe maps about 660 MiB of address space (thread stacks, code) when its context is made
CONTEXT_ROOM = 1 << 30
SAMPLES = 4  # _AVERAGE_SAMPLES adds this many
BLOCKS_MIN_FACES = 5_000
"""From this many faces, anti-aliasing draws twice as large rather than multisampled."""
_lock = threading.RLock()
_context: Any = None


class Unavailable(RuntimeError):
    """No OpenGL 3.3 context can be made here (no EGL, no Mesa): draw with numpy instead."""


def available() -> bool:
    """Whether a context can be made (made now, and kept for the process's later drawings)."""
    try:
        _programs()
    except Unavailable:
        return False
    return True


class _Programs:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.mesh = ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self.mesh["ambient"].value = AMBIENT
        self.mesh["diffuse"].value = DIFFUSE
        self.mesh["image"].value = 0
        # each averages what the drawing's texture unit 0 holds, over the quad's pixels
        self.averages = {way: ctx.program(vertex_shader=_QUAD, fragment_shader=source)
                         for way, source in (("samples", _AVERAGE_SAMPLES),
                                             ("blocks", _AVERAGE_BLOCKS))}
        self.quads = {way: ctx.vertex_array(program, [])
                      for way, program in self.averages.items()}
        for program in self.averages.values():
            program["drawn"].value = 0
        self._targets: dict[tuple[int, int, int | None], tuple[Any, ...]] = {}

    def target(self, width: int, height: int, samples: int | None) -> Any:
        """A framebuffer of this size, kept for the next drawing of the same size.

        `samples` None: colour only; 0: colour and depth; more: multisampled colour and depth.
        Fresh memory costs more than drawing (the kernel zeroes every page of it: about 50 ms for
        a multisampled sprite); the last TARGETS
        kinds are kept (a thumbnail and a turntable need two each), the older released.
        """
        key = (width, height, samples)
        if key not in self._targets:
            while len(self._targets) >= TARGETS:
                for item in self._targets.pop(next(iter(self._targets))):
                    item.release()
            colour = self.ctx.texture((width, height), 4, samples=samples or 0)
            if not samples:
                colour.filter = (self.ctx.NEAREST, self.ctx.NEAREST)
            parts = [colour]
            if samples is not None:
                parts.append(self.ctx.depth_renderbuffer((width, height), samples=samples))
            framebuffer = self.ctx.framebuffer(
                color_attachments=[colour], depth_attachment=parts[1] if len(parts) > 1 else None)
            self._targets[key] = (framebuffer, *parts)
        self._targets[key] = self._targets.pop(key)  # most recently used last
        return self._targets[key][0]


def _programs() -> _Programs:
    global _context
    with _lock:
        if isinstance(_context, Unavailable):
            raise _context
        if _context is None:
            room = _address_space_left()
            if room < CONTEXT_ROOM:
                # llvmpipe does not fail cleanly when it cannot map its threads and code: it
                # crashes the process. Under a tight RLIMIT_AS, numpy draws instead.
                _context = Unavailable(
                    f"no room for an OpenGL context under the memory limit ({room >> 20} MiB "
                    f"of address space left, {CONTEXT_ROOM >> 20} MiB needed)")
                _log.warning("%s: drawing with numpy", _context)
                raise _context
            try:
                import moderngl

                ctx = moderngl.create_standalone_context(
                    backend="egl", require=330)  # type: ignore[arg-type]  # its stub says dict
                _context = _Programs(ctx)
            except Exception as error:  # no library, no display driver, no GL 3.3
                _context = Unavailable(f"no OpenGL context: {error}")
                _log.warning("%s: drawing with numpy", _context)
                raise _context from error
        assert isinstance(_context, _Programs)
        return _context


def _address_space_left() -> int:
    """Bytes of address space this process may still map (RLIMIT_AS minus what it has)."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return 1 << 62
    try:
        with open("/proc/self/status") as status:
            used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
    except (OSError, StopIteration, ValueError):
        return 0
    return max(0, limit - used)


def antialiasing(faces: int, width: int, height: int, largest: int) -> str | None:
    """How a drawing of `faces` faces on width x height pixels is anti-aliased, cheapest first.

    "samples": multisampled, SAMPLES a pixel; "blocks": drawn twice as large, each 2 x 2 block
    averaged (where twice the size is within `largest`, GL's largest texture); None: neither
    fits in MAX_SAMPLES. llvmpipe's multisampling costs little per pixel
    but much per face (it rasterises small faces once a sample), so many faces go by blocks.
    """
    if width * height * SAMPLES > MAX_SAMPLES:
        return None
    if faces >= BLOCKS_MIN_FACES and 2 * max(width, height) <= largest:
        return "blocks"
    return "samples"


def draw_views(
    scene: Scene, rotations: Sequence[NDArray[np.float64]], frames: Sequence[Frame],
    size: int, columns: int, antialias: bool, facing: int = 0,
) -> NDArray[np.uint8]:
    """Views laid out left to right, top to bottom in `columns` cells of size x size: RGBA uint8.

    `facing` (`tasks.topology.facing` of the scene): 1 skips faces seen from behind, -1 faces
    seen from the front; only for a scene whose every body is closed and wound that way.

    Anti-aliased (see `antialiasing`), each pixel's colour is averaged over the samples the
    model covers (its alpha is their share), as `draw_numpy` averages its 2 x 2 blocks. Only the
    box around the model's bounds is averaged in each cell: the rest stays transparent, as do
    cells without a view.
    """
    gl = _programs()
    ctx = gl.ctx
    rows = -(-len(rotations) // columns)
    width, height = columns * size, rows * size
    largest = int(ctx.info["GL_MAX_TEXTURE_SIZE"])
    way = antialiasing(len(scene.faces), width, height, largest) if antialias else None
    scale = 2 if way == "blocks" else 1
    used = scene.coords[:, scene.used]  # once: every view frames and clips by these points
    corners = _box_corners(used)
    cells = [_cell(i, columns, rows, size) for i in range(len(rotations))]
    # the pixels that hold the model's bounding box in each view: the rest stays transparent
    boxes = []
    for (left, bottom), rotation, frame in zip(cells, rotations, frames, strict=True):
        x0, y0, x1, y1 = _bounds_in_cell(corners, rotation, frame, size)
        if x1 > x0 and y1 > y0:
            boxes.append((left + x0, bottom + y0, x1 - x0, y1 - y0))
    with _lock, _scene_on_gpu(gl, scene) as draw, _state_restored(ctx):
        drawn = gl.target(width * scale, height * scale, SAMPLES if way == "samples" else 0)
        drawn.use()
        # whole: llvmpipe clears a whole multisampled target faster than the boxes alone
        drawn.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.enable(ctx.DEPTH_TEST)
        if facing:
            ctx.enable(ctx.CULL_FACE)
            ctx.front_face = "ccw" if facing > 0 else "cw"
        for (left, bottom), rotation, frame in zip(cells, rotations, frames, strict=True):
            ctx.viewport = (left * scale, bottom * scale, size * scale, size * scale)
            _set_camera(gl, used, rotation, frame)
            draw()
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        if way:
            averaged = gl.target(width, height, None)
            averaged.use()
            averaged.clear(0.0, 0.0, 0.0, 0.0)
            ctx.viewport = (0, 0, width, height)
            drawn.color_attachments[0].use(0)
            for box in boxes:
                ctx.scissor = box
                gl.quads[way].render(vertices=3)
            drawn = averaged
        pixels = drawn.read(components=4)
    image = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(image[::-1])


def _cell(index: int, columns: int, rows: int, size: int) -> tuple[int, int]:
    """(left, bottom) of a view's cell: GL counts rows from the bottom, the first row of cells
    is the top one."""
    row, column = divmod(index, columns)
    return column * size, (rows - 1 - row) * size


@contextmanager
def _state_restored(ctx: Any) -> Iterator[None]:
    """The shared context as the next drawing expects it, whatever happens in this one."""
    try:
        yield
    finally:
        ctx.scissor = None
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        ctx.front_face = "ccw"


def _box_corners(used: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """(3, 8) corners of the bounding box of the points (3, n); None without points."""
    if not used.size:
        return None
    low, high = used.min(axis=1), used.max(axis=1)
    return np.array(np.meshgrid(*zip(low, high, strict=True))).reshape(3, -1)


def _bounds_in_cell(
    corners: NDArray[np.float64] | None, rotation: NDArray[np.float64], frame: Frame, size: int
) -> tuple[int, int, int, int]:
    """Pixels (x0, y0, x1, y1), GL's way up, that hold the model's bounding box in this view."""
    if corners is None:
        return 0, 0, 0, 0
    centre_x, centre_y, extent = frame
    scale = size * (0.5 - MARGIN) / extent
    with np.errstate(all="ignore"):
        x = size / 2 + (rotation[0] @ corners - centre_x) * scale
        y = size / 2 + (rotation[1] @ corners - centre_y) * scale
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return 0, 0, size, size
    low_x, low_y = math.floor(x.min()) - 1, math.floor(y.min()) - 1
    high_x, high_y = math.ceil(x.max()) + 1, math.ceil(y.max()) + 1
    return tuple(min(max(v, 0), size) for v in (low_x, low_y, high_x, high_y))


def _set_camera(gl: _Programs, used: NDArray[np.float64], rotation: NDArray[np.float64],
                frame: Frame) -> None:
    centre_x, centre_y, extent = frame
    scale = (0.5 - MARGIN) / extent * 2.0  # view units -> clip units (the cell is 2 wide)
    depth = float(np.abs(rotation[2] @ used).max()) if used.size else 1.0
    # column-major: GLSL's `rotation * v` must be the rows of `rotation` dotted with v
    gl.mesh["rotation"].write(np.asarray(rotation.T, dtype=np.float32).tobytes())
    gl.mesh["centre"].value = (centre_x, centre_y, 0.0)
    # nearer is smaller depth; a margin keeps the nearest and farthest points inside the clip
    gl.mesh["scale"].value = (scale, scale, -1.0 / (max(depth, 1e-12) * 1.0001))
    light = rotation.T @ (np.asarray(LIGHT) / np.linalg.norm(LIGHT))
    gl.mesh["light"].value = tuple(float(v) for v in light)


@contextmanager
def _scene_on_gpu(gl: _Programs, scene: Scene) -> Iterator[Any]:
    """Upload the scene once; yields a function that draws it, part by part."""
    ctx = gl.ctx
    source, normals, faces = _crease_corners_split(scene)
    count = scene.coords.shape[1]
    uv = scene.uv if scene.uv is not None else np.zeros((count, 2), dtype=np.float32)
    buffers = [
        ctx.buffer(np.ascontiguousarray(scene.coords.T[source], dtype=np.float32)),
        ctx.buffer(normals),
        ctx.buffer(np.ascontiguousarray(scene.colors[source, :3], dtype=np.uint8)),
        ctx.buffer(np.ascontiguousarray(uv[source], dtype=np.float32)),
    ]
    indices = ctx.buffer(faces)
    del source, normals, faces
    layout = [(buffers[0], "3f", "in_position"), (buffers[1], "3f", "in_normal"),
              (buffers[2], "3f1", "in_color"), (buffers[3], "2f", "in_uv")]
    vao = ctx.vertex_array(gl.mesh, layout, index_buffer=indices, index_element_size=4)
    images = {part: _texture(ctx, image) for part, image in scene.textures.items()}
    starts = [int(s) for s in scene.part_starts] + [len(scene.faces)]

    def draw() -> None:
        for part, (first, end) in enumerate(zip(starts, starts[1:], strict=False)):
            if end == first:
                continue
            image = images.get(part)
            gl.mesh["textured"].value = image is not None
            if image is not None:
                image.use(0)
            vao.render(ctx.TRIANGLES, vertices=3 * (end - first), first=3 * first)

    try:
        yield draw
    finally:
        for item in (vao, indices, *buffers, *images.values()):
            item.release()


def _crease_corners_split(
    scene: Scene,
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.uint32]]:
    """The vertices to draw, with the shading normal of every corner (`tasks.scene.corner_normals`).

    A corner whose shading normal is not its vertex's smooth one (a crease, or a face turned
    the other way) gets a vertex of its own. Returns each drawn vertex's scene vertex, its
    normal, and the faces re-indexed: the scene's vertices first, in order, then the added ones.
    (A geometry shader that picked the normal per corner cost llvmpipe a fifth of the drawing.)
    """
    count = scene.coords.shape[1]
    faces = np.array(scene.faces, dtype=np.uint32)
    sources, normals = [np.arange(count)], [scene.vertex_normals]
    added = count
    for first in range(0, len(faces), NORMAL_CHUNK):
        block = scene.faces[first:first + NORMAL_CHUNK]
        shading = corner_normals(scene, block)
        face, corner = np.nonzero((shading != scene.vertex_normals[block]).any(axis=2))
        if len(face):
            faces[first + face, corner] = np.arange(added, added + len(face))
            sources.append(block[face, corner])
            normals.append(shading[face, corner])
            added += len(face)
    return (np.concatenate(sources), np.ascontiguousarray(np.concatenate(normals)), faces)


def _texture(ctx: Any, image: NDArray[np.uint8]) -> Any:
    limit = int(ctx.info["GL_MAX_TEXTURE_SIZE"])
    step = -(-max(image.shape[:2]) // limit)  # a larger texture would be drawn black
    if step > 1:
        image = image[::step, ::step]
    height, width = image.shape[:2]
    texture = ctx.texture((width, height), 3, np.ascontiguousarray(image[:, :, :3]), alignment=1)
    # mipmaps: a texture shrunk on screen is averaged, as numpy's four samples a pixel average it
    texture.build_mipmaps()
    texture.filter = (ctx.LINEAR_MIPMAP_LINEAR, ctx.LINEAR)
    texture.repeat_x = texture.repeat_y = True
    return texture
