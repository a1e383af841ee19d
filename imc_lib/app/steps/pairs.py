"""Step 2: which pairs of photos are matched: all of them, DINOv2 retrieval or VLAD retrieval (the
pipeline's pairs stage), with the descriptor distances and the threshold's effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ... import networks, viz
from ...stages import pairs
from .. import session as S
from . import Ctx, blocked, failed, next_button, run

CURVE_POINTS = 41
METHODS = {"exhaustive": "all pairs", "retrieval": "DINOv2 retrieval", "vlad": "VLAD retrieval"}


def use_all_pairs() -> None:
    st.session_state.pairs = "exhaustive"


def _record(c: Ctx) -> None:
    """Remember this selection, so the next one shows how many pairs it added or dropped."""
    ss = c.state
    ss.pairs_for_images = c.fps["images"]
    if not ss.pair_history or ss.pair_history[-1]["fp"] != c.fps["pairs"]:
        ss.pair_history.append(
            {
                "fp": c.fps["pairs"],
                "images": c.fps["images"],
                "pairs": len(pairs.read_pairs(kept_path(c))),
                "threshold": c.sconfs["pairs"].get("max_distance"),
            }
        )


def kept_path(c: Ctx):
    """The pairs to match; VLAD with orientation selects them again after turning (step 3), until
    then the selection over the photos as stored."""
    return c.paths.pairs if c.paths.pairs.exists() else c.paths.candidates


def refresh(c: Ctx) -> None:
    """Re-select pairs when a setting changed and that costs no network: all pairs, or a selection
    from DINOv2 descriptors already computed for these images. So the threshold's effect shows at once."""
    ss = c.state
    if c.images is None or len(c.names) < 2 or c.is_done("pairs") or ss.get("pairs_for_images") != c.fps["images"]:
        return
    if not S.extracted(c.plan):
        return  # the vlad pairs or mnn orientation would extract keypoints first
    cached = c.settings.dinov2 and S.stored_descriptors(c.plan) is not None
    if c.settings.all_pairs(c.images.scene) or (c.settings.pair_method == "dinov2" and cached):
        try:
            run(c, "pairs", show_progress=False)
            _record(c)
        except Exception as err:
            failed("Re-selecting pairs", err)


def _run(c: Ctx) -> None:
    try:
        run(c, "pairs")
        _record(c)
    except Exception as err:
        failed("Pairs", err)
        if c.settings.pair_method == "dinov2":
            st.button("Use all pairs (exhaustive) instead", on_click=use_all_pairs, key="use_all_pairs_after_error")


def _explain(c: Ctx, n: int) -> bool:
    """Say how the pairs are chosen; False when they cannot be (retrieval without a DINOv2 model)."""
    s, all_pairs = c.settings, c.settings.all_pairs(c.images.scene)
    pconf = c.settings.stage_confs()["pairs"]
    if s.pair_method == "exhaustive":
        st.markdown(f"All {n * (n - 1) // 2} pairs of the {n} images are matched.")
    elif not s.dinov2 and all_pairs:
        st.info(
            f"No DINOv2 source given, so no descriptor heatmap: with {n} images (fewer than "
            f"{pconf['exhaustive_if_less']}) all pairs are matched anyway."
        )
    elif s.pair_method == "dinov2" and not s.dinov2:
        st.error(
            "No DINOv2 model: retrieval needs one. Name a local folder, a Kaggle path "
            f"({networks.DINOV2_KAGGLE_DIR}) or a hub id ({networks.DINOV2_HUB_ID}) under 'DINOv2 source' "
            "in the sidebar, or match all pairs."
        )
        st.button("Use all pairs (exhaustive)", on_click=use_all_pairs, key="use_all_pairs", type="primary")
        return False
    elif s.pair_method == "vlad":
        st.markdown(
            "VLAD retrieval, no weights: each photo's keypoint descriptors are pooled over a k-means "
            f"vocabulary of the scene; each image keeps its **{pconf['min_pairs']}** nearest neighbours"
            f" and every pair closer than **{pconf['max_distance']:g}**. Keypoints are extracted first."
        )
    else:
        st.markdown(
            "DINOv2 global descriptors (max-pooled patch tokens) are compared pairwise; a pair is kept "
            f"when its distance is below **{pconf['max_distance']:g}**, and each image keeps its "
            f"**{pconf['min_pairs']}** nearest neighbours."
        )
    return True


def show(c: Ctx) -> None:
    if blocked(c, "pairs"):
        return
    n = len(c.names)
    if n < 2:
        st.error(f"Pairs need at least 2 images; use more in the sidebar (step {S.TITLES['images']}).")
        return
    if not _explain(c, n):
        return
    if st.button("Run pairs", type="primary", key="run_pairs"):
        _run(c)
    if c.is_done("pairs"):
        show_pairs(c)


def _summary(c: Ctx, kept: list) -> None:
    n, method = len(c.names), c.sconfs["pairs"]["method"]
    history = [h for h in c.state.pair_history if h["images"] == c.fps["images"]]
    previous = history[-2] if len(history) > 1 and history[-1]["fp"] == c.fps["pairs"] else None
    col1, col2, col3 = st.columns(3)
    col1.metric(
        "Pairs kept",
        len(kept),
        delta=None if previous is None else len(kept) - previous["pairs"],
        help="change since the previous selection for these images",
    )
    col2.metric("Of all pairs", n * (n - 1) // 2)
    col3.metric("Method", METHODS[method])
    if previous is not None and previous["threshold"] is not None:
        st.caption(f"Previous selection: {previous['pairs']} pairs (threshold {previous['threshold']:g}).")
    if c.settings.pair_method != "exhaustive" and method == "exhaustive":
        st.info(
            f"{n} images, fewer than 'all pairs when fewer images than' "
            f"({c.settings.stage_confs()['pairs']['exhaustive_if_less']}): every pair is kept, as the pipeline "
            "does. Lower that setting to see the retrieval selection."
        )


def show_pairs(c: Ctx) -> None:
    names, n, pconf = c.names, len(c.names), c.sconfs["pairs"]
    kept = pairs.read_pairs(kept_path(c))
    _summary(c, kept)
    distances, desc = None, S.stored_descriptors(c.plan)
    if desc is not None:
        distances = pairs.distance_matrix(desc, pconf["p"]).numpy()
        st.plotly_chart(
            viz.distance_heatmap(distances, names, kept, title="descriptor distances, kept pairs circled"),
            key="pairs_heatmap",
        )
        _threshold_curve(desc, distances, pconf, n)
    else:
        st.plotly_chart(viz.pairs_matrix(names, kept), key="pairs_matrix")
    table = pd.DataFrame(kept, columns=["image 0", "image 1"])
    if distances is not None:
        index = {name: i for i, name in enumerate(names)}
        table["distance"] = [distances[index[a], index[b]] for a, b in kept]
    with st.expander(f"The {len(kept)} kept pairs"):
        st.dataframe(table, hide_index=True)
    next_button("pairs")


def _threshold_curve(desc: np.ndarray, distances: np.ndarray, pconf: dict, n: int) -> None:
    """How many pairs each threshold would keep, the current one marked."""
    finite = distances[np.isfinite(distances) & ~np.eye(n, dtype=bool)]
    top = max(float(finite.max()) * 1.05 if finite.size else 1.0, pconf["max_distance"])
    grid = np.linspace(0.0, top, CURVE_POINTS)
    counts = [
        len(pairs.pairs_from_descriptors(torch.from_numpy(desc), t, pconf["min_pairs"], pconf["p"])) for t in grid
    ]
    st.plotly_chart(
        viz.threshold_curve(
            grid,
            counts,
            current=pconf["max_distance"],
            total=n * (n - 1) // 2,
            title=f"retrieval selection vs threshold (min pairs {pconf['min_pairs']})",
        ),
        key="pairs_curve",
    )
