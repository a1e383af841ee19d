"""`imc-lib app` stops the server it started when it is stopped itself: SIGTERM (kill, a supervisor)
or SIGINT (Ctrl-C) leaves no process and no open port behind, and no crash handler's stack dump."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="streamlit not installed; pip install -e '.[app]'")
pytestmark = pytest.mark.slow  # a real Streamlit server: 10-90 s to start

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 90  # the server imports torch and pycolmap
STOP_TIMEOUT = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_app_stops_its_server(tmp_path, sig):
    port = _free_port()
    cmd = [sys.executable, "-m", "imc_lib.cli", "app", "--port", str(port), "--server.headless", "true",
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]  # fmt: skip
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no server on {port} within {START_TIMEOUT} s"
            time.sleep(0.5)
        servers = _children(proc.pid)
        assert servers, "imc-lib app runs streamlit in a child process"
        proc.send_signal(sig)  # to imc-lib alone, not its process group: as `kill PID` does
        assert proc.wait(timeout=STOP_TIMEOUT) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + STOP_TIMEOUT
        while _listening(port) or any(map(_alive, servers)):
            assert time.monotonic() < deadline, f"port {port} or server {servers} still there after {STOP_TIMEOUT} s"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "*** SIGTERM" not in text and "stack trace" not in text and "Traceback" not in text, text[-3000:]
    assert "The explorer stopped" in text
