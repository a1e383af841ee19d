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
