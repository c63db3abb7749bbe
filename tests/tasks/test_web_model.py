"""The web model and its LODs: textures embedded as they were read, and LODs that land near
their ratio (quadric collapses, then vertex clustering where those stop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from tests.conftest import CORPUS
from tests.tasks.test_mesh import BOX_GLTF, run


def test_the_web_model_embeds_textures_as_they_were_read(tmp_path: Path) -> None:
    from tests.tasks.test_draco import unpack_glb

    result, _ = run(tmp_path, BOX_GLTF, "gltf", full=True)
    assert "model.glb" in {artifact["name"] for artifact in result["artifacts"]}
    tree, (data,) = unpack_glb((tmp_path / "artifacts" / "model.glb").read_bytes())
    (image,) = tree["images"]
    view = tree["bufferViews"][image["bufferView"]]
    start = view.get("byteOffset", 0)
    embedded = data[start:start + view["byteLength"]]
    # the PNG's own bytes (trimesh pads the view to 4 bytes): not decoded and encoded again,
    # which takes a quarter of a second for 1024 px
    original = (CORPUS / "glTF2/BoxTextured-glTF/CesiumLogoFlat.png").read_bytes()
    assert embedded.startswith(original) and len(embedded) - len(original) < 4
    assert image["mimeType"] == "image/png"


def test_a_texture_made_in_memory_is_still_encoded_into_the_web_model(tmp_path: Path) -> None:
    from PIL import Image

    from tasks.web_model import write_glb
    from tests.tasks.test_draco import load_glb

    box = trimesh.creation.box()
    uv = np.zeros((len(box.vertices), 2))
    material = trimesh.visual.material.PBRMaterial(  # type: ignore[no-untyped-call]
        baseColorTexture=Image.new("RGB", (8, 8), (250, 10, 10)))
    box.visual = trimesh.visual.TextureVisuals(  # type: ignore[no-untyped-call]
        uv=uv, material=material)
    write_glb(trimesh.Scene(box), tmp_path / "model.glb")
    (mesh,) = load_glb((tmp_path / "model.glb").read_bytes()).geometry.values()
    texture = mesh.visual.material.baseColorTexture
    assert texture.size == (8, 8) and texture.convert("RGB").getpixel((3, 3)) == (250, 10, 10)


def test_lods_land_within_five_points_of_their_ratio(tmp_path: Path) -> None:
    # the engine: 86 loose parts, 19,349 open edges, 11,813 shared by more than two faces;
    # quadric collapses stopped at 45% for the 10% level
    engine = "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"
    result, _ = run(tmp_path, {"engine.glb": engine}, "glb", full=True, lod_min_faces=100)
    lods = result["stats"]["lods"]
    assert [lod["ratio"] for lod in lods] == [0.5, 0.1]
    for lod in lods:
        assert abs(lod["reached"] - lod["ratio"]) <= 0.05
        assert lod["reached"] == round(lod["faces"] / result["stats"]["faces"], 4)
    assert lods[0]["method"] == "quadric" and "why" not in lods[0]
    assert lods[1]["method"] == "clustering" and "Quadric simplification stopped" in lods[1]["why"]


def test_clustering_reaches_its_target_on_anything() -> None:
    from tasks.clustering import clustered

    loose = [trimesh.creation.box().apply_translation([3 * i, 0, 0]) for i in range(40)]
    sphere = trimesh.creation.icosphere(subdivisions=4)  # 5,120 faces
    mesh: Any = trimesh.util.concatenate([*loose, sphere])
    points = np.asarray(mesh.vertices, dtype=np.float32)
    triangles = np.asarray(mesh.faces, dtype=np.int32)
    for target in (2_000, 1_000):
        simpler, faces = clustered(points, triangles, target)
        assert 0.8 * target <= len(faces) <= target
        assert faces.max() < len(simpler) and np.isfinite(simpler).all()
        assert len(np.unique(faces)) == len(simpler)  # no point left unused
    # 40 boxes cannot keep 12 faces each in 100: the whole is one box then, never more
    assert len(clustered(points, triangles, 100)[1]) <= 100


def test_clustering_never_leaves_a_lod_without_faces() -> None:
    from tasks.clustering import clustered

    # small triangles far apart: a grid coarse enough for few faces collapses every one
    rng = np.random.default_rng(3)
    centres = rng.random((20_000, 3)) * 1000
    points = (centres[:, None, :] + rng.random((20_000, 3, 3)) * 1e-6).reshape(-1, 3)
    triangles = np.arange(len(points), dtype=np.int32).reshape(-1, 3)
    simpler, faces = clustered(points.astype(np.float32), triangles, 2_000)
    assert len(faces) > 0 and faces.max() < len(simpler)
