"""The imc_lib explorer: pick images and settings in the sidebar, then run and inspect the pipeline's
stages one step at a time. Launch with `imc-lib app` (or `streamlit run` on this file).

This page only wires the sidebar (`sidebar.py`) to the steps (`steps/`, one module each); each step
runs the library's stages through `runner.run_scene` into a temporary folder of this browser
session, with the stages' progress shown as progress bars.
"""

from __future__ import annotations

import pycolmap
import streamlit as st

from imc_lib.app import session as S
from imc_lib.app import sidebar
from imc_lib.app.steps import Ctx, failed, features, images, init_state, matches, pairs, reconstruction, submission

TITLE = "imc_lib explorer"
VIEWS = {
    "images": images.show,
    "pairs": pairs.show,
    "features": features.show,
    "matches": matches.show,
    "reconstruction": reconstruction.show,
    "submission": submission.show,
}

st.set_page_config(page_title=TITLE, page_icon="📷", layout="wide")
pycolmap.logging.minloglevel = 2  # COLMAP's own chatter: errors only


def context(ss) -> Ctx:
    """The chosen images and settings, the pipeline's plan for them and which steps are up to date."""
    try:
        chosen = sidebar.choose_images(ss)
    except Exception as err:
        failed("Reading the images", err)
        chosen = None
    settings = sidebar.choose_settings()
    if chosen is None or not chosen.names:
        return Ctx(chosen, settings, None, {}, {})
    scene_plan = S.scene_plan(ss.workspace.name, chosen, settings)
    return Ctx(chosen, settings, scene_plan, S.step_fingerprints(chosen, scene_plan), S.step_status(scene_plan))


def main() -> None:
    c = context(init_state())
    st.title(TITLE)
    st.caption(
        "Photos → pairs → keypoints → matches → 3D reconstruction → submission.csv, one step at a time. "
        "Each step runs the imc_lib stages on this session's own copy of the files."
    )
    pairs.refresh(c)
    # Labels stay fixed (a label that changes would lose the selection); progress shows beside.
    step = st.radio(
        "Step", S.STEPS, format_func=S.TITLES.__getitem__, horizontal=True, key="step", label_visibility="collapsed"
    )
    done = [S.TITLES[s] for s in S.STEPS[:-1] if c.is_done(s)]
    st.caption("Up to date for these images and settings: " + (", ".join(done) if done else "nothing yet"))
    st.header(S.TITLES[step])
    try:
        VIEWS[step](c)
    except Exception as err:  # a page of the explorer must never end in a traceback
        failed(S.TITLES[step], err)


main()
