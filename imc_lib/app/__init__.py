"""The Streamlit explorer (`imc-lib app`): walk a scene through pairs, keypoints, matches and the
3D reconstruction one step at a time. The page is `streamlit_app.py` (the sidebar, `sidebar.py`, and
the steps, one module each in `steps/`, which run `pipeline.run_scene` up to their stage);
`session.py` holds its Streamlit-free logic (settings, fingerprints, paths, uploads)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

APP_SCRIPT = Path(__file__).resolve().with_name("streamlit_app.py")


def command(port: int = 8501, extra_args: list[str] | None = None) -> list[str]:
    """The `streamlit run` command line for the explorer."""
    extra = list(extra_args or [])
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.port", str(port), *extra]


def launch(port: int = 8501, extra_args: list[str] | None = None) -> int:
    """Run the explorer on `port` until interrupted; returns streamlit's exit status (2 when it is
    not installed). `extra_args` go to `streamlit run` (e.g. ["--server.headless", "true"])."""
    if importlib.util.find_spec("streamlit") is None:
        logger.error("streamlit is not installed; install the app extras: pip install -e '.[app]'")
        return 2
    cmd = command(port, extra_args)
    logger.info("Starting the explorer at http://localhost:%d (%s)", port, " ".join(cmd))
    return serve(cmd)


# Seconds the server has to stop after being asked (SIGINT) before it is killed.
STOP_WAIT_S = 10


def serve(cmd: list[str]) -> int:
    """Run the server `cmd` until it ends, or until this process gets SIGTERM or SIGINT: then stop it
    too and return 0. The server is asked with SIGINT, which Streamlit answers by closing its port;
    SIGTERM would reach pycolmap's crash handler in it (a stack dump), as it would here, so this
    process takes both signals over for the while."""
    child = subprocess.Popen(cmd)
    stopping = []

    def stop(signum, frame):
        stopping.append((signum, time.monotonic()))
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while (code := child.poll()) is None:  # polled: a signal's handler runs between waits
            if stopping and time.monotonic() - stopping[0][1] > STOP_WAIT_S:
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if child.poll() is None:  # this process is going for another reason: its server goes too
            child.kill()
            child.wait()
    if stopping:
        logger.info("The explorer stopped (%s)", signal.Signals(stopping[0][0]).name)
        return 0
    return code
