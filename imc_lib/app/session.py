"""What the explorer knows about one browser session, kept free of Streamlit so it can be tested
alone: the chosen images, the settings (the CLI's, mapped through `plan.resolve`), the pipeline's
plan for them (`scene_plan`: confs and files), and which steps are up to date.

Which steps are up to date is read from the runner's declarations (runner.status): a step is up to
date when every stage it runs, and every stage before, carries the stamp these images and settings
give. Fingerprints follow the declared files, so changing a photo or a setting makes exactly the steps
that depend on it out of date; the app keeps no chain of its own.

A dataset of an IMC 2025 folder is one mixed photo set (several scenes and outliers): the same
steps run on it, and its reconstruction keeps every cluster (`cluster_groups`, `score_mixed`).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .. import plan, runner
from ..formats import data, metric, submission
from ..plan import ScenePlan
from ..stages import orientation, pairs, reconstruction
from ..storage.io import MatchReader, digest
from ..utils import image_size, pick_device

# The explorer's steps; each runs the pipeline up to a stage of runner.STAGES (runner.run_scene's
# `until`), so the order is the library's. Keypoints include the orientation stage before them (and
# VLAD's pairs chosen again on the turned photos); an ensemble's merge belongs to the matches. The
# submission is written (and scored) by the reconstruction step.
_ORDER = [s.name for s in runner.STAGES]
STEP_STAGES = {"pairs": "pairs", "features": "pairs-again", "matches": "merge", "reconstruction": "reconstruction"}
STEPS = ("images", *sorted(STEP_STAGES, key=lambda s: _ORDER.index(STEP_STAGES[s])), "submission")
TITLES = {
    "images": "1. Images",
    "pairs": "2. Pairs",
    "features": "3. Keypoints",
    "matches": "4. Matches",
    "reconstruction": "5. Reconstruction",
    "submission": "6. Submission",
}
UPLOAD_SUFFIXES = {".jpg", ".jpeg", ".png"}
UPLOAD_FORMATS = {"JPEG", "PNG"}
DEVICE = pick_device(None)
_ON_CPU = DEVICE.type == "cpu"
# The CLI's choices (imc-lib run --features / --pairs / --orientation / --matcher).
PAIR_METHODS = plan.PAIR_METHODS  # the CLI's --pairs choices
ORIENTATIONS = (*orientation.confs, "none")
# Retrieval knobs the sidebar exposes (both dinov2 and vlad have them).
RETRIEVAL_KEYS = ("max_distance", "min_pairs", "exhaustive_if_less", "p")


def _default(name: str, gpu):
    """A setting's default: the CLI's CPU speed setting without a GPU (plan.CPU_DEFAULTS)."""
    return plan.CPU_DEFAULTS[name] if _ON_CPU else gpu


@dataclass(frozen=True)
class Settings:
    """The sidebar's stage settings, in the CLI's vocabulary; `stage_confs` maps them through
    `plan.resolve`. Retrieval knobs left at None keep the pairs config's own values."""

    features: str = "aliked"  # --features: a plan.confs name (aliked, disk, xfeat, aliked+disk ...)
    max_keypoints: int = _default("max_keypoints", 4096)
    resize_to: int = 0 if _default("resize_to", 1024) == "auto" else _default("resize_to", 1024)  # 0: auto
    orientation: str = _default("orientation", "upright")  # --orientation: upright | mnn | none
    matcher: str = _default("matcher", "lightglue")  # --matcher: lightglue | mnn
    pairs: str = "auto"  # --pairs: auto (DINOv2 when a source is given, else vlad) | dinov2 | vlad | exhaustive
    max_distance: float | None = None
    min_pairs: int | None = None
    exhaustive_if_less: int | None = None
    p: float | None = None
    dinov2: str = ""  # local folder, hub id or Kaggle path; "" = none
    weights: str = ""  # ALIKED/DISK/LightGlue folder; "" = $IMC_WEIGHTS_DIR or download

    @property
    def pair_method(self) -> str:
        """The pair method "auto" stands for here: DINOv2 when a source is given, else VLAD (as the CLI's
        `plan.choose_pairs`, whose default sources the sidebar's DINOv2 field starts from)."""
        if self.pairs == "auto":
            return "dinov2" if self.dinov2 else "vlad"
        return self.pairs

    def stage_confs(self, scene: data.Scene | None = None) -> dict:
        """Per-stage configs (plan.resolve with these settings); for `scene`, as plan.scene_confs
        makes them (all pairs, so named, below the retrieval threshold)."""
        # A value at this device's default is left to `resolve`, as the CLI leaves an option unset:
        # on a GPU the features then keep their plain names (feats-aliked-n16, not ...-4096-r1024).
        sconfs = plan.resolve(
            device=DEVICE,
            features=self.features,
            max_keypoints=None if self.max_keypoints == Settings.max_keypoints else int(self.max_keypoints),
            pairs=self.pair_method,
            resize_to=None if self.resize_to == Settings.resize_to else int(self.resize_to) or "auto",
            orientation=self.orientation,
            matcher=self.matcher,
            dinov2=self.dinov2 or None,
        )
        knobs = {k: getattr(self, k) for k in RETRIEVAL_KEYS if getattr(self, k) is not None}
        if sconfs["pairs"]["method"] != "exhaustive":
            sconfs["pairs"].update(knobs)
        return sconfs if scene is None else plan.scene_confs(sconfs, scene)

    def all_pairs(self, scene: data.Scene) -> bool:
        """Whether the pairs stage keeps every pair (exhaustive, or too few images for retrieval)."""
        return self.stage_confs(scene)["pairs"]["method"] == "exhaustive"


@dataclass(frozen=True)
class ImageSet:
    """The images being explored: a scene record, its labels (if any) and the files refused."""

    scene: data.Scene
    fingerprint: str
    labels: Path | None = None  # train_labels.csv holding these images (IMC 2024 or 2025, as the folder)
    categories: Path | None = None
    thresholds: Path | None = None  # IMC 2025: train_thresholds.csv, the metric's thresholds per scene
    rejected: tuple[tuple[str, str], ...] = ()  # (file name, why)
    sizes: tuple[tuple[int, int], ...] = field(default=(), compare=False)  # (width, height) per image

    @property
    def names(self) -> list[str]:
        return list(self.scene.image_names)

    @property
    def paths(self) -> list[Path]:
        return [self.scene.image_dir / n for n in self.scene.image_names]

    @property
    def mixed(self) -> bool:
        """A mixed folder (an IMC 2025 dataset): several scenes and outliers, clustered by the reconstruction."""
        return self.scene.mixed


def _sizes(paths) -> tuple[tuple[int, int], ...]:
    return tuple(image_size(path) for path in paths)


def dataset_images(data_dir: Path, split: str, scene_key: str, limit: int | None = None) -> ImageSet:
    """The first `limit` images of one scene of an IMC folder (data.load_scenes; an IMC 2025 folder's
    datasets are mixed scenes), with its labels when the split is train and train_labels.csv exists
    (2025: at the folder's root, with train_thresholds.csv)."""
    data_dir = Path(data_dir).expanduser()
    scenes = {s.key: s for s in data.load_scenes(data_dir, split)}
    if scene_key not in scenes:
        raise ValueError(f"{data_dir} ({split}): no scene {scene_key!r}; known: {sorted(scenes)}")
    scene = scenes[scene_key]
    if limit is not None:
        n = max(int(limit), 0)
        ids = scene.image_ids[:n]
        scene = replace(scene, image_names=scene.image_names[:n], image_paths=scene.image_paths[:n], image_ids=ids)
    missing = [n for n in scene.image_names if not (scene.image_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{scene.image_dir}: image(s) {missing[:5]} listed but not found; check the data folder"
        )
    stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (scene.image_dir / n for n in scene.image_names)]
    labels = data_dir / "train_labels.csv" if scene.mixed else data_dir / "train" / "train_labels.csv"
    thresholds = data_dir / "train_thresholds.csv"
    return ImageSet(
        scene=scene,
        fingerprint=digest("dataset", scene.image_dir.resolve(), scene.dataset, scene.scene, scene.image_names, stats),
        labels=labels if split == "train" and labels.is_file() else None,
        categories=data_dir / "train" / "categories.csv",
        thresholds=thresholds if scene.mixed and thresholds.is_file() else None,
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


def scene_plan(workspace: Path, images: ImageSet, settings: Settings) -> ScenePlan:
    """The pipeline's plan for these images and settings (plan.plan_scene), in their work folder."""
    return plan.plan_scene(images.scene, settings.stage_confs(), work_dir(workspace, images), settings.weights or None)


def _step_at(stage_name: str) -> str:
    """The first step whose last stage is at or after `stage_name` in the runner's order."""
    return next(s for s in STEPS if s in STEP_STAGES and _ORDER.index(STEP_STAGES[s]) >= _ORDER.index(stage_name))


def step_stages(scene_plan: ScenePlan, step: str) -> list[str]:
    """The stages whose state a step shows: those up to its last stage after the previous step's, a
    stage whose files a later step reads first going with that step (the main features as stored
    that only the `mnn` orientation reads belong to the keypoints, not to the pairs)."""
    stages = runner.planned(scene_plan)
    last = {_step_at(s.name): s.name for s in stages}.values()  # each step's last stage that applies stays
    owner = {}
    for i, s in enumerate(stages):
        outputs = {Path(o) for o in s.outputs(scene_plan)}
        readers = [
            t for t in stages[i + 1 :] if outputs & {Path(x) for x in t.inputs(scene_plan) if x != runner.PHOTOS}
        ]
        later = _step_at(readers[0].name) if readers and s.name not in last else "images"
        owner[s.name] = max(_step_at(s.name), later, key=STEPS.index)
    return [name for name, of in owner.items() if of == step]


def step_status(scene_plan: ScenePlan) -> dict[str, bool | None]:
    """step -> True when it is up to date: every stage it and the steps before it run is (runner.status:
    the stamps the runner left against the fingerprints of these images and settings); False when it
    ran for other photos or settings; None when it never ran here."""
    current, ran = runner.status(scene_plan), runner.ran(scene_plan)
    done, ok = {"images": True}, True
    for step in STEPS[1:-1]:
        names = step_stages(scene_plan, step)
        ok = ok and all(current[name] for name in names)
        done[step] = True if ok else (False if any(ran[name] for name in names) else None)
    return done


def step_fingerprints(images: ImageSet, scene_plan: ScenePlan) -> dict[str, str]:
    """step -> a digest of its stages' fingerprints (runner.fingerprints): what a view caches its
    results under, so they are read again when the images or a setting they depend on change."""
    fps = runner.fingerprints(scene_plan)
    steps = {step: digest(step, [fps[name] for name in step_stages(scene_plan, step)]) for step in STEPS[1:-1]}
    return {"images": images.fingerprint, **steps}


def extracted(scene_plan: ScenePlan) -> bool:
    """Whether the features as stored that VLAD pairs or the `mnn` orientation read are up to date
    (True where no stage reads them before the pairs)."""
    return runner.status(scene_plan).get("extract", True)


class _NotStored(Exception):
    pass


def _not_stored():
    raise _NotStored


def stored_descriptors(scene_plan: ScenePlan) -> np.ndarray | None:
    """The DINOv2 descriptors stored for every photo of a retrieval plan; None when any is missing
    (the pairs step computes them) or the plan does not retrieve."""
    path = scene_plan.paths.descriptors
    if scene_plan.confs["pairs"]["method"] != "retrieval" or not path.exists():
        return None
    try:
        return pairs.compute_descriptors(scene_plan.scene.image_dir, scene_plan.names, path, _not_stored, DEVICE)
    except _NotStored:
        return None


def missing_step(step: str, done: dict[str, bool | None]) -> tuple[str, str] | None:
    """(earliest step that must run before `step`, why) or None when every step before it is up to date."""
    for s in STEPS[: STEPS.index(step)]:
        if not done.get(s):
            if s == "images":
                return s, "no images yet: choose a scene or upload photos in the sidebar"
            why = "the images or settings changed since it ran" if done.get(s) is False else "it has not run yet"
            return s, why
    return None


def missing_message(step: str, done: dict[str, bool | None]) -> str | None:
    """The error a step shows when something before it is not done (None when it can run)."""
    missing = missing_step(step, done)
    if missing is None:
        return None
    s, why = missing
    if s == "images":
        return f"Step {TITLES['images']} first: {why}."
    return f"Run step {TITLES[s]} first: {why} (needed by {TITLES[step]})."


def work_dir(workspace: Path, images: ImageSet) -> Path:
    """The pipeline's work folder for one image set (as the CLI's --work): a folder per set."""
    return Path(workspace) / images.fingerprint[:12]


def submission_path(workspace: Path, images: ImageSet) -> Path:
    """The app's own submission.csv, beside the scene's folder."""
    return work_dir(workspace, images) / "submission.csv"


def stale_outputs(scene_plan: ScenePlan, step: str) -> list[Path]:
    """The files the stages of `step` write and that exist although those stages are not up to date
    (runner.stale_outputs): the app removes them before the step runs again, so no view shows them."""
    return runner.stale_outputs(scene_plan, step_stages(scene_plan, step))


def submission_rows(images: ImageSet, model, clusters: list[dict] | None = None) -> list[dict]:
    """Rows for submission.write_submission: every image, with its pose when registered; a mixed
    set's rows name its `clusters` (run_scene's "clusters": poses per cluster, largest first)."""
    if images.mixed:
        return submission.scene_rows(images.scene, {}, clusters or [])
    return submission.scene_rows(images.scene, reconstruction.poses(model))


def cluster_groups(images: ImageSet, clusters: list[dict]) -> dict[str, list[str]]:
    """{cluster name: its photos}, named as the submission names them (cluster0 the largest, ...),
    then `outliers`: the photos in no cluster (maybe none); each list in the set's order."""
    groups: dict[str, list[str]] = {f"cluster{i}": [] for i in range(sum(bool(c) for c in clusters))}
    groups[submission.OUTLIERS] = []
    for row in submission.scene_rows(images.scene, {}, clusters):
        groups[row["scene"]].append(row["image"])
    return groups


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


def score_mixed(images: ImageSet, submission_path: Path) -> dict | None:
    """The IMC 2025 score of a mixed set's written submission against the labels of these images:
    {"dataset": score, mAA, clusterness, outliers found (metric.score_2025's row), "scenes": each
    labelled scene's matched cluster and mAA, "errors": {cluster: ({image: error}, largest threshold)}
    (each camera of a cluster against the scenes matched to it, after the metric's registration at
    that scene's largest threshold; photos of no matched scene have none)}. None without labels."""
    if images.labels is None or images.thresholds is None:
        return None
    scene = images.scene
    labels = submission.read_poses(images.labels, "2025")
    labels = labels[(labels["dataset"] == scene.dataset) & labels["image_name"].isin(scene.image_names)]
    if labels.empty:
        return None
    thresholds = metric.read_thresholds(images.thresholds)
    datasets, scenes = metric.score_2025(labels.reset_index(drop=True), submission_path, thresholds)
    est = submission.read_poses(submission_path, "2025").set_index("image_name")
    errors: dict[str, tuple[dict, float]] = {}
    for name, cluster in zip(scenes["scene"], scenes["cluster"]):
        if not cluster:
            continue
        truth = labels[(labels["scene"] == name) & labels["image_name"].isin(est.index[est["scene"] == cluster])]
        top = max(thresholds[(scene.dataset, name)])
        found = metric.camera_errors(
            metric.camera_centres(truth), metric.camera_centres(est.loc[truth["image_name"]]), top
        )
        mine, largest = errors.get(cluster, ({}, 0.0))
        errors[cluster] = ({**mine, **dict(zip(truth["image_name"], map(float, found)))}, max(largest, top))
    return {"dataset": datasets.iloc[0].to_dict(), "scenes": scenes, "errors": errors}


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
    with MatchReader(match_path) as read_matches:  # one open for every pair
        return [len(read_matches(a, b)[0]) for a, b in pair_list]


def remove(paths: list[Path]) -> None:
    """Delete files and folders (a stage's stale outputs); missing ones are fine."""
    for path in paths:
        if Path(path).is_dir():
            shutil.rmtree(path)
        else:
            Path(path).unlink(missing_ok=True)
