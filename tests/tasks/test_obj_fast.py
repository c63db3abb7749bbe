"""The fast path for plain OBJ files gives what trimesh's parser gives, and steps aside for
anything that is not plain."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from tasks.obj_fast import load_plain_obj
from tasks.resolver import UploadResolver
from tests.conftest import corpus


def _textured_sphere_obj() -> bytes:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    uv = np.random.default_rng(7).random((len(sphere.vertices), 2))
    sphere.visual = trimesh.visual.TextureVisuals(uv=uv)  # type: ignore[no-untyped-call]
    text: str = trimesh.exchange.obj.export_obj(sphere, include_texture=True,  # type: ignore[no-untyped-call]
                                                include_normals=True)
    return text.encode()


def _trimesh(data: bytes) -> trimesh.Trimesh:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = trimesh.load_scene(io.BytesIO(data), file_type="obj")
    (mesh,) = scene.geometry.values()
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def _fast(data: bytes, tmp_path: Path) -> trimesh.Scene | None:
    return load_plain_obj(data, UploadResolver(tmp_path, [], max_pixels=10**6), min_bytes=0)


def test_plain_obj_matches_trimesh(tmp_path: Path) -> None:
    data = _textured_sphere_obj()
    scene = _fast(data, tmp_path)
    assert scene is not None
    (fast,) = scene.geometry.values()
    slow = _trimesh(data)
    assert (len(fast.vertices), len(fast.faces)) == (len(slow.vertices), len(slow.faces))
    assert fast.area == pytest.approx(slow.area)
    assert np.allclose(fast.bounds, slow.bounds)
    assert fast.visual.uv.shape == (len(fast.vertices), 2)
    # the same triangles, corner for corner, by position
    fast_corners = np.sort(fast.vertices[fast.faces].reshape(-1, 9), axis=0)
    slow_corners = np.sort(slow.vertices[slow.faces].reshape(-1, 9), axis=0)
    assert np.allclose(fast_corners, slow_corners)


@pytest.mark.parametrize("change", [
    lambda d: d.replace(b"f ", b"usemtl a\nf ", 1) + b"usemtl b\n",  # two materials
    lambda d: d + b"v 1 2 3\n",                                     # vertices after the faces
    lambda d: d.replace(b"f 1/", b"f -1/", 1),                      # relative indices
    lambda d: d + b"f 1 2 3 4\n",                                   # a quad, another shape
    lambda d: d.replace(b"\nv ", b"\nv nan ", 1),                   # an unreadable number
])
def test_anything_not_plain_goes_to_trimesh(tmp_path: Path, change: object) -> None:
    assert callable(change)
    assert _fast(change(_textured_sphere_obj()), tmp_path) is None


def test_small_files_are_left_to_trimesh(tmp_path: Path) -> None:
    data = corpus("OBJ/box.obj").read_bytes()
    assert load_plain_obj(data, UploadResolver(tmp_path, [], max_pixels=10**6)) is None


@pytest.mark.parametrize("intruder", [b"s off\n", b"g part\n", b"usemtl other\n",
                                      b"vn 0 0 1\n", b"l 1 2\n", b"# a comment\n"])
def test_any_statement_among_the_faces_sends_the_file_to_trimesh(tmp_path: Path,
                                                                  intruder: bytes) -> None:
    data = _textured_sphere_obj()
    first, last = data.index(b"\nf "), data.rindex(b"\nf ")
    middle = data.index(b"\nf ", (first + last) // 2) + 1  # a line inside the block of faces
    assert _fast(data[:middle] + intruder + data[middle:], tmp_path) is None
