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
# # IMC 2024 / 2025 submission: imc_lib, offline
#
# The Kaggle kernel of imc_lib: it installs the library from the attached
# wheels+weights dataset (no internet), reconstructs every scene of the competition's `test` split
# (images listed in `sample_submission.csv`) and writes `/kaggle/working/submission.csv`.
#
# One notebook for both competitions (its name is from when it served 2024 alone). Which one is
# attached is told by the data's files (`data.layout`), not by a setting: IMC 2024
# (`image-matching-challenge-2024`, one folder per scene) gets one pose per photo; IMC 2025
# (`image-matching-challenge-2025`, one flat folder per dataset holding several scenes and
# outliers) gets each dataset reconstructed as one photo set, every model a cluster (`cluster0`,
# `cluster1`, ...), photos in none `outliers` with `nan` poses, and `image_id` carried from
# `sample_submission.csv`.
#
# On Kaggle the inputs are found, not assumed (`imc_lib.formats.kaggle_inputs`): the competition, this
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
# **Time.** A Kaggle kernel is killed at 9 hours, and then scores nothing. `pipeline.run(time_limit=...)`
# (`imc-lib run --time-limit` on the command line) guards it: rates measured on this device before the
# first scene (two photos extracted and matched), refitted after every scene; before each scene the
# guard lowers its pairs or keypoints, or as a last resort skips it (placeholder poses), when the
# scenes left would overrun; a scene that runs over stops between stages or batches; and the
# submission is rewritten after every scene, so a killed kernel still leaves a complete one.

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
# Preferred should several competitions be attached (`imc-lib kaggle build --competition` sets it); either
# year's data is read, whichever is found.
KAGGLE_COMPETITION = "image-matching-challenge-2024"
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
PAIRS = env("IMC_PAIRS", "auto", "auto")  # auto: DINOv2 when found, else VLAD; or dinov2 | vlad | exhaustive
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

    A short copy of imc_lib.formats.kaggle_inputs' rule (shallowest first, sorted): that module is in the
    wheel this cell installs, so it cannot be imported to find it.
    """
    found = [
        w.parent
        for depth in range(1, max_depth + 1)
        for w in sorted(root.glob("*/" * depth + "imc_lib*.whl"))
        if (w.parent / "requirements.txt").is_file()
    ]
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
            f"to its folder"
        )
    requirements = OFFLINE_DIR / "requirements.txt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(OFFLINE_DIR),
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
    )
    print(proc.stdout[-3000:])
    if proc.returncode:
        raise RuntimeError(
            f"pip install from {OFFLINE_DIR} failed (wheels built for another Python? "
            f"rebuild with IMC_KAGGLE_PYTHON={sys.version_info.major}.{sys.version_info.minor}):\n"
            f"{proc.stderr[-3000:]}"
        )
    importlib.invalidate_caches()
INSTALL_S = time.monotonic() - START

# %% [markdown]
# ## Find the inputs
#
# On Kaggle, by content under `/kaggle/input` in either layout (`imc_lib.formats.kaggle_inputs`), each
# logged with where it was found; no competition data stops here with what was searched. No
# DINOv2 model is not a silent downgrade: a banner says so, and the pipeline's pair selection
# that needs no downloaded weights takes its place.

# %%
import logging

import pandas as pd
import pycolmap

from imc_lib import pipeline
from imc_lib.formats import data, kaggle_inputs, metric, submission
from imc_lib.stages import pairs
from imc_lib.utils import usable_device

logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
)
pycolmap.logging.minloglevel = 2  # COLMAP's own chatter: errors only

if ON_KAGGLE:
    found = kaggle_inputs.find_inputs(KAGGLE_INPUT, dataset=KAGGLE_DATASET, competition=KAGGLE_COMPETITION)
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
    print(
        f"!!! NO DINOv2 MODEL ({dinov2_searched}).\n"
        f"!!! Scenes of {pairs.confs['vlad']['exhaustive_if_less']}+ images get "
        f"the pipeline's weight-free pair selection instead of DINOv2 retrieval. Fix: attach the Kaggle model "
        f"metaresearch/dinov2 (PyTorch, base) or set IMC_DINOV2 to its folder."
    )
    print("!" * 100)

# %% [markdown]
# ## Device and scenes
#
# The competition's year from its files: IMC 2025 lists each dataset (several scenes and
# outliers) as one photo set.

# %%
device = usable_device(DEVICE)  # a small CUDA kernel first: CUDA that cannot run one means the CPU
YEAR = data.layout(DATA_DIR, SPLIT)  # "2024" or "2025", by the files alone
scenes = data.load_scenes(DATA_DIR, SPLIT, SCENES)
print(
    f"IMC {YEAR} data: {len(scenes)} {'dataset' if YEAR == '2025' else 'scene'}(s), "
    f"{sum(len(s.image_names) for s in scenes)} images from {DATA_DIR} ({SPLIT}); weights {WEIGHTS_DIR}; "
    f"device {device}"
)
pd.DataFrame({"images": {s.key: len(s.image_names) for s in scenes}})

# %% [markdown]
# ## Reconstruct every scene inside the time limit
#
# Every image of the image list gets exactly one row, in the list's order (IMC 2025: photos in no
# cluster are `outliers`, with `nan` poses).

# %%
WORK_DIR.mkdir(parents=True, exist_ok=True)
# The pair method is the pipeline's default ("auto"): DINOv2 where found (DINOV2_DIR), else the
# selection that needs no downloaded weights (VLAD over each scene's own features).
result = pipeline.run(
    DATA_DIR,
    OUT,
    WORK_DIR,
    split=SPLIT,
    scenes=SCENES,
    device=device,
    weights=WEIGHTS_DIR,
    dinov2=DINOV2_DIR,
    pairs=PAIRS,
    max_keypoints=MAX_KEYPOINTS,
    orientation=ORIENTATION,
    time_limit=TIME_LIMIT_S - RESERVE_S - (time.monotonic() - START),
)
names = list(dict.fromkeys(s.scene for s in scenes))
table = pd.read_csv(OUT)
print(f"wrote {OUT}: {len(table)} rows for {len(names)} scene(s)")
table.head()

# %% [markdown]
# ## Time of each stage

# %%
times = pd.DataFrame(
    {
        k: {
            "images": r.images,
            "registered": r.registered,
            "status": r.status,
            **{k: getattr(r, k) for k in ("clusters", "outliers") if getattr(r, k) is not None},  # IMC 2025 datasets
            **r.times,
            "total": sum(r.times.values()),
        }
        for k, r in result["scenes"].items()
    }
).T
elapsed = time.monotonic() - START
print(
    f"install {INSTALL_S:.0f} s, scenes {times['total'].sum():.0f} s, notebook {elapsed:.0f} s of the "
    f"{TIME_LIMIT_S:.0f} s limit"
)
times

# %% [markdown]
# ## Score (train split only: the test split has no labels)

# %%
labels_path = DATA_DIR / "train_labels.csv" if YEAR == "2025" else DATA_DIR / "train" / "train_labels.csv"
if SPLIT == "train" and labels_path.is_file() and YEAR == "2025":
    labels = submission.read_poses(labels_path, "2025")
    thresholds = labels_path.with_name("train_thresholds.csv")
    print(metric.format_table_2025(*metric.score_2025(labels[labels["dataset"].isin(names)], OUT, thresholds)))
elif SPLIT == "train" and labels_path.is_file():
    labels = submission.read_poses(labels_path, "labels")
    categories = labels_path.with_name("categories.csv")
    scores = metric.score(
        labels[labels["scene"].isin(names)], OUT, categories=categories if categories.is_file() else {}
    )
    print(metric.format_table(scores))
else:
    print(f"split {SPLIT!r}: no labels to score against")

# %% [markdown]
# ## The report
#
# `report.html`, written beside the submission by the run (`imc_lib/report.py`): per scene its
# clusters as strips of thumbnails with an interactive 3D view each, the outliers apart, the photos
# registered, the models before and after joining, the time of each stage and, on train data, the
# score. One self-contained file: shown here in a frame, and kept in the kernel's output.

# %%
import html

from IPython.display import HTML, display

report_html = Path(result["report"]).read_text()
print(f"{result['report']}: {len(report_html) / 1e6:.1f} MB")
display(HTML(f'<iframe srcdoc="{html.escape(report_html)}" style="width:100%;height:900px;border:0"></iframe>'))
