"""The explorer's sidebar: which images (a dataset scene or uploaded photos) and the stage settings,
named and valued as the CLI's options (`imc-lib run --features/--pairs/--orientation/--matcher`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import streamlit as st

from .. import networks, plan
from ..formats import data
from ..stages import matching, pairs
from . import session as S

DEFAULT_IMAGES = 10  # a dataset scene starts with its first 10 images: minutes, not hours, on a CPU
# A mixed folder (IMC 2025) needs enough photos of each of its scenes to make clusters: the first 40.
DEFAULT_MIXED_IMAGES = 40
LABELS = {
    "orientation": {"upright": "upright (own pass)", "mnn": "mnn (from the keypoints)", "none": "none (upright)"},
    "pairs": {"auto": "auto", "dinov2": "DINOv2 retrieval", "vlad": "VLAD retrieval", "exhaustive": "all pairs"},
}


@st.cache_data(show_spinner=False, ttl=30)
def list_scenes(data_dir: str, split: str) -> list[tuple[str, int, bool]]:
    """(key, images, mixed) of each scene (IMC 2025: each dataset, mixed)."""
    return [(s.key, len(s.image_names), s.mixed) for s in data.load_scenes(Path(data_dir).expanduser(), split)]


def _uploads(ss) -> S.ImageSet | None:
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
        return _uploads(ss)
    data_dir = st.sidebar.text_input(
        "Dataset folder",
        value=os.environ.get("IMC_DATA_DIR", "data"),
        key="data_dir",
        help="IMC 2024 layout: train/<scene>/images/, train/train_labels.csv "
        "(poses: the reconstruction step then shows the mAA), "
        "test/ + sample_submission.csv. IMC 2025 layout (told by its files): train/<dataset>/ photos of "
        "several scenes and outliers, train_labels.csv + train_thresholds.csv at the root (the "
        "reconstruction step then shows the score).",
    )
    split = st.sidebar.selectbox("Split", ["train", "test"], key="split")
    try:
        listed = list_scenes(data_dir, split)
    except (OSError, ValueError, KeyError) as err:
        st.sidebar.error(f"{err}")
        return None
    if not listed:
        st.sidebar.error(f"{data_dir}: no scenes in {split}")
        return None
    scenes, mixed = {k: n for k, n, _ in listed}, {k for k, _, m in listed if m}
    scene = st.sidebar.selectbox(
        "Scene",
        list(scenes),
        key="scene",
        format_func=lambda k: f"{k} ({scenes[k]} images{', mixed: scenes + outliers' if k in mixed else ''})",
    )
    default = DEFAULT_MIXED_IMAGES if scene in mixed else DEFAULT_IMAGES
    n = st.sidebar.number_input(
        "Use the first N images", 1, scenes[scene], min(scenes[scene], default), key=f"n_images:{scene}"
    )
    try:
        return S.dataset_images(Path(data_dir), split, scene, int(n))
    except (OSError, ValueError) as err:
        st.sidebar.error(f"{err}")
        return None


def _radio(label: str, options, default: str, key: str, **kwargs) -> str:
    return st.sidebar.radio(label, list(options), index=list(options).index(default), key=key, **kwargs)


def _stage_settings(d: S.Settings) -> dict:
    sb = st.sidebar
    return {
        "features": _radio("Features (--features)", tuple(plan.confs), d.features, "features", horizontal=True),
        "max_keypoints": sb.number_input(
            "Max keypoints per image", 64, 16384, d.max_keypoints, step=256, key="max_keypoints"
        ),
        "resize_to": sb.number_input(
            "Resize to (longest side, px; 0: each photo's own size within 640-1024)",
            0,
            4096,
            d.resize_to,
            step=64,
            key="resize_to",
        ),
        "orientation": _radio(
            "Orientation (--orientation)",
            S.ORIENTATIONS,
            d.orientation,
            "orientation",
            format_func=LABELS["orientation"].get,
            help="Find photos taken sideways or upside down and extract their features turned upright: "
            "upright matches each kept pair at 4 quarter turns with its own low-resolution networks; mnn "
            "does so with the main keypoints (the CPU default); none: the photos are upright.",
        ),
        "matcher": _radio(
            "Matcher (--matcher)",
            tuple(matching.confs),  # read live: a matcher registered later is offered too
            d.matcher,
            "matcher",
            horizontal=True,
            format_func=lambda name: networks.MATCHER_LABELS.get(name, name),
            help="LightGlue: the accurate one (0.2-0.6 s a pair on a CPU). Mutual nearest neighbours "
            "with a ratio test: milliseconds a pair; COLMAP's verification drops its outliers.",
        ),
    }


def _pair_settings(d: S.Settings) -> dict:
    """The pair method and its retrieval knobs, which start at the resolved method's config (DINOv2
    and VLAD keep their own values: the vlad widgets' keys end in ':vlad')."""
    sb = st.sidebar
    sb.subheader("Pairs")
    method = _radio(
        "Pairs from (--pairs)",
        S.PAIR_METHODS,
        d.pairs,
        "pairs",
        format_func=LABELS["pairs"].get,
        help="auto: DINOv2 retrieval when a DINOv2 source is given, else VLAD (no weights). "
        "Scenes under 'all pairs when fewer images than' get all pairs either way.",
    )
    off = method == "exhaustive"
    dinov2 = _dinov2(off or method == "vlad")
    resolved = S.Settings(pairs=method, dinov2=dinov2).pair_method
    conf = pairs.confs["vlad" if resolved == "vlad" else "dinov2"]
    suffix = ":vlad" if resolved == "vlad" else ""
    return {
        "pairs": method,
        "dinov2": dinov2,
        "max_distance": sb.number_input(
            "Distance threshold (keep pairs closer than)",
            0.0,
            None,
            float(conf["max_distance"]),
            step=0.05,
            format="%.3f",
            key=f"threshold{suffix}",
            disabled=off,
        ),
        "min_pairs": sb.number_input(
            "Min pairs per image (nearest neighbours)",
            0,
            10000,
            conf["min_pairs"],
            key=f"min_pairs{suffix}",
            disabled=off,
        ),
        "exhaustive_if_less": sb.number_input(
            "All pairs when fewer images than",
            0,
            100000,
            conf["exhaustive_if_less"],
            key=f"exhaustive_if_less{suffix}",
            disabled=off,
        ),
        "p": sb.selectbox(
            "Distance p (Minkowski)",
            [1.0, 2.0, math.inf],
            index=1,
            key=f"p{suffix}",
            disabled=off,
            format_func=lambda v: "inf" if math.isinf(v) else f"{v:g}",
        ),
    }


def _dinov2(off: bool) -> str:
    sb = st.sidebar
    kaggle = networks.DINOV2_KAGGLE_DIR
    dinov2 = sb.text_input(
        "DINOv2 source",
        value=os.environ.get("IMC_DINOV2") or (str(kaggle) if kaggle.is_dir() else ""),
        key="dinov2",
        disabled=off,
        placeholder="folder, hub id or Kaggle path",
        help=f"A folder with config.json + weights, the Kaggle model path "
        f"({networks.DINOV2_KAGGLE_DIR}) or a hub id ({networks.DINOV2_HUB_ID}, needs internet). "
        "Empty: no DINOv2; 'auto' pairs then use VLAD.",
    )
    return dinov2.strip()


def _weights() -> str:
    with st.sidebar.expander("Weights"):
        weights = st.text_input(
            "ALIKED / DISK / LightGlue folder",
            value=os.environ.get("IMC_WEIGHTS_DIR", ""),
            key="weights",
            help="Empty: download the official weights (needs internet).",
        )
    return weights.strip()


def choose_settings() -> S.Settings:
    d = S.Settings()
    st.sidebar.header("Settings")
    stage = _stage_settings(d)
    pair = _pair_settings(d)
    chosen = {**stage, **pair, "weights": _weights()}
    for key in ("max_keypoints", "resize_to", "min_pairs", "exhaustive_if_less"):
        chosen[key] = int(chosen[key])
    for key in ("max_distance", "p"):
        chosen[key] = float(chosen[key])
    return S.Settings(**chosen)
