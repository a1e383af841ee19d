"""The imc_lib explorer: pick images and settings in the sidebar, then run and inspect the pipeline's
stages one step at a time. Launch with `imc-lib app` (or `streamlit run` on this file).

This page only arranges the library's stage functions: it runs them into a temporary folder of its
own per browser session, remembers which steps are done for which images and settings
(`session.fingerprints`), and draws their files with `imc_lib.viz`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pycolmap
import streamlit as st
import torch
from PIL import Image

from imc_lib import data, features, matching, models, orientation, pairs, reconstruction, submission, viz
from imc_lib.app import session as S
from imc_lib.utils import pick_device, read_image

TITLE = "imc_lib explorer"
DEFAULT_IMAGES = 10  # a dataset scene starts with its first 10 images: minutes, not hours, on a CPU
THUMBNAILS = 48
CURVE_POINTS = 41

st.set_page_config(page_title=TITLE, page_icon="📷", layout="wide")
logger = logging.getLogger("imc_lib.app")
pycolmap.logging.minloglevel = 2  # COLMAP's own chatter: errors only
DEVICE = pick_device(None)


# --- networks, loaded once per server process ---------------------------------------------------


@st.cache_resource(show_spinner="Loading the feature extractor…", max_entries=4)
def load_extractor(features_conf: str, max_keypoints: int, weights: str) -> torch.nn.Module:
    conf = S.Settings(features=features_conf, max_keypoints=max_keypoints).stage_confs()["features"]
    return features.load_model(conf, weights or None, DEVICE)


@st.cache_resource(show_spinner="Loading the matcher…", max_entries=4)
def load_matcher(feature_name: str, matcher: str, weights: str) -> torch.nn.Module:
    conf = S.Settings(matcher=matcher).stage_confs()["matching"]
    return matching.load_model(feature_name, conf, weights or None, DEVICE)


@st.cache_resource(show_spinner="Loading the orientation networks…", max_entries=2)
def load_orientation_nets(weights: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    conf = S.Settings().stage_confs()["orientation"]
    return (
        features.load_model(conf["features"], weights or None, DEVICE),
        matching.load_model("aliked", conf["matching"], weights or None, DEVICE),
    )


@st.cache_resource(show_spinner="Loading DINOv2…", max_entries=2)
def load_dinov2(source: str):
    return pairs.load_model({"model": source})


def _descriptors_only():
    raise RuntimeError("global descriptors are missing for some images; run step 2. Pairs again")


@st.cache_data(show_spinner=False, ttl=30)
def list_scenes(data_dir: str, split: str) -> list[tuple[str, int]]:
    return [(s.key, len(s.image_names)) for s in data.load_scenes(Path(data_dir).expanduser(), split)]


@st.cache_data(show_spinner=False, max_entries=512)
def thumbnail(path: str, mtime_ns: int, side: int = 256) -> np.ndarray:
    with Image.open(path) as im:
        im.draft("RGB", (side, side))  # JPEG: decode at reduced size
        im = im.convert("RGB")
        im.thumbnail((side, side))
        return np.asarray(im)


# --- session --------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What every step sees on this run of the page."""

    images: S.ImageSet | None
    settings: S.Settings
    fps: dict
    paths: dict

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
        return self.settings.stage_confs()

    def is_done(self, step: str) -> bool:
        return bool(self.fps) and self.state.done.get(step) == self.fps.get(step)

    def mark_done(self, step: str) -> None:
        self.state.done[step] = self.fps[step]


def init_state():
    ss = st.session_state
    if "workspace" not in ss:
        # Deleted with the session object when Streamlit drops the session.
        ss.workspace = tempfile.TemporaryDirectory(prefix="imc-app-")
        ss.done, ss.results, ss.pair_history = {}, {}, []
    return ss


def goto(step: str) -> None:
    st.session_state.step = step


def use_all_pairs() -> None:
    st.session_state.pairs_method = "exhaustive"


def progress(items, what: str):
    """Yield `items`, advancing a progress bar after each."""
    items = list(items)
    bar = st.progress(0.0, text=f"{what}: 0/{len(items)}")
    for k, item in enumerate(items, 1):
        yield item
        bar.progress(k / max(len(items), 1), text=f"{what}: {k}/{len(items)}")


def failed(what: str, err: Exception) -> None:
    logger.exception("%s failed", what)
    st.error(f"{what} failed: {err}")


def blocked(c: Ctx, step: str) -> bool:
    """Show why `step` cannot run yet (naming the step to run first); True when blocked."""
    if c.images is None or not c.names:
        st.error(f"Step {S.TITLES['images']} first: no images yet; choose a scene or upload photos in the sidebar.")
        return True
    message = S.missing_message(step, c.state.done, c.fps)
    if message is None:
        return False
    st.error(message)
    first, _ = S.missing_step(step, c.state.done, c.fps)
    st.button(f"Go to {S.TITLES[first]}", on_click=goto, args=(first,), key=f"goto_{first}")
    return True


def next_button(step: str) -> None:
    following = S.STEPS[S.STEPS.index(step) + 1]
    st.button(f"Next: {S.TITLES[following]} →", on_click=goto, args=(following,), key=f"next_{step}")


# --- sidebar ----------------------------------------------------------------------------------------


def choose_images(ss) -> S.ImageSet | None:
    st.sidebar.header("Images")
    source = st.sidebar.radio(
        "Source",
        ["dataset", "upload"],
        horizontal=True,
        key="source",
        format_func={"dataset": "dataset folder", "upload": "upload photos"}.get,
    )
    if source == "upload":
        files = st.sidebar.file_uploader(
            "Photos (JPG or PNG)",
            accept_multiple_files=True,
            key="uploads",
            help="Files that are not readable JPG/PNG images are named and skipped.",
        )
        if not files:
            return None
        key = tuple(f.file_id for f in files)
        if ss.get("upload_key") != key:
            ss.upload_set = S.upload_images([(f.name, f.getvalue()) for f in files], Path(ss.workspace.name))
            ss.upload_key = key
        return ss.upload_set

    data_dir = st.sidebar.text_input(
        "Dataset folder",
        value=os.environ.get("IMC_DATA_DIR", "data"),
        key="data_dir",
        help="IMC 2024 layout: train/<scene>/images/, train/train_labels.csv "
        "(poses: the reconstruction step then shows the mAA), "
        "test/ + sample_submission.csv",
    )
    split = st.sidebar.selectbox("Split", ["train", "test"], key="split")
    try:
        scenes = dict(list_scenes(data_dir, split))
    except (OSError, ValueError, KeyError) as err:
        st.sidebar.error(f"{err}")
        return None
    if not scenes:
        st.sidebar.error(f"{data_dir}: no scenes in {split}")
        return None
    scene = st.sidebar.selectbox("Scene", list(scenes), key="scene", format_func=lambda k: f"{k} ({scenes[k]} images)")
    n = st.sidebar.number_input(
        "Use the first N images", 1, scenes[scene], min(scenes[scene], DEFAULT_IMAGES), key=f"n_images:{scene}"
    )
    try:
        return S.dataset_images(Path(data_dir), split, scene, int(n))
    except (OSError, ValueError) as err:
        st.sidebar.error(f"{err}")
        return None


def choose_settings() -> S.Settings:
    d = S.Settings()
    sb = st.sidebar
    sb.header("Settings")
    feats = sb.radio("Features", ["aliked", "disk"], horizontal=True, key="features")
    max_keypoints = sb.number_input(
        "Max keypoints per image", 64, 16384, d.max_keypoints, step=256, key="max_keypoints"
    )
    resize_to = sb.number_input("Resize to (longest side, px)", 128, 4096, d.resize_to, step=64, key="resize_to")
    turns = sb.radio(
        "Orientation",
        ["upright", "none"],
        horizontal=True,
        key="orientation",
        format_func={"upright": "detect quarter turns", "none": "photos are upright"}.get,
        help="Detect photos taken sideways or upside down (matching each kept pair at 4 quarter "
        "turns) and extract their features turned upright.",
    )
    matcher = sb.radio(
        "Matcher",
        ["lightglue", "mnn"],
        index=["lightglue", "mnn"].index(d.matcher),
        horizontal=True,
        key="matcher",
        format_func={"lightglue": "LightGlue", "mnn": "mutual nearest neighbours"}.get,
        help="LightGlue: the accurate one (0.2-0.6 s a pair on a CPU). Mutual nearest neighbours "
        "with a ratio test: milliseconds a pair; COLMAP's verification drops its outliers.",
    )
    sb.subheader("Pairs")
    method = sb.radio(
        "Pairs from",
        ["retrieval", "exhaustive"],
        key="pairs_method",
        format_func={"retrieval": "DINOv2 retrieval", "exhaustive": "all pairs (exhaustive)"}.get,
    )
    off = method != "retrieval"
    threshold = sb.number_input(
        "Distance threshold (keep pairs closer than)",
        0.0,
        None,
        d.similarity_threshold,
        step=0.05,
        format="%.3f",
        key="threshold",
        disabled=off,
    )
    min_pairs = sb.number_input(
        "Min pairs per image (nearest neighbours)", 0, 10000, d.min_pairs, key="min_pairs", disabled=off
    )
    exhaustive_if_less = sb.number_input(
        "All pairs when fewer images than", 0, 100000, d.exhaustive_if_less, key="exhaustive_if_less", disabled=off
    )
    p = sb.selectbox(
        "Distance p (Minkowski)",
        [1.0, 2.0, math.inf],
        index=1,
        key="p",
        disabled=off,
        format_func=lambda v: "inf" if math.isinf(v) else f"{v:g}",
    )
    kaggle = models.DINOV2_KAGGLE_DIR
    default_dinov2 = os.environ.get("IMC_DINOV2") or (str(kaggle) if kaggle.is_dir() else "")
    dinov2 = sb.text_input(
        "DINOv2 source",
        value=default_dinov2,
        key="dinov2",
        disabled=off,
        placeholder="folder, hub id or Kaggle path",
        help=f"A folder with config.json + weights, the Kaggle model path "
        f"({models.DINOV2_KAGGLE_DIR}) or a hub id ({models.DINOV2_HUB_ID}, needs internet). "
        "Empty: no DINOv2; the pairs step then offers all pairs.",
    )
    with sb.expander("Weights"):
        weights = st.text_input(
            "ALIKED / DISK / LightGlue folder",
            value=os.environ.get("IMC_WEIGHTS_DIR", ""),
            key="weights",
            help="Empty: download the official weights (needs internet).",
        )
    return S.Settings(
        features=feats,
        max_keypoints=int(max_keypoints),
        resize_to=int(resize_to),
        orientation=turns,
        matcher=matcher,
        pairs_method=method,
        similarity_threshold=float(threshold),
        min_pairs=int(min_pairs),
        exhaustive_if_less=int(exhaustive_if_less),
        p=float(p),
        dinov2=dinov2.strip(),
        weights=weights.strip(),
    )


# --- 1. images ----------------------------------------------------------------------------------------


def step_images(c: Ctx) -> None:
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
    if len(c.names) < 2:
        st.warning("Pairs need at least 2 images.")
    shown = c.images.paths[:THUMBNAILS]
    st.image([thumbnail(str(p), p.stat().st_mtime_ns) for p in shown], caption=[p.name for p in shown], width=180)
    if len(c.names) > THUMBNAILS:
        st.caption(f"… and {len(c.names) - THUMBNAILS} more")
    with st.expander("Image sizes"):
        st.dataframe(sizes, hide_index=True)
    next_button("images")


# --- 2. pairs -------------------------------------------------------------------------------------------


def _write_pairs(c: Ctx, model) -> None:
    pairs.main(c.sconfs["pairs"], c.image_dir, c.names, c.paths["pairs"], c.paths["global"], DEVICE, model=model)
    ss = c.state
    c.mark_done("pairs")
    ss.pairs_for_images = c.fps["images"]
    kept = len(pairs.read_pairs(c.paths["pairs"]))
    if not ss.pair_history or ss.pair_history[-1]["fp"] != c.fps["pairs"]:
        ss.pair_history.append(
            {
                "fp": c.fps["pairs"],
                "images": c.fps["images"],
                "pairs": kept,
                "threshold": c.settings.similarity_threshold,
            }
        )


def refresh_pairs(c: Ctx) -> None:
    """Re-select pairs when a setting changed and that costs no network: all pairs, or a selection
    from descriptors already computed for these images. So the threshold's effect shows at once."""
    ss = c.state
    if c.images is None or len(c.names) < 2 or c.is_done("pairs") or ss.get("pairs_for_images") != c.fps["images"]:
        return
    cached = c.settings.dinov2 and ss.done.get("descriptors") == c.fps["descriptors"]
    if c.settings.all_pairs(len(c.names)) or cached:
        try:
            _write_pairs(c, _descriptors_only)
        except Exception as err:
            failed("Re-selecting pairs", err)


def run_pairs(c: Ctx) -> None:
    s = c.settings
    getter = None
    try:
        if s.pairs_method == "retrieval" and s.dinov2:
            getter = lambda: load_dinov2(s.dinov2)  # noqa: E731
            for name in progress(c.names, "DINOv2 descriptors"):
                pairs.compute_descriptors(c.image_dir, [name], c.paths["global"], getter, DEVICE)
            c.state.done["descriptors"] = c.fps["descriptors"]
        _write_pairs(c, getter or _descriptors_only)
    except Exception as err:
        failed("Pairs", err)
        if s.pairs_method == "retrieval":
            st.button("Use all pairs (exhaustive) instead", on_click=use_all_pairs, key="use_all_pairs_after_error")


def step_pairs(c: Ctx) -> None:
    if blocked(c, "pairs"):
        return
    n, s = len(c.names), c.settings
    if n < 2:
        st.error(f"Pairs need at least 2 images; use more in the sidebar (step {S.TITLES['images']}).")
        return
    all_pairs = s.all_pairs(n)
    if s.pairs_method == "exhaustive":
        st.markdown(f"All {n * (n - 1) // 2} pairs of the {n} images are matched.")
    elif not s.dinov2:
        if not all_pairs:
            st.error(
                "No DINOv2 model: retrieval needs one. Name a local folder, a Kaggle path "
                f"({models.DINOV2_KAGGLE_DIR}) or a hub id ({models.DINOV2_HUB_ID}) under 'DINOv2 source' "
                "in the sidebar, or match all pairs."
            )
            st.button("Use all pairs (exhaustive)", on_click=use_all_pairs, key="use_all_pairs", type="primary")
            return
        st.info(
            f"No DINOv2 source given, so no descriptor heatmap: with {n} images (fewer than "
            f"{s.exhaustive_if_less}) all pairs are matched anyway."
        )
    else:
        st.markdown(
            "DINOv2 global descriptors (max-pooled patch tokens) are compared pairwise; a pair is kept "
            f"when its distance is below **{s.similarity_threshold:g}**, and each image keeps its "
            f"**{s.min_pairs}** nearest neighbours."
        )
    if st.button("Run pairs", type="primary", key="run_pairs"):
        run_pairs(c)
    if c.is_done("pairs"):
        show_pairs(c)


def show_pairs(c: Ctx) -> None:
    s, names, n = c.settings, c.names, len(c.names)
    kept = pairs.read_pairs(c.paths["pairs"])
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
    col3.metric("Method", "all pairs" if s.all_pairs(n) else "DINOv2 retrieval")
    if previous is not None:
        st.caption(f"Previous selection: {previous['pairs']} pairs (threshold {previous['threshold']:g}).")
    if s.pairs_method == "retrieval" and s.all_pairs(n):
        st.info(
            f"{n} images, fewer than 'all pairs when fewer images than' ({s.exhaustive_if_less}): every pair "
            "is kept, as the pipeline does. Lower that setting to see the retrieval selection."
        )

    desc = None
    if s.pairs_method == "retrieval" and s.dinov2:
        if c.state.done.get("descriptors") == c.fps["descriptors"]:
            desc = pairs.compute_descriptors(c.image_dir, names, c.paths["global"], _descriptors_only, DEVICE)
        else:
            st.caption("Press 'Run pairs' to compute the DINOv2 descriptors for the heatmap.")
    distances = None
    if desc is not None:
        distances = pairs.distance_matrix(desc, s.p).numpy()
        st.plotly_chart(
            viz.distance_heatmap(distances, names, kept, title="descriptor distances, kept pairs circled"),
            key="pairs_heatmap",
        )
        finite = distances[np.isfinite(distances) & ~np.eye(n, dtype=bool)]
        top = max(float(finite.max()) * 1.05 if finite.size else 1.0, s.similarity_threshold)
        grid = np.linspace(0.0, top, CURVE_POINTS)
        counts = [len(pairs.pairs_from_descriptors(torch.from_numpy(desc), t, s.min_pairs, s.p)) for t in grid]
        st.plotly_chart(
            viz.threshold_curve(
                grid,
                counts,
                current=s.similarity_threshold,
                total=n * (n - 1) // 2,
                title=f"retrieval selection vs threshold (min pairs {s.min_pairs})",
            ),
            key="pairs_curve",
        )
    else:
        st.plotly_chart(viz.pairs_matrix(names, kept), key="pairs_matrix")
    table = pd.DataFrame(kept, columns=["image 0", "image 1"])
    if distances is not None:
        index = {name: i for i, name in enumerate(names)}
        table["distance"] = [distances[index[a], index[b]] for a, b in kept]
    with st.expander(f"The {len(kept)} kept pairs"):
        st.dataframe(table, hide_index=True)
    next_button("pairs")


# --- 3. keypoints -------------------------------------------------------------------------------------


def run_features(c: Ctx) -> None:
    s, sconfs = c.settings, c.sconfs
    conf = sconfs["features"]
    getter = lambda: load_extractor(s.features, s.max_keypoints, s.weights)  # noqa: E731
    try:
        turns = None
        if sconfs["orientation"]:
            bar = st.progress(
                0.0, text="Orientation: matching low-resolution features of every kept pair at 4 quarter turns…"
            )
            orientation.main(
                sconfs["orientation"],
                c.image_dir,
                c.names,
                c.paths["pairs"],
                c.paths["orientation"],
                DEVICE,
                extractor=lambda: load_orientation_nets(s.weights)[0],
                matcher=lambda: load_orientation_nets(s.weights)[1],
            )
            bar.progress(1.0, text="Orientation: done")
            turns = orientation.read_orientations(c.paths["orientation"])
            c.paths = S.stage_paths(Path(c.state.workspace.name), c.images, s, c.fps)  # named by the turns
        for name in progress(c.names, "keypoints"):
            features.main(conf, c.image_dir, [name], c.paths["features"], DEVICE, model=getter, turns=turns)
        c.state.results["features"] = {
            "fp": c.fps["features"],
            "counts": [len(features.read_features(c.paths["features"], n)["keypoints"]) for n in c.names],
        }
        c.mark_done("features")
    except Exception as err:
        failed("Keypoints", err)


def step_features(c: Ctx) -> None:
    if blocked(c, "features"):
        return
    s = c.settings
    st.markdown(
        f"**{s.features.upper()}** keypoints, at most {s.max_keypoints} per image, on images resized to "
        f"{s.resize_to} px (longest side); coordinates are mapped back to the original pixels."
        + ("" if s.orientation == "none" else " First, each photo's quarter turn is found from the kept pairs.")
    )
    if st.button("Extract keypoints", type="primary", key="run_features"):
        run_features(c)
    if not c.is_done("features"):
        return
    result = c.state.results.get("features", {})
    counts = (
        result["counts"]
        if result.get("fp") == c.fps["features"]
        else [len(features.read_features(c.paths["features"], n)["keypoints"]) for n in c.names]
    )
    col1, col2, col3, col4 = st.columns(4)
    col1.metric("Images with keypoints", f"{sum(k > 0 for k in counts)}/{len(counts)}")
    col2.metric("Keypoints (mean)", f"{np.mean(counts):.0f}")
    col3.metric("Keypoints (min)", min(counts))
    turns = orientation.read_orientations(c.paths["orientation"]) if c.sconfs["orientation"] else {}
    turned = {n: t for n, t in turns.items() if t % 4}
    col4.metric(
        "Photos turned",
        f"{len(turned)}/{len(c.names)}" if c.sconfs["orientation"] else "—",
        help="quarter turns found by the orientation stage; features were extracted on the turned photo "
        "and their keypoints mapped back to the stored pixels",
    )
    if turned:
        st.caption("Turned before extraction: " + ", ".join(f"{n} by {90 * t}°" for n, t in turned.items()))
    name = st.selectbox(
        "Image", c.names, key="keypoints_image", format_func=lambda n: f"{n} ({counts[c.names.index(n)]} keypoints)"
    )
    kpts = features.read_features(c.paths["features"], name)["keypoints"]
    st.pyplot(viz.show_keypoints(read_image(c.image_dir / name), kpts, title=f"{name}: {len(kpts)} keypoints"))
    with st.expander("Keypoints per image"):
        st.dataframe(pd.DataFrame({"image": c.names, "keypoints": counts}), hide_index=True)
    next_button("features")


# --- 4. matches -----------------------------------------------------------------------------------------


def run_matches(c: Ctx) -> None:
    s, sconfs = c.settings, c.sconfs
    feature_name = features.matcher_name(sconfs["features"])
    getter = lambda: load_matcher(feature_name, s.matcher, s.weights)  # noqa: E731
    args = (c.paths["features"], c.paths["matches"], feature_name, DEVICE)
    chunk_path = c.paths["matches"].with_name(f".chunk-{c.fps['matches'][:8]}.txt")
    try:
        pair_list = pairs.read_pairs(c.paths["pairs"])
        size = max(1, math.ceil(len(pair_list) / 50))  # about 50 progress updates
        # The matching stage works over a pairs file: feed it a slice at a time for the progress bar.
        for start in progress(range(0, len(pair_list), size), f"matching {len(pair_list)} pairs, batches"):
            pairs.write_pairs(pair_list[start : start + size], chunk_path)
            matching.main(sconfs["matching"], chunk_path, *args, model=getter)
        matching.main(sconfs["matching"], c.paths["pairs"], *args, model=getter)
        c.state.results["matches"] = {"fp": c.fps["matches"], "counts": S.match_counts(c.paths["matches"], pair_list)}
        c.mark_done("matches")
    except Exception as err:
        failed("Matching", err)
    finally:
        chunk_path.unlink(missing_ok=True)


def step_matches(c: Ctx) -> None:
    if blocked(c, "matches"):
        return
    min_matches = c.sconfs["matching"]["min_matches"]
    matcher = "LightGlue" if c.settings.matcher == "lightglue" else "Mutual nearest neighbours"
    st.markdown(
        f"{matcher} matches the keypoints of every kept pair; pairs with fewer than {min_matches} matches "
        "are stored empty and left out of the reconstruction."
    )
    if st.button("Match pairs", type="primary", key="run_matches"):
        run_matches(c)
    if not c.is_done("matches"):
        return
    pair_list = pairs.read_pairs(c.paths["pairs"])
    result = c.state.results.get("matches", {})
    counts = result["counts"] if result.get("fp") == c.fps["matches"] else S.match_counts(c.paths["matches"], pair_list)
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
    if k is None:
        return
    a, b = pair_list[k]
    m, scores = matching.read_matches(c.paths["matches"], a, b)
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
        features.read_features(c.paths["features"], a)["keypoints"],
        features.read_features(c.paths["features"], b)["keypoints"],
        m,
        scores,
        title=f"{a} – {b}: " + (f"{len(m)} matches" if len(m) else "no matches"),
    )
    st.pyplot(fig)
    next_button("matches")


# --- 5. reconstruction -----------------------------------------------------------------------------------


def run_reconstruction(c: Ctx) -> None:
    p = c.paths
    bar = st.progress(0.0, text="Reconstruction: COLMAP database, geometric verification, incremental mapping…")
    try:
        model = reconstruction.main(
            c.sconfs["reconstruction"], c.image_dir, c.names, p["pairs"], p["features"], p["matches"], p["sfm"]
        )
        bar.progress(0.8, text="Writing submission.csv and scoring it…")
        submission.write_submission(S.submission_rows(c.images, model), p["submission"])
        scored = S.score(c.images, p["submission"], model)
        bar.progress(1.0, text="Reconstruction: done")
        found = reconstruction.poses(model)
        c.state.results["reconstruction"] = {
            "fp": c.fps["reconstruction"],
            "registered": sum(n in found for n in c.names),
            "score": scored,
        }
        c.mark_done("reconstruction")
    except Exception as err:
        failed("Reconstruction", err)


def step_reconstruction(c: Ctx) -> None:
    if blocked(c, "reconstruction"):
        return
    st.markdown(
        "pycolmap verifies each matched pair's geometry and maps the scene incrementally; the model that "
        "registers the most images gives the poses."
    )
    if st.button("Reconstruct", type="primary", key="run_reconstruction"):
        run_reconstruction(c)
    if not c.is_done("reconstruction"):
        return
    result = c.state.results["reconstruction"]
    p = c.paths
    model = reconstruction.main(
        c.sconfs["reconstruction"], c.image_dir, c.names, p["pairs"], p["features"], p["matches"], p["sfm"]
    )  # reuses the model written above
    scored = result["score"]
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
    if model is None:
        st.error(
            "No model could be built: too few pairs passed geometric verification. Try more keypoints, "
            "more images or all pairs."
        )
        next_button("reconstruction")
        return
    errors = scored["errors"] if scored else None
    st.plotly_chart(
        viz.reconstruction_figure(model, camera_errors=errors, max_error=max(scored["thresholds"]) if scored else None),
        key="reconstruction_3d",
    )
    if scored:
        st.caption(
            "Camera colour: distance from the ground-truth centre after the metric's similarity alignment "
            f"(scene units; red at {max(scored['thresholds']):g} and beyond)."
        )
        st.dataframe(S.error_table(scored), hide_index=True)
    next_button("reconstruction")


# --- 6. submission -------------------------------------------------------------------------------------


def step_submission(c: Ctx) -> None:
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


STEP_VIEWS = {
    "images": step_images,
    "pairs": step_pairs,
    "features": step_features,
    "matches": step_matches,
    "reconstruction": step_reconstruction,
    "submission": step_submission,
}


def main() -> None:
    ss = init_state()
    try:
        images = choose_images(ss)
    except Exception as err:
        failed("Reading the images", err)
        images = None
    settings = choose_settings()
    fps = paths = {}
    if images is not None and images.names:
        fps = S.fingerprints(images, settings)
        paths = S.stage_paths(Path(ss.workspace.name), images, settings, fps)
        ss.done["images"] = fps["images"]
    c = Ctx(images, settings, fps, paths)

    st.title(TITLE)
    st.caption(
        "Photos → pairs → keypoints → matches → 3D reconstruction → submission.csv, one step at a time. "
        "Each step runs the imc_lib stage on this session's own copy of the files."
    )
    refresh_pairs(c)

    # Labels stay fixed (a label that changes would lose the selection); progress shows beside.
    step = st.radio(
        "Step", S.STEPS, format_func=S.TITLES.__getitem__, horizontal=True, key="step", label_visibility="collapsed"
    )
    done = [S.TITLES[s] for s in S.STEPS[:-1] if c.is_done(s)]
    st.caption("Up to date for these images and settings: " + (", ".join(done) if done else "nothing yet"))
    st.header(S.TITLES[step])
    try:
        STEP_VIEWS[step](c)
    except Exception as err:  # a page of the explorer must never end in a traceback
        failed(S.TITLES[step], err)


main()
