"""The notebooks: each .ipynb matches its jupytext .py, and both run headless on one real scene.

The submission notebook runs first and the exploration notebook then shares its work folder,
so it reuses the features, matches and model (the stages resume by file name).
"""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from imc_lib.formats import data, metric, submission

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SCENE = "herzjesu-p8"
WIDGET = "application/vnd.jupyter.widget-view+json"
SOURCES = sorted(p for p in NOTEBOOKS.glob("*.py") if p.read_text().startswith("# ---\n# jupyter:"))


def cells(notebook) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


def test_there_are_notebooks():
    assert {p.name for p in SOURCES} >= {"imc24_submission.py", "explore.py"}


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_ipynb_in_sync_with_py(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired}: missing; run `jupytext --sync {source}`"
    assert cells(jupytext.read(paired)) == cells(jupytext.read(source)), (
        f"{paired} is out of sync with {source}; run `jupytext --sync {source}`"
    )


def outputs(notebook, kind: str) -> list:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == kind]


def execute(name: str, out_dir: Path):
    """Run notebooks/`name` in a fresh kernel (cwd notebooks/); the executed copy lands in out_dir."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    nbformat.write(notebook, out_dir / name)
    return notebook


def notebook_env(tmp: Path, data_dir: Path, weights_dir: Path) -> dict[str, str]:
    """Settings for herzjesu-p8 at 1024 keypoints on CPU, work and outputs under `tmp`."""
    return {
        "IMC_DATA_DIR": str(data_dir),
        "IMC_SPLIT": "train",
        "IMC_SCENES": SCENE,
        "IMC_SCENE": SCENE,
        "IMC_WEIGHTS_DIR": str(weights_dir),
        "IMC_WORK": str(tmp / "work"),
        "IMC_OUT": str(tmp / "submission.csv"),
        "IMC_DINOV2": str(tmp / "no-dinov2"),
        "IMC_DEVICE": "cpu",
        "IMC_MAX_KEYPOINTS": "1024",
        "IMC_MIN_KEYPOINTS": "1024",
        "IMC_SKIP_INSTALL": "1",
        # The photos are upright; the orientation stage would double the run time on 2 CPU cores.
        "IMC_ORIENTATION": "none",
        "PLOTLY_RENDERER": "plotly_mimetype",  # plotly figures as JSON, not 4 MB of inline plotly.js
    }


@pytest.fixture(scope="module")
def executed(tmp_path_factory, imc_data_dir, weights_dir):
    """Both notebooks, run through the environment variables (which the kernels inherit)."""
    tmp = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in notebook_env(tmp, imc_data_dir, weights_dir).items():
            mp.setenv(key, value)
        yield tmp, {name: execute(name, tmp) for name in ("imc24_submission.ipynb", "explore.ipynb")}


@pytest.mark.slow  # executes a notebook on a real scene
def test_submission_notebook_writes_a_scored_submission(executed, imc_data_dir):
    tmp, _ = executed
    table = pd.read_csv(tmp / "submission.csv")
    (scene,) = data.load_scenes(imc_data_dir, "train", [SCENE])
    assert sorted(table["image_path"]) == sorted(scene.image_paths)
    assert list(table.columns) == submission.SUBMISSION_COLUMNS
    labels = submission.read_poses(imc_data_dir / "train/train_labels.csv", "labels")
    scores = metric.score(
        labels[labels["scene"] == SCENE], tmp / "submission.csv", categories=imc_data_dir / "train/categories.csv"
    )
    assert scores["mAA"].iloc[0] >= 1.0  # the SIFT floor for herzjesu-p8


@pytest.mark.slow  # executes a notebook on a real scene
def test_submission_notebook_reports_stage_times_and_score(executed):
    _, notebooks = executed
    text = "\n".join(o.get("text", "") for o in outputs(notebooks["imc24_submission.ipynb"], "stream"))
    assert "notebook" in text and "limit" in text  # the time summary line
    assert "time guard: skipping" not in text and " runs at " not in text  # 9 hours hold one small scene
    tables = [o for o in outputs(notebooks["imc24_submission.ipynb"], "execute_result") if "text/html" in o.data]
    assert any("matching" in o.data["text/html"] for o in tables)  # the per-stage time table
    assert any(SCENE in line and "1.000" in line for line in text.splitlines())  # the score table
    # Each stage's loop is one progress widget (ipywidgets, as on Kaggle), not a stream of bar refreshes.
    bars = [o for o in outputs(notebooks["imc24_submission.ipynb"], "display_data") if WIDGET in o.data]
    assert len(bars) >= 2 and "\r" not in text and len(text.splitlines()) < 100


@pytest.mark.slow  # executes a notebook on a real scene
def test_submission_notebook_shows_the_report_of_its_run(executed):
    tmp, notebooks = executed
    shown = [o.data["text/html"] for o in outputs(notebooks["imc24_submission.ipynb"], "display_data")
             if "text/html" in o.data and "<iframe srcdoc=" in o.data["text/html"]]  # fmt: skip
    assert len(shown) == 1 and (tmp / "report.html").is_file()
    assert shown[0].count("class=&quot;thumb&quot;") == 8 and "plot3d" in shown[0]  # the run's report, inlined


@pytest.mark.slow  # executes a notebook on a real scene
def test_time_guard_skips_what_cannot_fit_and_still_writes_every_row(tmp_path, imc_data_dir, weights_dir, monkeypatch):
    for key, value in notebook_env(tmp_path, imc_data_dir, weights_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMC_TIME_LIMIT_S", "60")  # less than the reserve: no time for any scene
    nb = execute("imc24_submission.ipynb", tmp_path)
    text = "\n".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert f"time guard: skipping {SCENE}" in text
    poses = submission.read_poses(tmp_path / "submission.csv")
    assert len(poses) == 8
    assert all((R == np.eye(3)).all() for R in poses["R"])  # placeholder poses
    assert not (tmp_path / "work" / SCENE).exists()  # nothing was computed


@pytest.mark.slow  # executes a notebook on a real scene
def test_explore_notebook_draws_every_figure(executed):
    _, notebooks = executed
    nb = notebooks["explore.ipynb"]
    results = outputs(nb, "execute_result") + outputs(nb, "display_data")
    images = [o for o in results if "image/png" in o.data]
    plots = [o for o in results if "application/vnd.plotly.v1+json" in o.data]
    assert len(images) == 2, "keypoints and matches"
    assert len(plots) == 2, "pairs matrix and 3D reconstruction"
    text = "\n".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "No global descriptors" in text  # 8 images: exhaustive pairs, said so
    assert "Reusing" in text or "reusing" in text  # the submission notebook's files were reused


@pytest.mark.slow  # executes the submission notebook on 38 photos: minutes on 2 CPU cores
def test_submission_notebook_scores_an_imc_2025_train_split(tmp_path, imc25_dir, weights_dir, monkeypatch):
    """The same notebook on a 2025 folder (told by its files): the mixed dataset's rows and the
    IMC 2025 score table (score, mAA, clusterness, outliers found) from its labels and thresholds."""
    for key, value in notebook_env(tmp_path, imc25_dir, weights_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMC_SCENES", "small")
    nb = execute("imc24_submission.ipynb", tmp_path)
    text = "\n".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "IMC 2025 data: 1 dataset(s), 38 images" in text
    table = pd.read_csv(tmp_path / "submission.csv")
    assert list(table.columns) == submission.SUBMISSION_COLUMNS_2025 and len(table) == 38
    assert "dataset score   mAA clusterness outliers found" in text  # metric.format_table_2025
    labels = submission.read_poses(imc25_dir / "train_labels.csv", "2025")
    datasets, _ = metric.score_2025(
        labels[labels["dataset"] == "small"], tmp_path / "submission.csv", imc25_dir / "train_thresholds.csv"
    )
    line = next(row for row in text.splitlines() if row.strip().startswith("small "))  # the dataset row
    assert line.split()[1] == f"{datasets['score'].iloc[0]:.3f}"  # the notebook printed the scorer's value
