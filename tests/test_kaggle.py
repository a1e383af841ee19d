"""Kaggle packaging (imc_lib/kaggle.py, submission/) and the data download script."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from imc_lib import cli, kaggle

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD = ROOT / "data" / "download.sh"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One offline build with a tiny fake weights folder and custom Kaggle names."""
    tmp = tmp_path_factory.mktemp("kaggle")
    weights = tmp / "weights"
    weights.mkdir()
    for name in ("aliked-n16.pth", "aliked_lightglue.pth", "disk_lightglue.pth", "notes.txt"):
        (weights / name).write_bytes(name.encode())
    saved = {k: os.environ.pop(k, None)
             for k in ("IMC_KAGGLE_USER", "KAGGLE_USERNAME", "IMC_KAGGLE_DATASET", "IMC_KAGGLE_KERNEL")}
    os.environ.update(IMC_KAGGLE_USER="alice", IMC_KAGGLE_DATASET="alice-wheels")
    try:
        assert cli.main(["kaggle", "build", str(tmp / "out"), "--offline", "--weights", str(weights)]) == 0
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    return tmp / "out", weights


def test_build_makes_two_folders_with_valid_metadata(built):
    out, _ = built
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "kernel"]
    dataset = json.loads((out / "dataset/dataset-metadata.json").read_text())
    kernel = json.loads((out / "kernel/kernel-metadata.json").read_text())
    assert dataset["id"] == "alice/alice-wheels"
    assert kernel["id"] == "alice/imc-lib-imc24-submission"
    assert kernel["dataset_sources"] == [dataset["id"]]
    assert kernel["competition_sources"] == ["image-matching-challenge-2024"]
    assert kernel["model_sources"] == ["metaresearch/dinov2/pyTorch/base/1"]
    assert kernel["enable_gpu"] is True and kernel["enable_internet"] is False
    assert kernel["machine_shape"] == "NvidiaTeslaT4"  # not the P100 default, which current torch cannot run
    assert kernel["kernel_type"] == "notebook" and kernel["language"] == "python"
    assert (out / "kernel" / kernel["code_file"]).is_file()
    # Kaggle requires the title to slugify to the kernel's slug.
    assert kernel["title"].lower().replace(" ", "-") == kernel["id"].split("/")[1]
    assert 6 <= len(dataset["title"]) <= 50 and 20 <= len(dataset["subtitle"]) <= 80
    assert len(dataset["licenses"]) == 1


def test_dataset_lists_every_file_and_holds_wheel_requirements_and_weights(built):
    out, weights = built
    dataset = json.loads((out / "dataset/dataset-metadata.json").read_text())
    files = {p.name for p in (out / "dataset").iterdir()} - {"dataset-metadata.json"}
    assert {r["path"] for r in dataset["resources"]} == files
    assert all(r["description"] for r in dataset["resources"])
    assert files == {"imc_lib-0.1.0-py3-none-any.whl", "requirements.txt", "aliked-n16.pth", "aliked_lightglue.pth",
                     "disk_lightglue.pth"}  # known weight files only
    for name in ("aliked-n16.pth", "aliked_lightglue.pth"):
        assert (out / "dataset" / name).read_bytes() == (weights / name).read_bytes()
    requirements = (out / "dataset/requirements.txt").read_text().split()
    assert requirements[0] == "imc_lib==0.1.0"
    assert [r.split("==")[0] for r in requirements[1:]] == list(kaggle.SHIPPED)
    with zipfile.ZipFile(out / "dataset/imc_lib-0.1.0-py3-none-any.whl") as wheel:
        packed = set(wheel.namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "imc_lib").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= packed


def test_kernel_notebook_reads_the_built_dataset(built):
    out, _ = built
    notebook = json.loads((out / "kernel/imc24_submission.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    assert 'KAGGLE_DATASET = "alice-wheels"' in code
    assert all(c.get("outputs", []) == [] for c in notebook["cells"] if c["cell_type"] == "code")
    committed = json.loads((ROOT / "notebooks/imc24_submission.ipynb").read_text())
    assert len(notebook["cells"]) == len(committed["cells"])


def test_rebuild_replaces_a_build_but_never_other_folders(built, tmp_path, monkeypatch):
    _, weights = built
    for name in ("IMC_KAGGLE_USER", "KAGGLE_USERNAME", "IMC_KAGGLE_DATASET", "IMC_KAGGLE_KERNEL"):
        monkeypatch.delenv(name, raising=False)
    assert kaggle.build(tmp_path, offline=True, weights=weights) == 0
    assert kaggle.build(tmp_path, offline=True, weights=weights) == 0  # replaces its own output
    assert json.loads((tmp_path / "kernel/kernel-metadata.json").read_text())["id"].startswith(
        f"{kaggle.PLACEHOLDER_USER}/")
    other = tmp_path / "elsewhere"
    (other / "dataset").mkdir(parents=True)
    (other / "dataset" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an earlier build"):
        kaggle.build(other, offline=True, weights=weights)
    assert (other / "dataset" / "mine.txt").read_text() == "keep me"


def test_build_errors_name_the_missing_weights_and_bad_slugs(tmp_path, capsys):
    empty = tmp_path / "weights"
    empty.mkdir()
    assert cli.main(["kaggle", "build", str(tmp_path / "out"), "--offline", "--weights", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "aliked-n16.pth" in err and "--weights" in err
    assert not (tmp_path / "out" / "dataset").exists()
    with pytest.raises(ValueError, match="dataset slug"):
        kaggle.kaggle_names(user="alice", dataset="Not A Slug")


def test_templates_are_valid_with_placeholders():
    kernel = json.loads((ROOT / "submission/kernel-metadata.json").read_text())
    dataset = json.loads((ROOT / "submission/dataset-metadata.json").read_text())
    assert kernel["dataset_sources"] == [dataset["id"]]
    assert kernel["id"].startswith(kaggle.PLACEHOLDER_USER + "/")
    assert kernel["code_file"] == kaggle.NOTEBOOK


def test_template_gpu_is_a_t4_and_a_p100_is_refused(monkeypatch):
    assert json.loads((ROOT / "submission/kernel-metadata.json").read_text())["machine_shape"] == kaggle.MACHINE_SHAPE
    names = kaggle.kaggle_names("alice")
    template = kaggle._template("kernel-metadata.json")
    monkeypatch.setattr(kaggle, "_template", lambda name: {k: v for k, v in template.items() if k != "machine_shape"})
    assert kaggle.kernel_metadata(names)["machine_shape"] == kaggle.MACHINE_SHAPE  # absent: the T4
    monkeypatch.setattr(kaggle, "_template", lambda name: {**template, "machine_shape": "NvidiaTeslaP100"})
    with pytest.raises(ValueError, match="kernel-metadata.json: machine_shape 'NvidiaTeslaP100'.*NvidiaTeslaT4"):
        kaggle.kernel_metadata(names)


def test_every_requirement_is_shipped_or_on_kaggle():
    assert kaggle.unclassified_requirements() == []
    assert not set(kaggle.SHIPPED) & set(kaggle.KAGGLE_PROVIDED)


def test_download_command_targets_kaggles_platform(tmp_path):
    args = kaggle.download_command(tmp_path, "3.12", ["pycolmap==4.2.1"])
    assert args[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:"} <= set(args)
    assert args[args.index("--python-version") + 1] == "3.12"
    platforms = {args[i + 1] for i, a in enumerate(args) if a == "--platform"}
    assert {"manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_35_x86_64"} <= platforms
    assert args[-1] == "pycolmap==4.2.1"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _download(tmp: Path, path: str) -> subprocess.CompletedProcess:
    """Run data/download.sh with an empty HOME, no Kaggle variables and PATH=`path`, into tmp/dest."""
    env = {"HOME": str(tmp / "home"), "PATH": path, "LANG": "C.UTF-8"}
    return subprocess.run(["bash", str(DOWNLOAD), "--data-dir", str(tmp / "dest/imc-2024"),
                           "--weights-dir", str(tmp / "dest/weights")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_download_without_kaggle_cli_stops_and_changes_nothing(tmp_path):
    (tmp_path / "home").mkdir()
    before = _tree(tmp_path)
    proc = _download(tmp_path, "/usr/bin:/bin")
    assert proc.returncode != 0
    assert "Kaggle CLI" in proc.stderr and "pip install kaggle" in proc.stderr
    assert "nothing was downloaded or changed" in proc.stderr
    assert _tree(tmp_path) == before


def test_download_without_credentials_stops_before_calling_kaggle(tmp_path):
    (tmp_path / "home").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "kaggle"  # records any call; the script must not make one
    stub.write_text(f"#!/bin/sh\ntouch {tmp_path / 'kaggle-was-called'}\n")
    stub.chmod(0o755)
    before = _tree(tmp_path)
    proc = _download(tmp_path, f"{bin_dir}:/usr/bin:/bin")
    assert proc.returncode != 0
    assert "no Kaggle credentials" in proc.stderr and "kaggle.com/settings" in proc.stderr
    assert "competitions/image-matching-challenge-2024/rules" in proc.stderr
    assert _tree(tmp_path) == before


def test_download_help():
    proc = subprocess.run(["bash", str(DOWNLOAD), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--weights-dir" in proc.stdout
