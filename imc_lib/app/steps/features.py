"""Step 3: each photo's quarter turn (the orientation stage), then its keypoints (the features stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ... import plan, viz
from ...stages import features, orientation
from ...storage.io import FeatureReader
from ...utils import read_image
from . import Ctx, blocked, failed, next_button, run


def keypoint_file(c: Ctx):
    """The features drawn here: the extractor's file (an ensemble's first extractor until step 4 merges them)."""
    return c.paths.sources[0][0]


def keypoint_counts(feature_path, names: list[str]) -> list[int]:
    """Keypoints per image, the features file opened once."""
    with FeatureReader(feature_path, size=1) as reader:
        return [len(reader[n]["keypoints"]) for n in names]


def counts(c: Ctx) -> list[int]:
    result = c.state.results.get("features", {})
    if result.get("fp") == c.fps["features"]:
        return result["counts"]
    return keypoint_counts(keypoint_file(c), c.names)


def _run(c: Ctx) -> None:
    try:
        run(c, "features")
        c.state.results["features"] = {
            "fp": c.fps["features"],
            "counts": keypoint_counts(keypoint_file(c), c.names),
        }
    except Exception as err:
        failed("Keypoints", err)


def _intro(c: Ctx) -> None:
    s, sconfs = c.settings, c.sconfs
    extractors = " + ".join(f["output"].split("-")[0].upper() for f in [sconfs["features"], *sconfs["also"]])
    how = {
        "upright": " First, each photo's quarter turn is found from the kept pairs (low-resolution ALIKED"
        " + LightGlue).",
        "mnn": " First, each photo's quarter turn is found from the kept pairs, matching these keypoints turned.",
    }
    st.markdown(
        f"**{extractors}** keypoints, at most {s.max_keypoints} per image, on images resized to "
        + (f"{s.resize_to} px" if s.resize_to else "their own size within {}-{} px".format(*plan.AUTO_RESIZE))
        + " (longest side); coordinates are mapped back to the original pixels."
        + how.get(s.orientation, "")
    )


def show(c: Ctx) -> None:
    if blocked(c, "features"):
        return
    _intro(c)
    if st.button("Extract keypoints", type="primary", key="run_features"):
        _run(c)
    if not c.is_done("features"):
        return
    found = counts(c)
    oriented = c.sconfs["orientation"] is not None
    col1, col2, col3, col4 = st.columns(4)
    col1.metric("Images with keypoints", f"{sum(k > 0 for k in found)}/{len(found)}")
    col2.metric("Keypoints (mean)", f"{np.mean(found):.0f}")
    col3.metric("Keypoints (min)", min(found))
    turns = orientation.read_orientations(c.paths.orientation) if oriented else {}
    turned = {n: t for n, t in turns.items() if t % 4}
    col4.metric(
        "Photos turned",
        f"{len(turned)}/{len(c.names)}" if oriented else "—",
        help="quarter turns found by the orientation stage; features were extracted on the turned photo "
        "and their keypoints mapped back to the stored pixels",
    )
    if turned:
        st.caption("Turned before extraction: " + ", ".join(f"{n} by {90 * t}°" for n, t in turned.items()))
    name = st.selectbox(
        "Image", c.names, key="keypoints_image", format_func=lambda n: f"{n} ({found[c.names.index(n)]} keypoints)"
    )
    kpts = features.read_features(keypoint_file(c), name)["keypoints"]
    st.pyplot(viz.show_keypoints(read_image(c.image_dir / name), kpts, title=f"{name}: {len(kpts)} keypoints"))
    with st.expander("Keypoints per image"):
        st.dataframe(pd.DataFrame({"image": c.names, "keypoints": found}), hide_index=True)
    next_button("features")
