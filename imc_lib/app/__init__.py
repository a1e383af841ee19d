"""The Streamlit explorer (`imc-lib app`): walk a scene through pairs, keypoints, matches and the
3D reconstruction one step at a time. The page is `streamlit_app.py` (the sidebar, `sidebar.py`, and
the steps, one module each in `steps/`, which run `pipeline.run_scene` up to their stage);
`session.py` holds its Streamlit-free logic (settings, fingerprints, paths, uploads)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
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
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
