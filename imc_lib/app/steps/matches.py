"""Step 4: the matching stage over the kept pairs (and an ensemble's merge); matches per pair, one pair drawn."""

from __future__ import annotations

import streamlit as st

from ... import networks, viz
from ...stages import features, matching, pairs
from ...utils import read_image
from .. import session as S
from . import Ctx, blocked, failed, next_button, run


def _run(c: Ctx) -> None:
    try:
        run(c, "matches")
        pair_list = pairs.read_pairs(c.paths.match_pairs)
        c.state.results["matches"] = {"fp": c.fps["matches"], "counts": S.match_counts(c.paths.matches, pair_list)}
    except Exception as err:
        failed("Matching", err)


def _draw_pair(c: Ctx, a: str, b: str, matcher: str, min_matches: int) -> None:
    m, scores = matching.read_matches(c.paths.matches, a, b)
    if len(m) == 0:
        st.info(
            f"No matches between {a} and {b}: {matcher} found fewer than {min_matches}, so the matching stage "
            "stored the pair empty and the reconstruction ignores it."
        )
    else:
        st.markdown(
            f"**{len(m)} matches** between {a} and {b} "
            f"(colour: {'LightGlue confidence' if matcher == 'LightGlue' else '1 - distance ratio'})."
        )
    fig = viz.show_matches(
        read_image(c.image_dir / a),
        read_image(c.image_dir / b),
        features.read_features(c.paths.features, a)["keypoints"],
        features.read_features(c.paths.features, b)["keypoints"],
        m,
        scores,
        title=f"{a} – {b}: " + (f"{len(m)} matches" if len(m) else "no matches"),
    )
    st.pyplot(fig)


def show(c: Ctx) -> None:
    if blocked(c, "matches"):
        return
    min_matches = c.sconfs["matching"]["min_matches"]
    label = networks.MATCHER_LABELS.get(c.settings.matcher, c.settings.matcher)
    matcher = label[:1].upper() + label[1:]
    st.markdown(
        f"{matcher} matches the keypoints of every kept pair; pairs with fewer than {min_matches} matches "
        "are stored empty and left out of the reconstruction."
    )
    if st.button("Match pairs", type="primary", key="run_matches"):
        _run(c)
    if not c.is_done("matches"):
        return
    pair_list = pairs.read_pairs(c.paths.match_pairs)
    result = c.state.results.get("matches", {})
    counts = result["counts"] if result.get("fp") == c.fps["matches"] else S.match_counts(c.paths.matches, pair_list)
    col1, col2, col3 = st.columns(3)
    col1.metric("Pairs with matches", f"{sum(k > 0 for k in counts)}/{len(pair_list)}")
    col2.metric("Matches (total)", int(sum(counts)))
    col3.metric("Matches per pair (max)", max(counts) if counts else 0)
    st.plotly_chart(viz.pairs_matrix(c.names, pair_list, values=counts, title="matches per pair"), key="matches_matrix")
    order = sorted(range(len(pair_list)), key=lambda k: -counts[k])
    k = st.selectbox(
        "Pair",
        order,
        key="matches_pair",
        format_func=lambda k: f"{pair_list[k][0]} – {pair_list[k][1]}: {counts[k]} matches",
    )
    if k is not None:
        _draw_pair(c, *pair_list[k], matcher, min_matches)
    next_button("matches")
