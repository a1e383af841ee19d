"""A default of a step after the mapper, edited in the package's own modules (the joining's settings, a
check's threshold, the held-distortion mapping's options), is a changed reconstruction conf: a rerun on the
same work folder maps again, and computes nothing before the reconstruction again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import imc_lib

pytestmark = pytest.mark.slow  # four runs of a small scene in subprocesses, about a minute

PACKAGE = Path(imc_lib.__file__).resolve().parent
SCENE = "herzjesu-p8"
SMALL = ["--max-keypoints", "512", "--resize-to", "512", "--device", "cpu"]

# (module, the default as the module has it, as edited, a line the edited run must log)
EDITS = {
    "joining": ("stages/joining.py", '"max_disagreement": 0.1,', '"max_disagreement": 0.2,', None),
    "check": ("stages/checks.py", '"min_points_kept": 0.7,', '"min_points_kept": 1.01,', "final refinement: refused"),
    "held": (
        "stages/reconstruction.py",
        'HELD_DISTORTION = {"ba_refine_extra_params": False,',
        'HELD_DISTORTION = {"ba_refine_extra_params": True,',
        None,
    ),
}


def _run(package_root: Path, data: Path, work: Path, out: Path, weights: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    cmd = [sys.executable, "-m", "imc_lib.cli", "run", str(data), "--work", str(work), "--out", str(out),
           "--weights", str(weights), "--scenes", SCENE, *SMALL]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=package_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _edited_copy(tmp_path: Path, name: str) -> Path:
    """A copy of the package with one module default edited; returns the folder to put on PYTHONPATH."""
    module, before, after, _ = EDITS[name]
    root = tmp_path / f"edited-{name}"
    shutil.copytree(PACKAGE, root / "imc_lib", ignore=shutil.ignore_patterns("__pycache__"))
    path = root / "imc_lib" / module
    text = path.read_text()
    assert text.count(before) == 1, f"{module}: {before!r} is no longer its default; update EDITS"
    path.write_text(text.replace(before, after))
    return root


def _before_mapping(work: Path) -> dict[Path, int]:
    """Every file of the scene outside its reconstruction folders, with its modification time."""
    files = [
        p
        for p in (work / SCENE).rglob("*")
        if p.is_file() and not p.relative_to(work / SCENE).parts[0].startswith("sfm")
    ]
    return {p: p.stat().st_mtime_ns for p in files if p.name not in ("stages.json", ".lock")}  # the run's own


def test_an_edited_default_after_the_mapper_maps_again_and_reuses_the_rest(tmp_path, imc_data_dir, weights_dir):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    first = _run(PACKAGE.parent, imc_data_dir, work, out, weights_dir)
    assert "reusing model" not in first
    before = _before_mapping(work)
    assert any(p.suffix == ".h5" for p in before), sorted(before)  # features and matches made once
    for name in EDITS:
        log = _run(_edited_copy(tmp_path, name), imc_data_dir, work, out, weights_dir)
        assert "reusing model" not in log and "recomputing model" in log, (name, log[-3000:])
        assert "mapping of" in log, (name, log[-3000:])
        if EDITS[name][3]:
            assert EDITS[name][3] in log, (name, log[-3000:])
        assert _before_mapping(work) == before, name  # nothing before the reconstruction written again
    again = _run(PACKAGE.parent, imc_data_dir, work, out, weights_dir)  # the defaults back: mapped again, once
    assert "recomputing model" in again
    assert "reusing model" in _run(PACKAGE.parent, imc_data_dir, work, out, weights_dir)
