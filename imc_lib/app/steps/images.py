"""Step 1: the chosen photos, their sizes, and whether ground-truth poses exist."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from . import Ctx, next_button, thumbnail

THUMBNAILS = 48


def show(c: Ctx) -> None:
    if c.images is None:
        st.info("Choose a dataset folder and a scene, or upload photos, in the sidebar.")
        return
    if c.images.rejected:
        st.warning(
            "Skipped files that are not usable images: "
            + "; ".join(f"**{name}**: {why}" for name, why in c.images.rejected)
        )
    if not c.names:
        st.error("No usable images: upload JPG or PNG photos.")
        return
    sizes = pd.DataFrame(
        [(n, w, h) for n, (w, h) in zip(c.names, c.images.sizes)], columns=["image", "width", "height"]
    )
    col1, col2, col3 = st.columns(3)
    col1.metric("Images", len(c.names))
    col2.metric("Sizes", ", ".join(f"{w}×{h}" for w, h in sorted(set(c.images.sizes))))
    col3.metric(
        "Ground truth",
        "yes" if c.images.labels else "no",
        help="train_labels.csv poses: the reconstruction step shows the mAA and each camera's error",
    )
    st.caption(f"{c.images.scene.dataset}/{c.images.scene.scene} in `{c.image_dir}`")
    if c.images.mixed:
        st.info(
            "A mixed folder (IMC 2025 layout): photos of several scenes and some outliers. The steps run on it "
            "as one photo set; 5. Reconstruction shows the clusters it finds and the outliers."
        )
    if len(c.names) < 2:
        st.warning("Pairs need at least 2 images.")
    shown = c.images.paths[:THUMBNAILS]
    st.image([thumbnail(str(p), p.stat().st_mtime_ns) for p in shown], caption=[p.name for p in shown], width=180)
    if len(c.names) > THUMBNAILS:
        st.caption(f"… and {len(c.names) - THUMBNAILS} more")
    with st.expander("Image sizes"):
        st.dataframe(sizes, hide_index=True)
    next_button("images")
