"""Finding the Kaggle inputs (imc_lib/kaggle_inputs.py) in simulated /kaggle/input trees, 2024 and
2026 layouts, with and without a DINOv2 model, among folders that only look similar."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import kaggle_input_paths, write_dinov2_config
from imc_lib.formats import data, kaggle_inputs

DATASET = "alice-wheels"


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    for name in (*kaggle_inputs.ENV.values(), "IMC_KAGGLE_INPUT"):
        monkeypatch.delenv(name, raising=False)


def make_competition(folder: Path) -> Path:
    for scene in ("church", "lizard"):
        (folder / "test" / scene / "images").mkdir(parents=True)
        (folder / "test" / scene / "images" / "0001.png").write_bytes(b"")
        (folder / "train" / scene / "images").mkdir(parents=True)
    (folder / "sample_submission.csv").write_text("image_path,dataset,scene,rotation_matrix,translation_vector\n")
    # Deep inside the competition: never searched, since the competition folder is not entered.
    write_dinov2_config(folder / "train" / "church" / "model")
    return folder


def make_competition_2025(folder: Path) -> Path:
    """The IMC 2025 competition's files: flat test/<dataset>/ folders, sample_submission with image_id."""
    (folder / "test" / "stairs").mkdir(parents=True)
    (folder / "test" / "stairs" / "image_0001.png").write_bytes(b"")
    (folder / "train" / "stairs").mkdir(parents=True)
    (folder / "sample_submission.csv").write_text(
        "image_id,dataset,scene,image,rotation_matrix,translation_vector\n"
        "stairs_image_0001_public,stairs,cluster1,image_0001.png,1;0;0;0;1;0;0;0;1,0;0;0\n"
    )
    return folder


def make_offline(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "requirements.txt").write_text("imc_lib==0.1.0\n")
    (folder / "imc_lib-0.1.0-py3-none-any.whl").write_bytes(b"")
    return folder


def make_tree(root: Path, layout: str, dinov2: bool = True, competition: bool = True) -> dict[str, Path]:
    """A simulated /kaggle/input with look-alikes: a dataset without the wheel, a ViT model, bad JSON."""
    paths = kaggle_input_paths(root, layout, dataset=DATASET)
    if competition:
        make_competition(paths["competition"])
    make_offline(paths["offline"])
    if dinov2:
        write_dinov2_config(paths["dinov2"])
    other = paths["offline"].with_name("other-dataset")
    other.mkdir(parents=True)
    (other / "requirements.txt").write_text("numpy\n")
    vit = paths["dinov2"].parents[3] / "vit" / "pytorch" / "base" / "1"
    vit.mkdir(parents=True)
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (root / "notes").mkdir()
    (root / "notes" / "config.json").write_text("{not json")
    return paths


@pytest.mark.parametrize("dinov2", [True, False], ids=["dinov2", "no-dinov2"])
@pytest.mark.parametrize("layout", ["2024", "2026"])
def test_finds_every_input_in_both_layouts(tmp_path, caplog, layout, dinov2):
    paths = make_tree(tmp_path, layout, dinov2=dinov2)
    with caplog.at_level(logging.INFO, logger="imc_lib"):
        found = kaggle_inputs.find_inputs(tmp_path, dataset=DATASET)
    assert found.competition == paths["competition"]
    assert found.offline == paths["offline"]
    assert found.dinov2 == (paths["dinov2"] if dinov2 else None)
    report = found.report()
    assert report[0] == f"competition data: {paths['competition']} (found under {tmp_path})"
    if dinov2:
        assert report[2] == f"DINOv2 model: {paths['dinov2']} (found under {tmp_path})"
    else:
        assert report[2].startswith(f"DINOv2 model: NOT FOUND (searched {tmp_path}, 6 levels deep, for a config.json")
    logged = [r.getMessage() for r in caplog.records]
    assert all(line in logged for line in report)  # what was found where, in the log


def test_no_competition_raises_naming_the_root_and_what_was_searched(tmp_path):
    make_tree(tmp_path, "2026", competition=False)
    with pytest.raises(FileNotFoundError) as err:
        kaggle_inputs.find_inputs(tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: no competition data")
    assert "a sample_submission.csv beside a test/ folder" in message and "6 levels" in message
    assert "image-matching-challenge-2024" in message and "IMC_DATA_DIR" in message


def test_search_depth_is_bounded(tmp_path):
    make_competition(tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "competition")  # 7 levels down
    with pytest.raises(FileNotFoundError):
        kaggle_inputs.find_inputs(tmp_path)
    assert kaggle_inputs.find_inputs(tmp_path, max_depth=7).competition.name == "competition"


def test_environment_overrides_the_search(tmp_path, monkeypatch):
    paths = make_tree(tmp_path / "input", "2026")
    mine = make_competition(tmp_path / "mine")
    monkeypatch.setenv("IMC_DATA_DIR", str(mine))
    monkeypatch.setenv("IMC_OFFLINE_DIR", str(tmp_path / "wheels"))
    found = kaggle_inputs.find_inputs(tmp_path / "input")
    assert (found.competition, found.offline, found.dinov2) == (mine, tmp_path / "wheels", paths["dinov2"])
    assert found.report()[0].endswith("(from $IMC_DATA_DIR)")
    monkeypatch.setenv("IMC_DINOV2", str(tmp_path / "no-dinov2"))  # not a model: no DINOv2, said why
    found = kaggle_inputs.find_inputs(tmp_path / "input")
    assert found.dinov2 is None
    assert f"$IMC_DINOV2={tmp_path / 'no-dinov2'}: not a folder with a config.json" in found.report()[2]


def test_root_from_the_environment(tmp_path, monkeypatch):
    paths = make_tree(tmp_path, "2024")
    monkeypatch.setenv("IMC_KAGGLE_INPUT", str(tmp_path))
    assert kaggle_inputs.find_inputs().competition == paths["competition"]


def test_several_candidates_the_named_one_then_the_shallowest_and_said(tmp_path, caplog):
    make_competition(tmp_path / "competitions" / "image-matching-challenge-2024")
    old = make_offline(tmp_path / "zz-old-wheels")
    named = make_offline(tmp_path / "datasets" / "alice" / DATASET)
    assert kaggle_inputs.find_inputs(tmp_path, dataset=DATASET).offline == named
    with caplog.at_level(logging.WARNING, logger="imc_lib"):
        assert kaggle_inputs.find_inputs(tmp_path, dataset="unknown").offline == old  # shallowest
    assert any(
        "2 folders look like the offline dataset" in r.getMessage() and "IMC_OFFLINE_DIR" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("layout", ["2024", "2026"])
def test_the_2025_competition_is_found_alone_and_its_year_told_by_its_files(tmp_path, layout):
    paths = make_tree(tmp_path, layout, competition=False)
    where = kaggle_input_paths(tmp_path, layout, dataset=DATASET, competition=kaggle_inputs.COMPETITIONS["2025"])
    make_competition_2025(where["competition"])
    found = kaggle_inputs.find_inputs(tmp_path, dataset=DATASET)  # prefers 2024 by default, finds 2025 alone
    assert found.competition == where["competition"] and found.offline == paths["offline"]
    assert found.report()[0] == f"competition data: {where['competition']} (found under {tmp_path})"
    assert data.layout(found.competition, "test") == "2025"


def test_with_both_competitions_attached_the_preferred_one_is_taken_and_said(tmp_path, caplog):
    paths = make_tree(tmp_path, "2026")
    imc25 = make_competition_2025(tmp_path / "competitions" / kaggle_inputs.COMPETITIONS["2025"])
    with caplog.at_level(logging.WARNING, logger="imc_lib"):
        assert kaggle_inputs.find_inputs(tmp_path).competition == paths["competition"]  # IMC 2024, as before
    assert any("2 folders look like the competition data" in r.getMessage() for r in caplog.records)
    assert kaggle_inputs.find_inputs(tmp_path, competition=kaggle_inputs.COMPETITIONS["2025"]).competition == imc25
    assert data.layout(paths["competition"], "test") == "2024" and data.layout(imc25, "test") == "2025"


def test_recognisers():
    assert not kaggle_inputs.is_dinov2(Path("/nonexistent"))
    assert not kaggle_inputs.is_competition(Path("/nonexistent"))
    assert not kaggle_inputs.is_offline_dataset(Path("/nonexistent"))
