"""What the explorer knows about one browser session, kept free of Streamlit so it can be tested
alone: the chosen images, the settings, where each stage writes, and which steps are up to date.

A step is up to date when the fingerprint it stored on completion equals the one the current
images and settings give; fingerprints chain (matches hash the pairs' and features' fingerprints),
so changing an image or a setting makes exactly the steps that depend on it out of date.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import data, matching, metric, orientation, pairs, pipeline, reconstruction, submission
from ..utils import pick_device

STEPS = ("images", "pairs", "features", "matches", "reconstruction", "submission")
TITLES = {
    "images": "1. Images",
    "pairs": "2. Pairs",
    "features": "3. Keypoints",
    "matches": "4. Matches",
    "reconstruction": "5. Reconstruction",
    "submission": "6. Submission",
}
# What each step reads, in pipeline order: keypoints need the pairs, whose matches give each
# photo's quarter turns (orientation). The submission is written (and scored) by the
# reconstruction step, so it has no fingerprint of its own.
NEEDS = {
    "images": (),
    "pairs": ("images",),
    "features": ("pairs",),
    "matches": ("pairs", "features"),
    "reconstruction": ("matches",),
    "submission": ("reconstruction",),
}
UPLOAD_SUFFIXES = {".jpg", ".jpeg", ".png"}
UPLOAD_FORMATS = {"JPEG", "PNG"}
_RETRIEVAL = pairs.confs["dinov2"]
_ON_CPU = pick_device(None).type == "cpu"


def digest(*parts) -> str:
    """Stable 16-hex-digit hash of JSON-able parts (paths and other objects by their str)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Settings:
    """The sidebar's stage settings."""

    features: str = "aliked"  # pipeline config: aliked | disk
    max_keypoints: int = pipeline.CPU_MAX_KEYPOINTS
    # Without a GPU, the CLI's CPU speed settings (pipeline.CPU_DEFAULTS) for size and matcher.
    resize_to: int = pipeline.CPU_DEFAULTS["resize_to"] if _ON_CPU else 1024
    orientation: str = "upright"  # upright: detect quarter turns first | none: photos are upright
    matcher: str = pipeline.CPU_DEFAULTS["matcher"] if _ON_CPU else "lightglue"  # lightglue | mnn
    pairs_method: str = "retrieval"  # retrieval (DINOv2) | exhaustive
    similarity_threshold: float = _RETRIEVAL["similarity_threshold"]
    min_pairs: int = _RETRIEVAL["min_pairs"]
    exhaustive_if_less: int = _RETRIEVAL["exhaustive_if_less"]
    p: float = _RETRIEVAL["p"]
    dinov2: str = ""  # local folder, hub id or Kaggle path; "" = none
    weights: str = ""  # ALIKED/DISK/LightGlue folder; "" = $IMC_WEIGHTS_DIR or download

    def stage_confs(self) -> dict:
        """Per-stage configs (pipeline.stage_confs with these overrides)."""
        method = "exhaustive" if self.pairs_method == "exhaustive" else "dinov2"
        sconfs = pipeline.stage_confs(
            self.features, int(self.max_keypoints), method, int(self.resize_to), self.orientation, matcher=self.matcher
        )
        if method == "dinov2":
            sconfs["pairs"].update(
                similarity_threshold=float(self.similarity_threshold),
                min_pairs=int(self.min_pairs),
                exhaustive_if_less=int(self.exhaustive_if_less),
                p=float(self.p),
                model=self.dinov2 or None,
            )
        return sconfs

    def all_pairs(self, n_images: int) -> bool:
        """Whether the pairs stage keeps every pair (exhaustive, or too few images for retrieval)."""
        return self.pairs_method == "exhaustive" or n_images < int(self.exhaustive_if_less)


@dataclass(frozen=True)
class ImageSet:
    """The images being explored: a scene record, its labels (if any) and the files refused."""

    scene: data.Scene
    fingerprint: str
    labels: Path | None = None  # train_labels.csv holding these images
    categories: Path | None = None
    rejected: tuple[tuple[str, str], ...] = ()  # (file name, why)
    sizes: tuple[tuple[int, int], ...] = field(default=(), compare=False)  # (width, height) per image

    @property
    def names(self) -> list[str]:
        return list(self.scene.image_names)

    @property
    def paths(self) -> list[Path]:
        return [self.scene.image_dir / n for n in self.scene.image_names]


def _sizes(paths) -> tuple[tuple[int, int], ...]:
    out = []
    for path in paths:
        with Image.open(path) as im:
            out.append(im.size)
    return tuple(out)


def dataset_images(data_dir: Path, split: str, scene_key: str, limit: int | None = None) -> ImageSet:
    """The first `limit` images of one scene of an IMC folder (data.load_scenes), with its labels
    when the split is train and train_labels.csv exists."""
    data_dir = Path(data_dir).expanduser()
    scenes = {s.key: s for s in data.load_scenes(data_dir, split)}
    if scene_key not in scenes:
        raise ValueError(f"{data_dir} ({split}): no scene {scene_key!r}; known: {sorted(scenes)}")
    scene = scenes[scene_key]
    if limit is not None:
        n = max(int(limit), 0)
        scene = data.Scene(scene.dataset, scene.scene, scene.image_dir, scene.image_names[:n], scene.image_paths[:n])
    missing = [n for n in scene.image_names if not (scene.image_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{scene.image_dir}: image(s) {missing[:5]} listed but not found; check the data folder"
        )
    stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (scene.image_dir / n for n in scene.image_names)]
    labels = data_dir / "train" / "train_labels.csv"
    return ImageSet(
        scene=scene,
        fingerprint=digest("dataset", scene.image_dir.resolve(), scene.dataset, scene.scene, scene.image_names, stats),
        labels=labels if split == "train" and labels.is_file() else None,
        categories=data_dir / "train" / "categories.csv",
        sizes=_sizes(scene.image_dir / n for n in scene.image_names),
    )


def _clean_name(name: str) -> str:
    """A file name safe for the pairs file and HDF5: no folders, no whitespace."""
    name = Path(name.replace("\\", "/")).name
    return re.sub(r"\s+", "_", name.strip()) or "image"


def check_upload(name: str, content: bytes) -> str | None:
    """Why an uploaded file cannot be used (None when it is a readable JPG/PNG)."""
    if Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        return "not a JPG or PNG file"
    try:
        with Image.open(io.BytesIO(content)) as im:
            kind = im.format
            im.load()  # decode fully: truncated files open fine and fail here
    except Exception as err:  # PIL raises many types for broken files
        return f"not a readable image ({err})"
    if kind not in UPLOAD_FORMATS:
        return f"a {kind} image, not JPG or PNG"
    return None


def upload_images(files: list[tuple[str, bytes]], root: Path) -> ImageSet:
    """Check uploaded (name, bytes) files and write the usable ones to `root/uploads-<hash>/images`.

    Files that are not readable JPG/PNG images are listed in `rejected` and skipped; names are made
    safe (no whitespace) and unique. The folder is named by the content hash, so a rerun with the
    same upload finds it written.
    """
    good, rejected = [], []
    for name, content in files:
        why = check_upload(name, content)
        if why:
            rejected.append((name, why))
        else:
            good.append((_clean_name(name), content))
    taken: dict[str, int] = {}
    unique = []
    for name, content in good:
        stem, suffix = Path(name).stem, Path(name).suffix
        count = taken.get(name, 0)
        taken[name] = count + 1
        unique.append((name if count == 0 else f"{stem}-{count}{suffix}", content))
    fingerprint = digest("upload", [(n, hashlib.sha1(c).hexdigest()) for n, c in unique])
    image_dir = Path(root) / f"uploads-{fingerprint[:12]}" / "images"
    if not image_dir.is_dir():
        tmp = image_dir.with_name("images.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, content in unique:
            (tmp / name).write_bytes(content)
        tmp.rename(image_dir)
    names = tuple(n for n, _ in unique)
    scene = data.Scene("upload", "upload", image_dir, names, tuple(f"test/upload/images/{n}" for n in names))
    return ImageSet(
        scene=scene, fingerprint=fingerprint, rejected=tuple(rejected), sizes=_sizes(image_dir / n for n in names)
    )


def fingerprints(images: ImageSet, settings: Settings) -> dict[str, str]:
    """The fingerprint each step must have stored to count as done for these images and settings."""
    sconfs = settings.stage_confs()
    fp = {"images": images.fingerprint, "descriptors": digest(images.fingerprint, settings.dinov2)}
    if settings.all_pairs(len(images.names)):
        fp["pairs"] = digest(fp["images"], "all pairs")
    else:
        fp["pairs"] = digest(
            fp["images"], "retrieval", fp["descriptors"], settings.similarity_threshold, settings.min_pairs, settings.p
        )
    # Quarter turns come from matching the kept pairs, so with orientation on they follow the pairs.
    fp["orientation"] = digest(fp["pairs"], sconfs["orientation"]) if sconfs["orientation"] else "none"
    fp["features"] = digest(fp["images"], sconfs["features"], fp["orientation"], settings.weights)
    fp["matches"] = digest(fp["pairs"], fp["features"], sconfs["matching"])
    fp["reconstruction"] = digest(fp["matches"], sconfs["reconstruction"])
    return fp


def missing_step(step: str, done: dict[str, str], expected: dict[str, str]) -> tuple[str, str] | None:
    """(earliest step that must run before `step`, why) or None when all it needs is up to date."""
    needed, todo = set(), list(NEEDS[step])
    while todo:
        s = todo.pop()
        if s not in needed:
            needed.add(s)
            todo.extend(NEEDS[s])
    for s in STEPS:
        if s in needed and done.get(s) != expected.get(s):
            if s == "images":
                return s, "no images yet: choose a scene or upload photos in the sidebar"
            why = "it has not run yet" if s not in done else "the images or settings changed since it ran"
            return s, why
    return None


def missing_message(step: str, done: dict[str, str], expected: dict[str, str]) -> str | None:
    """The error a step shows when something before it is not done (None when it can run)."""
    missing = missing_step(step, done, expected)
    if missing is None:
        return None
    s, why = missing
    if s == "images":
        return f"Step {TITLES['images']} first: {why}."
    return f"Run step {TITLES[s]} first: {why} (needed by {TITLES[step]})."


def stage_paths(work_dir: Path, images: ImageSet, settings: Settings, fps: dict[str, str]) -> dict:
    """Where each stage writes for these images and settings: pipeline.scene_paths under a folder per
    image set, the pairs file named by its selection's fingerprint, and features and matches named
    by the quarter turns actually found (read from the orientation file once it exists), so a new
    pair selection that turns no photo differently reuses every keypoint and match."""
    sconfs = settings.stage_confs()
    sconfs["pairs"]["output"] += f"-{fps['pairs'][:8]}"
    paths = pipeline.scene_paths(Path(work_dir) / images.fingerprint[:12], images.scene, sconfs)
    paths["global"] = paths["pairs"].with_name(f"global-{fps['descriptors'][:8]}.h5")
    turns = {}
    if sconfs["orientation"] and paths["orientation"].is_file():
        turns = orientation.read_orientations(paths["orientation"])
    turned = sorted((n, t) for n, t in turns.items() if t % 4)
    feats = sconfs["features"]["output"] + (f"-turns{digest(turned)[:8]}" if turned else "")
    paths["features"] = paths["features"].with_name(f"{feats}.h5")
    # Matches are stored per pair, so one file serves every pair selection: a new threshold
    # matches only the pairs it adds.
    paths["matches"] = paths["features"].with_name(f"{feats}_{sconfs['matching']['output']}.h5")
    paths["sources"] = [(paths["features"], paths["matches"])]
    paths["submission"] = paths["sfm"].with_name(f"submission-{fps['reconstruction'][:8]}.csv")
    return paths


def submission_rows(images: ImageSet, model) -> list[dict]:
    """Rows for submission.write_submission: every image, with its pose when registered."""
    return submission.scene_rows(images.scene, reconstruction.poses(model))


def score(images: ImageSet, submission_path: Path, model) -> dict | None:
    """mAA of a written submission against the labels of these images, and each camera's error
    (scene units, after the registration the metric picks at the scene's largest threshold; inf for
    images the reconstruction left out). None when there are no labels for these images."""
    if images.labels is None:
        return None
    labels = submission.read_poses(images.labels, "labels")
    scene = images.scene
    labels = labels[
        (labels["dataset"] == scene.dataset)
        & (labels["scene"] == scene.scene)
        & labels["image_name"].isin(scene.image_names)
    ].reset_index(drop=True)
    if labels.empty:
        return None
    categories = data.load_categories(images.categories)
    table = metric.score(labels, submission_path, categories=categories)
    thresholds = metric.scene_thresholds(scene.scene, categories)
    found = reconstruction.poses(model)
    est = submission.read_poses(submission_path).set_index("image_name").loc[labels["image_name"]].reset_index()
    centres = metric.camera_centres(est)
    centres[~labels["image_name"].isin(list(found)).to_numpy()] = np.nan
    errors = metric.camera_errors(metric.camera_centres(labels), centres, max(thresholds))
    return {
        "mAA": float(table["mAA"].iloc[0]),
        "labelled": len(labels),
        "thresholds": tuple(thresholds),
        "errors": dict(zip(labels["image_name"], map(float, errors))),
    }


def error_table(result: dict) -> pd.DataFrame:
    """One row per labelled image: its error and how many of the metric's thresholds it is within."""
    thresholds = result["thresholds"]
    rows = [
        {
            "image": name,
            "error": err if math.isfinite(err) else None,
            "within thresholds": f"{sum(err < t for t in thresholds)}/{len(thresholds)}",
        }
        for name, err in result["errors"].items()
    ]
    return pd.DataFrame(rows, columns=["image", "error", "within thresholds"])


def match_counts(match_path: Path, pair_list: list[tuple[str, str]]) -> list[int]:
    """Stored matches per pair (0 for pairs the matching stage kept empty)."""
    return [len(matching.read_matches(match_path, a, b)[0]) for a, b in pair_list]
