"""Step 5: the reconstruction stage (pycolmap), the submission rows it gives, and their score; on a
mixed folder (IMC 2025) its clusters and outliers first (`clusters`)."""

from __future__ import annotations

import streamlit as st

from ... import figure3d
from ...formats import submission
from ...stages import reconstruction
from .. import session as S
from . import Ctx, blocked, clusters, failed, next_button, run


def _run(c: Ctx) -> None:
    try:
        out = run(c, "reconstruction")
        path = c.submission
        if c.images.mixed:
            c.state.results["reconstruction"] = clusters.result(c, out, path)
            return
        model = out.model
        submission.write_submission(S.submission_rows(c.images, model), path)
        found = reconstruction.poses(model)
        c.state.results["reconstruction"] = {
            "fp": c.fps["reconstruction"],
            "registered": sum(n in found for n in c.names),
            "score": S.score(c.images, path, model),
            "model": model,
        }
    except Exception as err:
        failed("Reconstruction", err)


def _metrics(c: Ctx, result: dict) -> None:
    model, scored = result["model"], result["score"]
    col1, col2, col3 = st.columns(3)
    col1.metric("Registered images", f"{result['registered']}/{len(c.names)}")
    col2.metric("3D points", model.num_points3D() if model is not None else 0)
    if scored is not None:
        col3.metric(
            "mAA",
            f"{scored['mAA']:.3f}",
            help="IMC 2024 mean average accuracy of the camera centres, "
            f"thresholds {', '.join(f'{t:g}' for t in scored['thresholds'])}",
        )
    else:
        col3.metric("mAA", "—", help="no ground-truth poses for these images")


def show(c: Ctx) -> None:
    if blocked(c, "reconstruction"):
        return
    if c.images.mixed:
        st.markdown(
            "A mixed folder (IMC 2025): several scenes and outliers, mapped as one photo set. pycolmap verifies "
            "each matched pair's geometry and maps incrementally; every model that geometry keeps apart is a "
            "cluster (a scene), and the photos in none are the outliers."
        )
    else:
        st.markdown(
            "pycolmap verifies each matched pair's geometry and maps the scene incrementally; the model that "
            "registers the most images gives the poses."
        )
    if st.button("Reconstruct", type="primary", key="run_reconstruction"):
        _run(c)
    if not c.is_done("reconstruction"):
        return
    result = c.state.results["reconstruction"]
    if c.images.mixed:
        clusters.show(c, result)
        next_button("reconstruction")
        return
    _metrics(c, result)
    model, scored = result["model"], result["score"]
    if model is None:
        st.error(
            "No model could be built: too few pairs passed geometric verification. Try more keypoints, "
            "more images or all pairs."
        )
        next_button("reconstruction")
        return
    errors = scored["errors"] if scored else None
    st.plotly_chart(
        figure3d.reconstruction_figure(
            model, camera_errors=errors, max_error=max(scored["thresholds"]) if scored else None
        ),
        key="reconstruction_3d",
    )
    if scored:
        st.caption(
            "Camera colour: distance from the ground-truth centre after the metric's similarity alignment "
            f"(scene units; red at {max(scored['thresholds']):g} and beyond)."
        )
        st.dataframe(S.error_table(scored), hide_index=True)
    next_button("reconstruction")
