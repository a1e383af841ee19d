"""Step 6: the submission.csv the reconstruction step wrote, to download."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from . import Ctx, blocked


def show(c: Ctx) -> None:
    if blocked(c, "submission"):
        return
    path = c.submission
    table = pd.read_csv(path)
    registered = c.state.results["reconstruction"]["registered"]
    if c.images.mixed:
        st.markdown(
            f"One row per photo ({len(table)}), in the IMC 2025 columns: each cluster is a scene (`cluster0` the "
            f"largest, ...); the {len(table) - registered} photo(s) in no cluster are `outliers`, with `nan` in "
            "every pose value, as the competition asks."
        )
    else:
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
