# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # IMC 2024 submission: imc_lib, offline
#
# The Kaggle kernel of imc_lib: it installs the library from the attached
# wheels+weights dataset (no internet), reconstructs every scene of the competition's `test` split
# (images listed in `sample_submission.csv`) and writes `/kaggle/working/submission.csv`.
#
# On Kaggle the inputs are found, not assumed (`imc_lib.kaggle_inputs`): the competition, this
# dataset and the DINOv2 model are searched for under `/kaggle/input`, in the 2024 layout
# (`/kaggle/input/<slug>`) and the 2026 one (`/kaggle/input/competitions/<slug>`,
# `.../datasets/<owner>/<slug>`, `.../models/<owner>/<model>/<framework>/<variation>/<version>`), and
# printed with where each was found. A GPU that reports CUDA but cannot run a kernel (a P100 under
# current torch) is found out before the first scene: one loud line, then the CPU settings.
#
# The same notebook runs outside Kaggle: every path below is one variable, and an environment
# variable of the same name overrides it (`IMC_KAGGLE_INPUT` moves the input root, for a dry run
# against a simulated tree). Off Kaggle the defaults read the shared `imc-mini` train split and
# weights beside the checkout; from `notebooks/`, one scene on a CPU:
#
# ```bash
# IMC_SCENES=herzjesu-p8 IMC_MAX_KEYPOINTS=1024 jupyter nbconvert --to notebook --execute imc24_submission.ipynb
# ```
#
# **Time.** A Kaggle kernel is killed at 9 hours, and then scores nothing. Before each scene a time
# guard (`imc_lib.budget`) estimates what the remaining scenes cost at the best settings, from
# per-image and per-pair rates (device defaults at first, then measured on the scenes already
# run), and when they would overrun it lowers this scene's pairs (exhaustive to retrieval)
# or keypoints (halving down to `MIN_KEYPOINTS`), or as a last resort skips it (placeholder poses).
# It says so when it intervenes. Each scene runs with `pipeline.run(scenes=[...])` into its own CSV;
# the parts are then joined into one submission with a row for every listed image.

# %%
import os
import time
from pathlib import Path

START = time.monotonic()
KAGGLE_INPUT = Path(os.environ.get("IMC_KAGGLE_INPUT") or "/kaggle/input")  # where Kaggle mounts the inputs
ON_KAGGLE = KAGGLE_INPUT.is_dir()


def env(name: str, kaggle: str, local: str) -> str:
    """The environment variable `name` if set, else the default for Kaggle or for a local checkout."""
    return os.environ.get(name) or (kaggle if ON_KAGGLE else local)


KAGGLE_DATASET = "imc-lib-offline"  # slug of the wheels+weights dataset (`imc-lib kaggle build` sets it)
# On Kaggle the data, the dataset (wheels, requirements.txt and the ALIKED/DISK/LightGlue weights side by
# side) and the DINOv2 model (metaresearch/dinov2/pyTorch/base/1; only scenes of 20+ images load it) are
# searched for below; these are the local defaults. IMC_DATA_DIR, IMC_OFFLINE_DIR, IMC_DINOV2 override both.
LOCAL_DATA_DIR = "../../shared/data/imc-mini"
LOCAL_OFFLINE_DIR = "../dist/kaggle/dataset"
LOCAL_DINOV2_DIR = "../../shared/weights/dinov2-base"
SPLIT = env("IMC_SPLIT", "test", "train")
OUT = Path(env("IMC_OUT", "/kaggle/working/submission.csv", "../outputs/submission.csv"))
WORK_DIR = Path(env("IMC_WORK", "/tmp/imc-work", "../outputs/work"))  # features, matches, models: not output
SCENES = env("IMC_SCENES", "", "").replace(",", " ").split() or None  # None: every scene
DEVICE = env("IMC_DEVICE", "auto", "auto")
MAX_KEYPOINTS = int(env("IMC_MAX_KEYPOINTS", "4096", "4096"))
MIN_KEYPOINTS = int(env("IMC_MIN_KEYPOINTS", "1024", "1024"))  # the time guard goes no lower
PAIRS = env("IMC_PAIRS", "dinov2", "dinov2")  # dinov2 (the pipeline's retrieval for 20+ images) | exhaustive
ORIENTATION = env("IMC_ORIENTATION", "upright", "upright")  # upright | none (photos known upright)
TIME_LIMIT_S = float(env("IMC_TIME_LIMIT_S", str(9 * 3600), str(9 * 3600)))
RESERVE_S = float(env("IMC_RESERVE_S", "1800", "1800"))  # kept back for the end and for misestimates
SKIP_INSTALL = env("IMC_SKIP_INSTALL", "0", "0") == "1"

# %% [markdown]
# ## Install imc_lib offline
#
# From the dataset's wheels only (`pip install --no-index`), at the versions pinned in its
# `requirements.txt`. Skipped when `imc_lib` is already importable (a local checkout) or
# `IMC_SKIP_INSTALL=1`.

# %%
import importlib.util
import subprocess
import sys


def find_offline_dir(root: Path, max_depth: int = 4) -> Path | None:
    """The dataset: a requirements.txt beside an imc_lib wheel, the one named KAGGLE_DATASET first.

    A short copy of imc_lib.kaggle_inputs' rule (shallowest first, sorted): that module is in the
    wheel this cell installs, so it cannot be imported to find it.
    """
    found = [w.parent for depth in range(1, max_depth + 1) for w in sorted(root.glob("*/" * depth + "imc_lib*.whl"))
             if (w.parent / "requirements.txt").is_file()]
    return next((d for d in found if KAGGLE_DATASET in d.parts), found[0] if found else None)


OFFLINE_DIR = os.environ.get("IMC_OFFLINE_DIR") or (find_offline_dir(KAGGLE_INPUT) if ON_KAGGLE else LOCAL_OFFLINE_DIR)
OFFLINE_DIR = Path(OFFLINE_DIR) if OFFLINE_DIR else None
if SKIP_INSTALL or importlib.util.find_spec("imc_lib") is not None:
    print("imc_lib is importable (or IMC_SKIP_INSTALL=1): nothing to install")
else:
    if OFFLINE_DIR is None or not (OFFLINE_DIR / "requirements.txt").is_file():
        raise FileNotFoundError(
            f"{OFFLINE_DIR or KAGGLE_INPUT}: no requirements.txt beside an imc_lib wheel (searched 4 levels); "
            f"attach the dataset made by `imc-lib kaggle build` (slug {KAGGLE_DATASET!r}) or set IMC_OFFLINE_DIR "
            f"to its folder")
    requirements = OFFLINE_DIR / "requirements.txt"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(OFFLINE_DIR),
                           "-r", str(requirements)], capture_output=True, text=True)
    print(proc.stdout[-3000:])
    if proc.returncode:
        raise RuntimeError(f"pip install from {OFFLINE_DIR} failed (wheels built for another Python? "
                           f"rebuild with IMC_KAGGLE_PYTHON={sys.version_info.major}.{sys.version_info.minor}):\n"
                           f"{proc.stderr[-3000:]}")
    importlib.invalidate_caches()
INSTALL_S = time.monotonic() - START

# %% [markdown]
# ## Find the inputs
#
# On Kaggle, by content under `/kaggle/input` in either layout (`imc_lib.kaggle_inputs`), each
# logged with where it was found; no competition data stops here with what was searched. No
# DINOv2 model is not a silent downgrade: a banner says so, and the pipeline's pair selection
# that needs no downloaded weights takes its place.

# %%
import logging

import pandas as pd
import pycolmap

from imc_lib import budget, data, kaggle_inputs, metric, pipeline, submission
from imc_lib.utils import usable_device

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                    datefmt="%H:%M:%S", force=True)
pycolmap.logging.minloglevel = 2  # COLMAP's own chatter: errors only

if ON_KAGGLE:
    found = kaggle_inputs.find_inputs(KAGGLE_INPUT, dataset=KAGGLE_DATASET)
    DATA_DIR, DINOV2_DIR, OFFLINE_DIR = found.competition, found.dinov2, found.offline or OFFLINE_DIR
    dinov2_searched = found.origin["dinov2"]
else:
    DATA_DIR = Path(os.environ.get("IMC_DATA_DIR") or LOCAL_DATA_DIR)
    candidate = Path(os.environ.get("IMC_DINOV2") or LOCAL_DINOV2_DIR)
    DINOV2_DIR = candidate if kaggle_inputs.is_dinov2(candidate) else None
    dinov2_searched = f"looked in {candidate} for {kaggle_inputs.LOOKS_FOR['dinov2']}"
WEIGHTS_DIR = os.environ.get("IMC_WEIGHTS_DIR") or (OFFLINE_DIR if ON_KAGGLE else "../../shared/weights")
WEIGHTS_DIR = Path(WEIGHTS_DIR) if WEIGHTS_DIR else None  # None: $IMC_WEIGHTS_DIR or the official URLs
if DINOV2_DIR is None:
    print("!" * 100)
    print(f"!!! NO DINOv2 MODEL ({dinov2_searched}).\n!!! Scenes of {budget.EXHAUSTIVE_IF_LESS}+ images get "
          f"the pipeline's weight-free pair selection instead of DINOv2 retrieval. Fix: attach the Kaggle model "
          f"metaresearch/dinov2 (PyTorch, base) or set IMC_DINOV2 to its folder.")
    print("!" * 100)

# %% [markdown]
# ## Device and scenes

# %%
device = usable_device(DEVICE)  # a small CUDA kernel first: CUDA that cannot run one means the CPU
scenes = data.load_scenes(DATA_DIR, SPLIT, SCENES)
names = list(dict.fromkeys(s.scene for s in scenes))  # pipeline.run selects scenes by name
counts = {n: sum(len(s.image_names) for s in scenes if s.scene == n) for n in names}
settings = budget.ladder(MAX_KEYPOINTS, PAIRS, MIN_KEYPOINTS)
print(f"{len(names)} scene(s), {sum(counts.values())} images from {DATA_DIR} ({SPLIT}); weights {WEIGHTS_DIR}; "
      f"device {device}; best setting {settings[0]}, cheapest {settings[-1]}")
pd.DataFrame({"images": counts})

# %% [markdown]
# ## Reconstruct scene by scene, inside the time limit

# %%
WORK_DIR.mkdir(parents=True, exist_ok=True)
deadline = START + TIME_LIMIT_S - RESERVE_S
prior = budget.default_costs(device)
costs, runs, parts, report = prior, [], [], []
networks = {}  # loaded once, reused by every scene's run
for i, name in enumerate(names):
    left = deadline - time.monotonic()
    chosen = budget.plan({n: counts[n] for n in names[i:]}, left, costs, settings)[name]
    part = WORK_DIR / f"submission-{name}.csv"
    parts.append(part)
    if chosen is None:
        print(f"time guard: skipping {name} ({counts[name]} images): {left:.0f} s left cannot hold the "
              f"{len(names) - i} remaining scene(s) even at {settings[-1]}; its rows get placeholder poses")
        submission.write_submission([{"image_path": p, "dataset": s.dataset, "scene": s.scene, "R": None, "t": None}
                                     for s in scenes if s.scene == name for p in s.image_paths], part)
        report.append({"scene": name, "images": counts[name], "setting": "skipped"})
        continue
    if chosen != settings[0]:
        best = budget.scene_seconds(counts[name], settings[0], costs)
        print(f"time guard: {name} ({counts[name]} images) would take ~{best:.0f} s at {settings[0]}, with "
              f"{left:.0f} s left for {len(names) - i} scene(s); running it at {chosen}")
    start = time.monotonic()
    # Retrieval is the pipeline's default pair method (None): DINOv2 where it loads (DINOV2_DIR, None when
    # none was found), else the selection that needs no downloaded weights.
    result = pipeline.run(DATA_DIR, part, WORK_DIR, split=SPLIT, scenes=[name], device=device, weights=WEIGHTS_DIR,
                          dinov2=DINOV2_DIR, max_keypoints=chosen.max_keypoints,
                          pairs_method=None if chosen.pairs == "dinov2" else chosen.pairs,
                          orientation_method=ORIENTATION, networks=networks)
    for key, r in result["scenes"].items():
        runs.append({"images": r["images"], "setting": chosen, "times": r["times"]})
        report.append({"scene": key, "images": r["images"], "setting": str(chosen), "registered": r["registered"],
                       "error": r["error"], **r["times"], "total": sum(r["times"].values())})
    costs = budget.measured_costs(runs, prior)
    print(f"{name}: {time.monotonic() - start:.0f} s; rates now {costs}")

# %% [markdown]
# ## One submission from the per-scene parts
#
# Every image of the image list gets exactly one row, in the list's order.

# %%
expected = [p for s in scenes for p in s.image_paths]
table = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)
missing = sorted(set(expected) - set(table["image_path"]))
repeated = sorted(table.loc[table["image_path"].duplicated(), "image_path"])
if missing or repeated:
    raise RuntimeError(f"parts {[str(p) for p in parts]} miss {len(missing)} image(s) {missing[:3]} and repeat "
                       f"{len(repeated)} {repeated[:3]}")
table = table.set_index("image_path").loc[expected].reset_index()[submission.SUBMISSION_COLUMNS]
OUT.parent.mkdir(parents=True, exist_ok=True)
table.to_csv(OUT, index=False)
print(f"wrote {OUT}: {len(table)} rows for {len(names)} scene(s)")
table.head()

# %% [markdown]
# ## Time of each stage

# %%
times = pd.DataFrame(report).set_index("scene")
elapsed = time.monotonic() - START
print(f"install {INSTALL_S:.0f} s, scenes {times.get('total', pd.Series(dtype=float)).sum():.0f} s, "
      f"notebook {elapsed:.0f} s of the {TIME_LIMIT_S:.0f} s limit")
times.round(1)

# %% [markdown]
# ## Score (train split only: the test split has no labels)

# %%
labels_path = DATA_DIR / "train" / "train_labels.csv"
if SPLIT == "train" and labels_path.is_file():
    labels = submission.read_poses(labels_path, "labels")
    categories = labels_path.with_name("categories.csv")
    scores = metric.score(labels[labels["scene"].isin(names)], OUT,
                          categories=categories if categories.is_file() else {})
    print(metric.format_table(scores))
else:
    print(f"split {SPLIT!r}: no labels to score against")
