"""A scene's work folder is held by one run at a time; a second run stops naming the holder.

The holder is a real second process (flock locks are per process), killed for real.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imc_lib import cli
from imc_lib.storage import lock

ROOT = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from imc_lib.storage import lock
with lock.scene_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold():
    """hold(folder, seconds): a process holding `folder`'s lock for `seconds` (killed at the end)."""
    procs = []

    def start(folder: Path, seconds: float = 600) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(folder), str(seconds)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held", "the holder could not take the lock"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_held_scene_stops_a_second_taker_naming_the_holder(tmp_path, hold):
    proc = hold(tmp_path / "scene")
    for timeout in (0, 0.5):
        with pytest.raises(lock.SceneLockedError) as caught:
            with lock.scene_lock(tmp_path / "scene", timeout=timeout):
                pytest.fail("took a lock another process holds")
        message = str(caught.value)
        assert f"process {proc.pid} on " in message and "scene_lock" in message  # its command line
        assert f"kill {proc.pid}" in message and "--work" in message
    assert lock.holder(tmp_path / "scene" / lock.LOCK_NAME)["pid"] == proc.pid


def test_a_killed_holder_frees_the_scene(tmp_path, hold):
    proc = hold(tmp_path / "scene")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "scene" / lock.LOCK_NAME).exists()  # left behind, but no longer locked
    with lock.scene_lock(tmp_path / "scene") as path:
        assert lock.holder(path)["pid"] != proc.pid


def test_a_waiting_taker_gets_the_scene_when_the_holder_finishes(tmp_path, hold, caplog):
    proc = hold(tmp_path / "scene", seconds=3)
    with caplog.at_level(logging.INFO, logger=lock.__name__), lock.scene_lock(tmp_path / "scene", timeout=None):
        assert proc.wait(timeout=60) == 0  # it finished its block before this one began
    assert f"in use by process {proc.pid}" in caplog.text and "waiting" in caplog.text
    assert lock.holder(tmp_path / "scene" / lock.LOCK_NAME) == {}  # released: no holder recorded


def test_cli_run_on_a_scene_in_use_exits_2_and_writes_nothing(tmp_path, hold, capsys):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    proc = hold(work / "herzjesu-p8")
    code = cli.main(["run", str(ROOT / "data"), "--work", str(work), "--out", str(out), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{work / 'herzjesu-p8'}: in use by process {proc.pid}" in err
    assert not out.exists()
