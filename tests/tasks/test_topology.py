"""Surface facts agree with trimesh's own answers on closed, open, flipped, split and
non-manifold meshes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trimesh

from tasks.topology import surface_facts
from tests.conftest import corpus


def _cases() -> dict[str, trimesh.Trimesh]:
    box = trimesh.creation.box()
    flipped = box.copy()
    flipped.faces[0] = flipped.faces[0][::-1]
    opened = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)
    two = trimesh.util.concatenate([box, trimesh.creation.box().apply_translation([5, 0, 0])])
    fin = trimesh.Trimesh(np.vstack([box.vertices, [[0, 0, 3]]]),
                          np.vstack([box.faces, [[0, 1, 8]]]), process=False)
    sphere = trimesh.load_mesh(corpus("STL/sphereWithHole.stl"))
    torus = trimesh.creation.torus(major_radius=2, minor_radius=0.5)
    return {"box": box, "flipped": flipped, "open": opened, "two": two, "fin": fin,
            "sphere with a hole": sphere, "torus": torus}


@pytest.mark.parametrize("name", list(_cases()))
def test_facts_match_trimesh(name: str) -> None:
    mesh = _cases()[name]
    facts = surface_facts(np.asarray(mesh.vertices, dtype=np.float64),
                          np.asarray(mesh.faces, dtype=np.int64))
    assert facts.area == pytest.approx(mesh.area)
    assert facts.watertight is bool(mesh.is_watertight)
    closed = bool(mesh.is_watertight and mesh.is_winding_consistent)
    assert facts.winding_consistent is closed or not facts.watertight
    assert (facts.volume is not None) is closed
    if closed:
        assert facts.volume == pytest.approx(abs(mesh.volume))
    assert facts.bodies == mesh.body_count


@pytest.mark.parametrize("relative", ["OBJ/spider.obj", "STL/Spider_binary.stl",
                                      "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"])
def test_weld_matches_trimesh_merge(relative: str) -> None:
    from tasks.topology import weld

    scene = trimesh.load_scene(corpus(relative), process=False)
    mesh = scene.to_mesh()  # every placed mesh, seams and all
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    welded = weld(vertices, faces)
    assert welded is not None
    merged = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    assert len(welded[0]) == len(merged.vertices) < len(vertices)
    ours = surface_facts(*welded)
    assert ours.bodies == merged.body_count
    assert ours.watertight is bool(merged.is_watertight)
    # the same triangles, by position
    assert np.allclose(np.sort(welded[0][welded[1]].reshape(-1, 9), axis=0),
                       np.sort(merged.vertices[merged.faces].reshape(-1, 9), axis=0))


def test_a_box_centred_on_the_origin_welds_without_a_collision() -> None:
    from tasks.topology import weld

    # +x+y and -x-y differ in two sign bits: a hash that only multiplied cancelled them out
    box = trimesh.creation.box()
    welded = weld(np.asarray(box.vertices), np.asarray(box.faces, dtype=np.int64))
    assert welded is not None and len(welded[0]) == 8


def test_a_hash_collision_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import topology

    zero = np.uint64(0)
    monkeypatch.setattr(topology, "_MIX", (zero, zero, zero))  # every position hashes alike
    box = trimesh.creation.box()
    assert topology.weld(np.asarray(box.vertices), np.asarray(box.faces, dtype=np.int64)) is None


def test_facing_tells_which_way_closed_bodies_turn() -> None:
    from tasks.topology import facing

    def arrays(mesh: Any) -> tuple[Any, Any]:
        return np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64)

    box = trimesh.creation.box()
    inverted = box.copy()
    inverted.invert()
    far = trimesh.creation.box()
    far.apply_translation([5, 0, 0])
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-1])
    assert facing(*arrays(box)) == 1
    assert facing(*arrays(inverted)) == -1
    assert facing(*arrays(open_box)) == 0
    assert facing(*arrays(trimesh.util.concatenate([box, far]))) == 1
    assert facing(*arrays(trimesh.util.concatenate([inverted, far]))) == 0  # one each way
