"""Shared test fixtures."""

import os
from pathlib import Path

import pytest

# The shared imc-mini data set (real photos, exact poses); never copied into the repo.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "imc-mini"


@pytest.fixture(scope="session")
def imc_data_dir() -> Path:
    """`$IMC_DATA_DIR`, default ../shared/data/imc-mini beside the repo; skips when absent."""
    path = Path(os.environ.get("IMC_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "train" / "train_labels.csv").is_file():
        pytest.skip(f"{path}: no train/train_labels.csv; set IMC_DATA_DIR to the imc-mini folder")
    return path


@pytest.fixture(scope="session")
def imc25_dir(tmp_path_factory) -> Path:
    """An IMC 2025-layout folder (datasets `small`, `tabletop`; `test/` + sample_submission for `small`),
    built once per session by `$IMC25_COMPOSE` (default: imc25-mix/compose.py beside the imc-mini
    folder) with hard links; skips when the script is absent."""
    import subprocess
    import sys

    mini = Path(os.environ.get("IMC_DATA_DIR", DEFAULT_DATA_DIR))
    script = Path(os.environ.get("IMC25_COMPOSE", mini.parent / "imc25-mix" / "compose.py"))
    if not script.is_file():
        pytest.skip(f"{script}: not found; set IMC25_COMPOSE to imc25-mix/compose.py")
    out = tmp_path_factory.mktemp("imc25") / "data"
    done = subprocess.run([sys.executable, script, out, "--link"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{script} failed: {done.stderr.strip()[-500:]}")
    return out


DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "shared" / "weights"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """`$IMC_WEIGHTS_DIR`, default ../shared/weights beside the repo; skips when absent."""
    path = Path(os.environ.get("IMC_WEIGHTS_DIR", DEFAULT_WEIGHTS_DIR))
    if not (path / "aliked-n16.pth").is_file():
        pytest.skip(f"{path}: no aliked-n16.pth; set IMC_WEIGHTS_DIR to the weights folder")
    return path


def small_conf(name: str = "aliked-n16", resize_to: int = 512, max_keypoints: int = 1024) -> dict:
    """A copy of a features config cut down for fast CPU tests."""
    from imc_lib.stages import features

    conf = {**features.confs[name], "model": dict(features.confs[name]["model"])}
    conf["resize_to"] = resize_to
    conf["model"]["max_num_keypoints"] = max_keypoints
    return conf


@pytest.fixture(scope="session")
def aliked(weights_dir):
    """ALIKED-n16 loaded once for the session (1024 keypoints)."""
    from imc_lib import networks

    return networks.load_extractor(small_conf(), weights_dir, "cpu")


@pytest.fixture(scope="session")
def lightglue_aliked(weights_dir):
    from imc_lib import networks
    from imc_lib.stages import matching

    return networks.load_matcher("aliked", matching.confs["lightglue"], weights_dir, "cpu")


# Where Kaggle mounts a kernel's inputs, in its 2024 and 2026 layouts (imc_lib/kaggle_inputs.py).
KAGGLE_LAYOUTS = {
    "2024": {"competition": "{competition}", "offline": "{dataset}", "dinov2": "dinov2/pytorch/base/1"},
    "2026": {
        "competition": "competitions/{competition}",
        "offline": "datasets/{owner}/{dataset}",
        "dinov2": "models/metaresearch/dinov2/pytorch/base/1",
    },
}


def kaggle_input_paths(
    root: Path,
    layout: str,
    dataset: str = "imc-lib-offline",
    owner: str = "alice",
    competition: str = "image-matching-challenge-2024",
) -> dict[str, Path]:
    """{"competition", "offline", "dinov2"}: where `layout` mounts each input under `root` (not created)."""
    return {
        kind: root / pattern.format(competition=competition, dataset=dataset, owner=owner)
        for kind, pattern in KAGGLE_LAYOUTS[layout].items()
    }


def write_dinov2_config(folder: Path) -> Path:
    """A DINOv2 model folder as the finder knows it (config.json only: no weights, never loaded)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 768}))
    return folder


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: real runs in subprocesses, notebooks, kernels or a browser (10 s to "
        "minutes of CPU each); the default run leaves them out (pyproject.toml "
        "addopts), `python -m pytest -m slow tests` and .ci/run run them",
    )
