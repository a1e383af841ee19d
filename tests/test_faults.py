"""A run killed with SIGKILL in extraction, matching or mapping resumes without loss and gives the same
submission as an uninterrupted run; two uninterrupted runs give the same submission.

The moment of each kill comes from the log lines the stages emit (with -v: one per photo or pair
as it starts; the mapping line just before the mapper is called).
"""

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

pytestmark = pytest.mark.slow  # five runs of a real scene in subprocesses, about a minute

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


def _command(data, work, out, weights, verbose=False):
    return [
        sys.executable,
        "-m",
        "imc_lib.cli",
        *(["-v"] if verbose else []),
        "run",
        str(data),
        "--work",
        str(work),
        "--out",
        str(out),
        "--weights",
        str(weights),
        *SMALL,
    ]


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


def _kill_when(scene, weights, tmp_path, pattern: str, count: int = 1) -> str:
    """Start a run logging at debug level, SIGKILL it once `count` of its log lines match `pattern`;
    returns the killed run's log."""
    log, ready = tmp_path / "killed.log", re.compile(pattern)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            _command(scene, tmp_path / "work", tmp_path / "submission.csv", weights, verbose=True),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if len(ready.findall(log.read_text(errors="replace"))) >= count:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "submission.csv").exists()
    return log.read_text(errors="replace")


def _files_open(work):
    for path in work.rglob("*.h5"):
        with h5py.File(path, "r"):
            pass


def test_kill_during_feature_extraction(scene, weights_dir, baseline, tmp_path):
    # killed as the third of the 5 photos starts: the first two are stored
    _kill_when(scene, weights_dir, tmp_path, r"imc_lib\.stages\.features: \S+/feats-\S+\.h5: extracting ", count=3)
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"feats-\S+\.h5: reusing [2-4] of 5 images; 0 recomputed\D+[1-3] new", log), log[-2000:]
    _files_open(tmp_path / "work")
    assert (tmp_path / "submission.csv").read_text() == baseline


def test_kill_during_matching(scene, weights_dir, baseline, tmp_path):
    # killed as the fourth of the 10 pairs starts: the first three are stored
    _kill_when(scene, weights_dir, tmp_path, r"imc_lib\.stages\.matching: \S+_matches-\S+\.h5: matching ", count=4)
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"feats-\S+\.h5: reusing 5 of 5 images;", log)
    assert re.search(r"_matches-\S+\.h5: reusing [3-9] of 10 pairs; 0 recomputed\D+[1-7] new", log), log[-2000:]
    _files_open(tmp_path / "work")
    assert (tmp_path / "submission.csv").read_text() == baseline


def test_kill_during_mapping(scene, weights_dir, baseline, tmp_path):
    killed = _kill_when(
        scene, weights_dir, tmp_path, r"imc_lib\.stages\.reconstruction: \S+: incremental mapping of 5 images"
    )
    assert "images registered" not in killed  # the mapper had not returned
    log = _run(scene, tmp_path / "work", tmp_path / "submission.csv", weights_dir)
    assert re.search(r"_matches-\S+\.h5: reusing 10 of 10 pairs;", log)
    assert "reusing orientations" in log
    assert "incremental mapping of 5 images" in log and "reusing model" not in log  # mapped again
    assert (tmp_path / "submission.csv").read_text() == baseline
