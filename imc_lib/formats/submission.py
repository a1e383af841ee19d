"""Read and write IMC pose tables, `submission.csv` and `train_labels.csv`, of 2024 and 2025.

Poses are world-to-camera (`x_cam = R @ x_world + t`); R is written as its 9 row-major values and
t as its 3 values, each joined with `;`. The camera centre is `-R.T @ t`.

IMC 2024 rows: image_path, dataset, scene, R, t (one scene per folder). IMC 2025 rows: image_id,
dataset, scene, image, R, t, where `scene` is a cluster name (`cluster0`, `cluster1`, ...) or
`outliers`, and a photo without a pose has `nan` in every value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..storage.io import atomic_file
from .data import read_table

logger = logging.getLogger(__name__)

SUBMISSION_COLUMNS = ["image_path", "dataset", "scene", "rotation_matrix", "translation_vector"]
LABEL_COLUMNS = ["dataset", "scene", "image_name", "rotation_matrix", "translation_vector"]
POSE_COLUMNS = ["dataset", "scene", "image_name", "R", "t"]
SUBMISSION_COLUMNS_2025 = ["image_id", "dataset", "scene", "image", "rotation_matrix", "translation_vector"]
LABEL_COLUMNS_2025 = ["dataset", "scene", "image", "rotation_matrix", "translation_vector"]
OUTLIERS = "outliers"  # the 2025 scene name of photos in no cluster
FLOAT_FORMAT = "%.9g"
NAN_POSE = (";".join(["nan"] * 9), ";".join(["nan"] * 3))


def format_pose(R, t) -> tuple[str, str]:
    """(rotation_matrix, translation_vector) strings for one pose, in the competition's format."""
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float)
    if R.shape != (3, 3) or t.reshape(-1).shape != (3,):
        raise ValueError(f"pose must be R (3, 3) and t (3,), got R {R.shape} and t {t.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise ValueError("pose has non-finite values; pass R=None, t=None for an unregistered image")
    return ";".join(FLOAT_FORMAT % v for v in R.ravel()), ";".join(FLOAT_FORMAT % v for v in t.ravel())


def parse_values(text, n: int, where: str, allow_nan: bool = False) -> np.ndarray:
    """The `n` finite numbers of a `;`-joined field; ValueError naming `where` otherwise.

    `allow_nan`: a field of `n` nan values (an IMC 2025 photo without a pose) gives `n` NaNs."""
    text = str(text).strip()
    parts = text.split(";") if text else []
    if len(parts) != n:
        raise ValueError(f"{where}: expected {n} values, got {len(parts)} in {text!r}")
    if allow_nan and all(p.strip().lower() == "nan" for p in parts):
        return np.full(n, np.nan)
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        raise ValueError(f"{where}: not a number in {text!r}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: non-finite value in {text!r}")
    return values


def read_poses(path: Path, kind: str = "submission") -> pd.DataFrame:
    """Poses of a submission or labels table as columns dataset, scene, image_name, R (3x3), t (3,).

    `kind="submission"` keys rows by the file name of `image_path`; `kind="labels"` by
    `image_name`; `kind="2025"`, an IMC 2025 labels or submission table (`read_poses_2025`).
    Errors name the file and the row (its line in the file; the header is row 1).
    """
    if kind == "2025":
        return read_poses_2025(path)
    if kind == "submission":
        table = read_table(path, SUBMISSION_COLUMNS)
        names = [PurePosixPath(p).name for p in table["image_path"]]
    elif kind == "labels":
        table = read_table(path, LABEL_COLUMNS)
        names = list(table["image_name"])
    else:
        raise ValueError(f"kind must be 'submission', 'labels' or '2025', not {kind!r}")
    return _poses_table(path, table, names, allow_nan=False)


def read_poses_2025(path: Path) -> pd.DataFrame:
    """Poses of an IMC 2025 labels or submission table (`image_id` optional: the labels and a train
    run's file may lack it) as columns dataset, scene, image_name, R, t; a row whose values are all
    `nan` (outliers, photos without a pose) gets NaN R and t."""
    table = read_table(path, LABEL_COLUMNS_2025)
    return _poses_table(path, table, list(table["image"]), allow_nan=True)


def _poses_table(path: Path, table: pd.DataFrame, names: list[str], allow_nan: bool) -> pd.DataFrame:
    """The POSE_COLUMNS table of `table`'s rows, each parsed with errors naming its file and row."""
    Rs, ts = [], []
    for i, (name, r_text, t_text) in enumerate(zip(names, table["rotation_matrix"], table["translation_vector"])):
        where = f"{path} row {i + 2}"
        if not name:
            raise ValueError(f"{where}: empty image name")
        Rs.append(parse_values(r_text, 9, f"{where}, rotation_matrix", allow_nan).reshape(3, 3))
        ts.append(parse_values(t_text, 3, f"{where}, translation_vector", allow_nan))
    return pd.DataFrame(
        {"dataset": list(table["dataset"]), "scene": list(table["scene"]), "image_name": names, "R": Rs, "t": ts},
        columns=POSE_COLUMNS,
    )


def scene_rows(scene, found: dict, clusters: list[dict] | None = None) -> list[dict]:
    """The rows of one scene (a `data.Scene`) for `write_submission`, one per photo, in its order.

    IMC 2024 scene: its poses `found` {name: (R, t)}, placeholders (R, t None) for the images without
    one. Mixed (IMC 2025) scene: `clusters`, a list of {name: (R, t)} (largest first), become scenes
    `cluster0`, `cluster1`, ...; every photo in none is `outliers` with no pose. `clusters` None reads
    `found` as the one cluster (a mixed folder mapped as one scene). Rows carry sample_submission's
    `image_id` (test split), else `<dataset>_<image>_public`, the form of Kaggle's visible test ids.
    """
    if not scene.mixed:
        if clusters is not None:
            raise ValueError(f"scene {scene.key}: clusters are for mixed (IMC 2025) folders; pass its poses only")
        return [
            {"image_path": path, "dataset": scene.dataset, "scene": scene.scene, "R": found.get(name, (None, None))[0],
             "t": found.get(name, (None, None))[1]}
            for name, path in zip(scene.image_names, scene.image_paths)
        ]  # fmt: skip
    where = _cluster_of(scene, [found] if clusters is None else clusters)
    ids = scene.image_ids or [f"{scene.dataset}_{name}_public" for name in scene.image_names]
    return [
        {"image_id": image_id, "dataset": scene.dataset, "scene": where.get(name, (OUTLIERS,))[0], "image": name,
         "R": where.get(name, (None, None, None))[1], "t": where.get(name, (None, None, None))[2]}
        for image_id, name in zip(ids, scene.image_names)
    ]  # fmt: skip


def _cluster_of(scene, clusters: list[dict]) -> dict[str, tuple]:
    """{name: (cluster name, R, t)} of the photos in `clusters`, the non-empty ones numbered in order;
    ValueError for a photo the scene lacks or one in two clusters."""
    names, where = set(scene.image_names), {}
    for i, cluster in enumerate(c for c in clusters if c):
        for name, (R, t) in cluster.items():
            if name not in names:
                raise ValueError(f"scene {scene.key}: cluster{i} holds {name!r}, which is not one of its photos")
            if name in where:
                raise ValueError(f"scene {scene.key}: {name!r} is in {where[name][0]} and cluster{i}; keep it in one")
            where[name] = (f"cluster{i}", R, t)
    return where


def write_submission(rows: Iterable[dict], path: Path, year: str | None = None) -> Path:
    """Write submission.csv atomically from `scene_rows` dicts: IMC 2024 rows {image_path, dataset,
    scene, R, t} or IMC 2025 rows {image_id, dataset, scene, image, R, t}, not both. `year` ("2024" or
    "2025", as a run's plan decides it: plan.competition) refuses rows of the other year; None: the rows tell.

    R or t None marks an image without a pose. IMC 2024: written as the identity rotation and zero
    translation, since the metric needs a pose on every row. IMC 2025: `nan` in every value, as the
    competition asks of outliers. The file is written to a temporary file in the same folder and
    moved into place, so a crash never leaves a half-written CSV.
    """
    rows = list(rows)
    years = {"2025" if "image" in row else "2024" for row in rows}
    if year is not None and years - {year}:
        raise ValueError(f"{path}: an IMC {year} submission given rows of IMC {sorted(years - {year})[0]} scenes")
    years = years or ({year} if year else set())
    if len(years) > 1:
        raise ValueError(f"{path}: rows of IMC 2024 (image_path) and IMC 2025 (image) scenes; write them apart")
    table = _table_2025(rows) if years == {"2025"} else _table_2024(rows)
    with atomic_file(Path(path), newline="") as handle:
        table.to_csv(handle, index=False)
    return Path(path)


def _pose_texts(row: dict, where: str, missing: tuple[str, str]) -> tuple[str, str]:
    """The row's formatted pose, `missing` when it has none; ValueError naming `where`."""
    if row.get("R") is None or row.get("t") is None:
        return missing
    try:
        return format_pose(row["R"], row["t"])
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _table_2024(rows: list[dict]) -> pd.DataFrame:
    identity = format_pose(np.eye(3), np.zeros(3))
    records = [(r["image_path"], r["dataset"], r["scene"], *_pose_texts(r, r["image_path"], identity)) for r in rows]
    missing = sum(r.get("R") is None or r.get("t") is None for r in rows)
    if missing:
        logger.warning(
            "%d of %d rows have no pose; written as identity rotation and zero translation",
            missing,
            len(records),
        )
    return pd.DataFrame(records, columns=SUBMISSION_COLUMNS)


def _table_2025(rows: list[dict]) -> pd.DataFrame:
    records = []
    for r in rows:
        where = f"{r['dataset']}/{r['image']}"
        if r["scene"] == OUTLIERS and not (r.get("R") is None and r.get("t") is None):
            raise ValueError(f"{where}: an {OUTLIERS} row has a pose; outliers are written with nan values")
        records.append((r["image_id"], r["dataset"], r["scene"], r["image"], *_pose_texts(r, where, NAN_POSE)))
    outliers = sum(r["scene"] == OUTLIERS for r in rows)
    unposed = sum(r["scene"] != OUTLIERS and (r.get("R") is None or r.get("t") is None) for r in rows)
    logger.info("%d of %d photos in no cluster: %s, with nan poses", outliers, len(rows), OUTLIERS)
    if unposed:
        logger.warning("%d of %d clustered photos have no pose; written as nan (scored as wrong)", unposed, len(rows))
    return pd.DataFrame(records, columns=SUBMISSION_COLUMNS_2025)
