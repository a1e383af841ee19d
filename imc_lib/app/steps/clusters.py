"""Step 5 on a mixed folder (an IMC 2025 dataset): the clusters the reconstruction found, each a strip
of thumbnails with its size, the outliers apart, the score against the labels, then the 3D view of
the cluster the user picks (the single-model view of `reconstruction`, reused)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ... import figure3d
from ...formats import submission
from ...stages import reconstruction
from .. import session as S
from . import Ctx, thumbnail

STRIP_COLUMNS = 6  # thumbnails per row of a strip
STRIP_ROWS = 2  # rows shown per cluster; the rest are counted
THUMB_WIDTH = 150


def result(c: Ctx, out: dict, path) -> dict:
    """The step's result for a mixed set from run_scene's `out`: writes the submission to `path`
    (clusters named, outliers nan) and scores it when the folder has labels."""
    submission.write_submission(S.submission_rows(c.images, out.model, out.clusters), path)
    groups = S.cluster_groups(c.images, out.clusters)
    return {
        "fp": c.fps["reconstruction"],
        "registered": len(c.names) - len(groups[submission.OUTLIERS]),
        "model": out.model,
        "models": reconstruction.clusters(out.paths.sfm) if out.model is not None else [],
        "groups": groups,
        "score": S.score_mixed(c.images, path),
    }


def strip(c: Ctx, title: str, names: list[str], key: str) -> None:
    """`title` and its size, then the first STRIP_ROWS rows of its photos, STRIP_COLUMNS a row."""
    st.markdown(f"**{title}** · {len(names)} photo{'s' if len(names) != 1 else ''}")
    shown = names[: STRIP_COLUMNS * STRIP_ROWS]
    for start in range(0, len(shown), STRIP_COLUMNS):
        row = [c.image_dir / n for n in shown[start : start + STRIP_COLUMNS]]
        st.image([thumbnail(str(p), p.stat().st_mtime_ns) for p in row], caption=[p.name for p in row],
                 width=THUMB_WIDTH)  # fmt: skip
    if len(names) > len(shown):
        st.caption(f"… and {len(names) - len(shown)} more in {key}")


def _metrics(c: Ctx, res: dict) -> None:
    groups, scored = res["groups"], res["score"]
    clusters = len(groups) - 1
    cols = st.columns(5)
    cols[0].metric("Clusters", clusters)
    cols[1].metric("Clustered images", f"{res['registered']}/{len(c.names)}")
    cols[2].metric("Outliers", len(groups[submission.OUTLIERS]))
    if scored is None:
        cols[3].metric("Score", "—", help="no ground truth (train_labels.csv, train_thresholds.csv) for these images")
        return
    row = scored["dataset"]
    cols[3].metric("Score", f"{row['score']:.3f}", help=f"IMC 2025: harmonic mean of mAA {row['mAA']:.3f} and "
                   f"clusterness {row['clusterness']:.3f}")  # fmt: skip
    cols[4].metric("Outliers found", f"{row['outliers_found']}/{row['outliers']}",
                   help="true outliers labelled outliers")  # fmt: skip


def _scene_table(scored: dict) -> pd.DataFrame:
    scenes = scored["scenes"]
    return pd.DataFrame({
        "scene": scenes["scene"],
        "cluster": [c or "—" for c in scenes["cluster"]],
        "in cluster": [f"{s}/{n}" for s, n in zip(scenes["shared"], scenes["images"])],
        "cluster size": scenes["cluster_size"],
        "mAA": scenes["mAA"].round(3),
    })  # fmt: skip


def _view(c: Ctx, res: dict) -> None:
    """The 3D view of one cluster, chosen by name (its cameras coloured by error where scored)."""
    names = [g for g in res["groups"] if g != submission.OUTLIERS]
    sizes = {g: len(res["groups"][g]) for g in names}
    chosen = st.selectbox("Cluster to view in 3D", names, key="cluster_3d",
                          format_func=lambda g: f"{g} ({sizes[g]} photos)")  # fmt: skip
    model = res["models"][names.index(chosen)]
    errors, largest = (res["score"] or {}).get("errors", {}).get(chosen, (None, None))
    st.plotly_chart(figure3d.reconstruction_figure(model, camera_errors=errors, max_error=largest),
                    key="reconstruction_3d")  # fmt: skip
    if errors:
        st.caption(
            "Camera colour: distance from the ground-truth centre after the metric's similarity alignment, "
            f"against the labelled scene(s) this cluster serves (red at {largest:g} and beyond; grey: a photo "
            "of no such scene)."
        )


def show(c: Ctx, res: dict) -> None:
    """The clusters' strips and the outliers, the score, then the chosen cluster in 3D."""
    _metrics(c, res)
    if res["model"] is None:
        st.error("No model could be built: every photo is an outlier. Try more keypoints, more images or all pairs.")
    for name, members in res["groups"].items():
        if name != submission.OUTLIERS:
            strip(c, name, members, name)
    st.subheader("Outliers")
    outliers = res["groups"][submission.OUTLIERS]
    if outliers:
        strip(c, submission.OUTLIERS, outliers, submission.OUTLIERS)
    else:
        st.caption("Every photo is in a cluster.")
    if res["score"]:
        st.dataframe(_scene_table(res["score"]), hide_index=True)
    if res["model"] is not None:
        st.subheader("3D view")
        _view(c, res)
