# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Explore one scene: pairs, keypoints, matches, reconstruction, score
#
# Runs the pipeline on one train scene (resuming from whatever the work folder already holds,
# e.g. what the submission notebook computed with the same settings) and shows each stage's
# output with `imc_lib.viz`. Settings come from environment variables of the same names as in
# `imc24_submission.py`; `IMC_SCENE` picks the scene, `IMC_IMAGE` the image whose keypoints are
# drawn, `IMC_PAIR` ("name0 name1") the pair whose matches are drawn.

# %%
# %matplotlib inline
import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("IMC_DATA_DIR", "../../shared/data/imc-mini"))
SPLIT = "train"  # the scores need train labels
SCENE = os.environ.get("IMC_SCENE", "herzjesu-p8")
WEIGHTS_DIR = Path(os.environ.get("IMC_WEIGHTS_DIR", "../../shared/weights"))
DINOV2_DIR = Path(os.environ.get("IMC_DINOV2", "../../shared/weights/dinov2-base"))
WORK_DIR = Path(os.environ.get("IMC_WORK", "../outputs/work"))
DEVICE = os.environ.get("IMC_DEVICE", "auto")
MAX_KEYPOINTS = int(os.environ.get("IMC_MAX_KEYPOINTS", "1024"))  # CPU friendly; Kaggle runs 4096
PAIRS = os.environ.get("IMC_PAIRS", "auto")  # auto (DINOv2 when found, else vlad) | dinov2 | vlad | exhaustive
ORIENTATION = os.environ.get("IMC_ORIENTATION") or None  # upright | mnn | none; default: the device's
IMAGE = os.environ.get("IMC_IMAGE")  # default: the scene's first image
PAIR = os.environ.get("IMC_PAIR")  # default: the pair with the most matches

# %%
import logging

import numpy as np
import pandas as pd
import pycolmap
from IPython.display import display

from imc_lib import figure3d, pipeline, plan, viz
from imc_lib.formats import data, metric, submission
from imc_lib.stages import features, matching, pairs, reconstruction
from imc_lib.storage import io
from imc_lib.utils import pick_device, read_image

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
)
pycolmap.logging.minloglevel = 2

device = pick_device(DEVICE)
(scene,) = data.load_scenes(DATA_DIR, SPLIT, [SCENE])
names = list(scene.image_names)
dinov2 = DINOV2_DIR if (DINOV2_DIR / "config.json").is_file() else None
result = pipeline.run(
    DATA_DIR,
    WORK_DIR / "explore" / f"{scene.key}.csv",
    WORK_DIR,
    split=SPLIT,
    scenes=[SCENE],
    device=device,
    weights=WEIGHTS_DIR,
    dinov2=dinov2,
    max_keypoints=MAX_KEYPOINTS,
    pairs=PAIRS,
    orientation=ORIENTATION,
)
sconfs = result["confs"]  # the stage configs the run used (a CPU gets its speed settings)
paths = plan.plan_scene(scene, sconfs, WORK_DIR).paths  # small scenes: all pairs
pd.DataFrame(
    {
        key: {"images": r.images, "registered": r.registered, "status": r.status, **r.times}
        for key, r in result["scenes"].items()
    }
).T

# %% [markdown]
# ## Pairs
#
# With DINOv2 retrieval, the distance between the images' global descriptors, the kept pairs
# circled. A scene under `exhaustive_if_less` images (or exhaustive pairs) has no descriptors:
# every pair is matched, so the matrix shows the pairs file itself, coloured by its matches.

# %%
pair_list = pairs.read_pairs(paths.pairs)


def n_matches(read_matches: io.MatchReader, a: str, b: str) -> int:
    try:
        return len(read_matches(a, b)[0])
    except KeyError:  # pair not matched (the matching stage failed before it)
        return 0


with io.MatchReader(paths.matches) as read_matches:  # one open for every pair
    match_counts = [n_matches(read_matches, a, b) for a, b in pair_list]
if paths.descriptors.is_file():
    # Reads the stored descriptors; loads DINOv2 only if some are missing.
    desc = pairs.compute_descriptors(
        scene.image_dir, names, paths.descriptors, lambda: pairs.load_network(sconfs["pairs"]), device
    )
    distances = pairs.distance_matrix(desc, sconfs["pairs"]["p"]).numpy()
    fig = viz.distance_heatmap(
        distances, names, pair_list, title=f"{SCENE}: DINOv2 distances, {len(pair_list)} pairs kept"
    )
else:
    why = (
        f"{len(names)} images < exhaustive_if_less={sconfs['pairs']['exhaustive_if_less']}"
        if sconfs["pairs"].get("method") == "retrieval"
        else "exhaustive pairs asked for"
    )
    print(f"No global descriptors for {SCENE}: {why}, so all {len(pair_list)} pairs were matched without DINOv2.")
    fig = viz.pairs_matrix(names, pair_list, values=match_counts, title=f"{SCENE}: matches per pair (all pairs kept)")
fig

# %% [markdown]
# ## Keypoints of one image

# %%
image_name = IMAGE or names[0]
feats = features.read_features(paths.features, image_name)
viz.show_keypoints(
    read_image(scene.image_dir / image_name),
    feats["keypoints"],
    title=f"{image_name}: {len(feats['keypoints'])} keypoints",
)

# %% [markdown]
# ## Matches of one pair

# %%
name0, name1 = PAIR.split() if PAIR else pair_list[int(np.argmax(match_counts))]
matches, match_scores = matching.read_matches(paths.matches, name0, name1)
viz.show_matches(
    read_image(scene.image_dir / name0),
    read_image(scene.image_dir / name1),
    features.read_features(paths.features, name0)["keypoints"],
    features.read_features(paths.features, name1)["keypoints"],
    matches,
    match_scores,
    title=f"{name0} - {name1}: {len(matches)} matches",
)

# %% [markdown]
# ## Score against the train labels
#
# Per scene, as the competition scores it (`metric.score`); then each camera's distance from its
# true position after the registration the metric picks at one threshold (`metric.camera_errors`).

# %%
labels_path = DATA_DIR / "train" / "train_labels.csv"
categories_path = labels_path.with_name("categories.csv")
categories = data.load_categories(categories_path)
labels = submission.read_poses(labels_path, "labels")
labels = labels[labels["scene"] == SCENE].set_index("image_name").loc[names].reset_index()
scores = metric.score(labels, result["submission"], categories=categories)
print(metric.format_table(scores))

# %%
model_dir = paths.sfm / "model"
model = pycolmap.Reconstruction(model_dir) if (model_dir / "images.bin").is_file() else None
found = reconstruction.poses(model)
estimated = np.array([-found[n][0].T @ found[n][1] if n in found else np.full(3, np.nan) for n in names])
thresholds = metric.scene_thresholds(SCENE, categories)
threshold = thresholds[len(thresholds) // 2]
errors = metric.camera_errors(metric.camera_centres(labels), estimated, threshold)
camera_table = pd.DataFrame({"image": names, "registered": [n in found for n in names], "error": errors})
camera_table["within"] = [sum(e < t for t in thresholds) for e in errors]
print(
    f"error: distance from the true centre after the registration at threshold {threshold:g}; "
    f"within: how many of the thresholds {thresholds} it is under"
)
camera_table

# %% [markdown]
# ## The reconstruction in 3D
#
# Points in their colours, one frustum per registered camera coloured by its error above.

# %%
if model is None:
    print(f"{model_dir}: no model was built for {SCENE}")
else:
    print(model.summary())
    display(figure3d.reconstruction_figure(model, camera_errors=dict(zip(names, errors))))
