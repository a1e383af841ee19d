"""The explorer's steps, one module each (`show(c)` draws the step), and what they share: the page's
context, the networks, the progress bars fed by the library's stage callbacks, and running the
pipeline up to a step (`run`)."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from ... import runner
from ...networks import Networks
from ...utils import ImageError, read_image
from .. import session as S

logger = logging.getLogger("imc_lib.app")
# What each stage's progress bar says (runner.STAGES' names; a first extraction reports as "features").
STAGE_LABELS = {
    "pairs": "Pairs",
    "orientation": "Orientation: matching every kept pair at 4 quarter turns",
    "features": "Keypoints",
    "matching": "Matching",
    "merge": "Merging the extractors' matches",
    "reconstruction": "Reconstruction: COLMAP database, geometric verification, mapping",
}


@dataclass
class Ctx:
    """What every step sees on this run of the page."""

    images: S.ImageSet | None
    settings: S.Settings
    plan: S.ScenePlan | None
    fps: dict  # step -> what its views cache their results under (S.step_fingerprints)
    done: dict  # step -> up to date (S.step_status)

    @property
    def paths(self):
        return self.plan.paths

    @property
    def submission(self) -> Path:
        return S.submission_path(self.workspace, self.images)

    @property
    def state(self):
        return st.session_state

    @property
    def names(self) -> list[str]:
        return self.images.names if self.images else []

    @property
    def image_dir(self) -> Path:
        return self.images.scene.image_dir

    @property
    def sconfs(self) -> dict:
        """The stage configs for these images (small scenes: all pairs, as the pipeline does)."""
        return self.settings.stage_confs(self.images.scene)

    @property
    def workspace(self) -> Path:
        return Path(self.state.workspace.name)

    def is_done(self, step: str) -> bool:
        return bool(self.done.get(step))


def init_state():
    ss = st.session_state
    if "workspace" not in ss:
        # Deleted with the session object when Streamlit drops the session.
        ss.workspace = tempfile.TemporaryDirectory(prefix="imc-app-")
        ss.results, ss.pair_history = {}, []
    return ss


@st.cache_resource
def _network_cache() -> dict:
    """Networks loaded by any session of this server process (networks.Networks' cache)."""
    return {}


def networks(weights: str) -> Networks:
    return Networks(weights or None, S.DEVICE, _network_cache())


class StageBars:
    """runner.run_scene's progress callback: one Streamlit progress bar per stage that reports."""

    def __init__(self):
        self.bars, self.values = {}, {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        label = STAGE_LABELS.get(stage, stage)
        text = f"{label}: {done}/{total}" if total else f"{label}: {done}"
        value = self.values[stage] = min(done / total, 1.0) if total else self.values.get(stage, 0.0)
        if stage in self.bars:
            self.bars[stage].progress(value, text=text)
        else:
            self.bars[stage] = st.progress(value, text=text)


def run(c: Ctx, step: str, show_progress: bool = True) -> runner.SceneRun:
    """Run the pipeline on the chosen images up to `step`'s stage (S.STEP_STAGES): earlier stages
    reuse their files, outputs of the step's stages left from other inputs are removed first
    (S.stale_outputs). The runner stamps each stage it runs, which marks the step done; returns
    runner.run_scene's result."""
    S.remove(S.stale_outputs(c.plan, step))
    progress = StageBars() if show_progress else None
    out = runner.run_scene(c.plan, networks(c.settings.weights), progress=progress, until=S.STEP_STAGES[step])
    c.done.update(S.step_status(c.plan))
    return out


def goto(step: str) -> None:
    st.session_state.step = step


def failed(what: str, err: Exception) -> None:
    logger.exception("%s failed", what)
    st.error(f"{what} failed: {err}")


def blocked(c: Ctx, step: str) -> bool:
    """Show why `step` cannot run yet (naming the step to run first); True when blocked."""
    if c.images is None or not c.names:
        st.error(f"Step {S.TITLES['images']} first: no images yet; choose a scene or upload photos in the sidebar.")
        return True
    message = S.missing_message(step, c.done)
    if message is None:
        return False
    st.error(message)
    first, _ = S.missing_step(step, c.done)
    st.button(f"Go to {S.TITLES[first]}", on_click=goto, args=(first,), key=f"goto_{first}")
    return True


def next_button(step: str) -> None:
    following = S.STEPS[S.STEPS.index(step) + 1]
    st.button(f"Next: {S.TITLES[following]} →", on_click=goto, args=(following,), key=f"next_{step}")


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, mtime_ns: int, side: int = 256) -> np.ndarray:
    try:
        im = Image.fromarray(read_image(Path(path), max_side=side))  # a JPEG decodes reduced, whatever its size
    except ImageError:  # unreadable, or too large to decode: a grey square (the keypoints step names it)
        return np.full((side, side, 3), 128, np.uint8)
    im.thumbnail((side, side))
    return np.asarray(im)
