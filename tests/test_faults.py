"""A run killed with SIGKILL in extraction, matching or mapping resumes without loss and gives the same
submission as an uninterrupted run; two uninterrupted runs give the same submission."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import h5py
import pytest
from PIL import Image

NAMES = [f"{i:04d}.jpg" for i in range(5)]
# LightGlue, not the CPU default mnn (milliseconds a pair): matching must last long enough to be killed.
SMALL = ["--max-keypoints", "512", "--resize-to", "512", "--matcher", "lightglue", "--device", "cpu"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory, imc_data_dir):
    data = tmp_path_factory.mktemp("faults") / "data"
    images = data / "train/herzjesu-p8/images"
    images.mkdir(parents=True)
    for name in NAMES:
        with Image.open(imc_data_dir / "train/herzjesu-p8/images" / name) as im:
            im.resize((768, 512), Image.LANCZOS).save(images / name, quality=92)
    return data


def _command(data, work, out, weights):
    return [sys.executable, "-m", "imc_lib.cli", "run", str(data), "--work", str(work), "--out", str(out),
            "--weights", str(weights), *SMALL]


def _run(data, work, out, weights) -> str:
    done = subprocess.run(_command(data, work, out, weights), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def baseline(scene, weights_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    _run(scene, root / "work", root / "submission.csv", weights_dir)
    return (root / "submission.csv").read_text()


def test_same_inputs_give_the_same_submission(scene, weights_dir, baseline, tmp_path):
    _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert (tmp_path / "submission.csv").read_text() == baseline


def _kill_when(scene, weights, tmp_path, ready) -> None:
    """Start a run, SIGKILL it as soon as `ready(stderr_text, work)` holds."""
    log = tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(_command(scene, tmp_path / "work", tmp_path / "submission.csv", weights),
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(log.read_text(errors="replace"), tmp_path / "work"):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "submission.csv").exists()


def _files_open(work):
    for path in work.rglob("*.h5"):
        with h5py.File(path, "r"):
            pass


def test_kill_during_feature_extraction(scene, weights_dir, baseline, tmp_path):
    progress = re.compile(r"features feats-\S+:\s+\d+%\|[^|]*\| [1-3]/5")
    _kill_when(scene, weights_dir, tmp_path, lambda text, work: progress.search(text))
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"feats-\S+\.h5: [1-4] images done, computing the other [1-4]", log), log[-2000:]
    _files_open(tmp_path / "work")
    assert (tmp_path / "submission.csv").read_text() == baseline


def test_kill_during_matching(scene, weights_dir, baseline, tmp_path):
    progress = re.compile(r"matching matches-\S+:\s+\d+%\|[^|]*\| [1-8]/10")
    _kill_when(scene, weights_dir, tmp_path, lambda text, work: progress.search(text))
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"feats-\S+\.h5: all 5 images done, reusing", log)
    assert re.search(r"_matches-\S+\.h5: [1-9] pairs done, computing the other [1-9]", log), log[-2000:]
    _files_open(tmp_path / "work")
    assert (tmp_path / "submission.csv").read_text() == baseline


def test_kill_during_mapping(scene, weights_dir, baseline, tmp_path):
    def mapping_started(text, work):
        return any(work.glob("*/sfm_*/database.db"))

    _kill_when(scene, weights_dir, tmp_path, mapping_started)
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"_matches-\S+\.h5: all 10 pairs done, reusing", log)
    assert "orientations exist, reusing" in log
    assert (tmp_path / "submission.csv").read_text() == baseline
