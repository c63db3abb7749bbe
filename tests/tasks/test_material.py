"""The material pipeline's dispatch: Substance files, PBR sets uploaded as files or zipped."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tasks.errors import TaskError
from tasks.material import process
from tasks.progress import Payload, Result
from tests.helpers.payloads import limits as all_limits
from tests.helpers.substance_files import sbsar


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _payload(tmp_path: Path, main: str, fmt: str, files: list[str]) -> Payload:
    return {"source": str(tmp_path / "files" / main), "files_dir": str(tmp_path / "files"),
            "main": main, "files": files, "format": fmt,
            "artifacts_dir": str(tmp_path / "out"), "work_dir": str(tmp_path / "work"),
            "max_pixels": 10_000_000, "limits": all_limits()}


def _stages(payload: Payload) -> tuple[Result, list[str]]:
    stages: list[str] = []
    result = process(payload, lambda stage, fraction: stages.append(stage))
    return result, list(dict.fromkeys(stages))


def test_a_zipped_texture_set_is_unpacked_and_described(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("rock/Rock_BaseColor.png", _png((150, 90, 60)))
        archive.writestr("rock/Rock_Normal.png", _png((128, 128, 255)))
        archive.writestr("rock/readme.txt", b"CC0")
    (tmp_path / "files" / "rock.zip").write_bytes(buffer.getvalue())
    result, stages = _stages(_payload(tmp_path, "rock.zip", "zip", ["rock.zip"]))
    assert stages[0] == "unpack" and "preview" in stages
    assert sorted(result["stats"]["roles"]) == ["basecolor", "normal"]
    assert "preview.png" in {a["name"] for a in result["artifacts"]}


def test_a_zip_without_a_texture_set_says_so(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", b"nothing")
    (tmp_path / "files" / "x.zip").write_bytes(buffer.getvalue())
    with pytest.raises(TaskError) as caught:
        process(_payload(tmp_path, "x.zip", "zip", ["x.zip"]), lambda s, f: None)
    assert caught.value.code == "unsupported_format" and "no texture set" in caught.value.message


def test_an_sbsar_goes_to_the_substance_reader(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    sbsar(tmp_path / "files" / "m.sbsar")
    result, stages = _stages(_payload(tmp_path, "m.sbsar", "sbsar", ["m.sbsar"]))
    assert stages[:2] == ["inspect", "extract"]
    assert result["stats"]["graphs"] >= 1


def test_an_unknown_material_format_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(TaskError) as caught:
        process(_payload(tmp_path, "x", "mdl", ["x"]), lambda s, f: None)
    assert caught.value.code == "unsupported_format"
