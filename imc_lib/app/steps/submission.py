"""Step 6: the submission.csv the reconstruction step wrote, to download."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from imc_lib.app.steps import Ctx, blocked


def show(c: Ctx) -> None:
    if blocked(c, "submission"):
        return
    path = c.paths["submission"]
    table = pd.read_csv(path)
    registered = c.state.results["reconstruction"]["registered"]
    st.markdown(
        f"One row per image ({len(table)}); the {len(table) - registered} image(s) without a pose carry the "
        "identity rotation and a zero translation, as the competition requires a pose on every row."
    )
    st.download_button(
        "Download submission.csv",
        path.read_bytes(),
        file_name="submission.csv",
        mime="text/csv",
        key="download_submission",
        type="primary",
    )
    st.dataframe(table, hide_index=True)
