"""Read and write IMC 2024 pose tables: `submission.csv` and `train_labels.csv`.

Poses are world-to-camera (`x_cam = R @ x_world + t`); R is written as its 9 row-major values and
t as its 3 values, each joined with `;`. The camera centre is `-R.T @ t`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .data import read_table
from .io import atomic_file

logger = logging.getLogger(__name__)

SUBMISSION_COLUMNS = ["image_path", "dataset", "scene", "rotation_matrix", "translation_vector"]
LABEL_COLUMNS = ["dataset", "scene", "image_name", "rotation_matrix", "translation_vector"]
POSE_COLUMNS = ["dataset", "scene", "image_name", "R", "t"]
FLOAT_FORMAT = "%.9g"


def format_pose(R, t) -> tuple[str, str]:
    """(rotation_matrix, translation_vector) strings for one pose, in the competition's format."""
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float)
    if R.shape != (3, 3) or t.reshape(-1).shape != (3,):
        raise ValueError(f"pose must be R (3, 3) and t (3,), got R {R.shape} and t {t.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise ValueError("pose has non-finite values; pass R=None, t=None for an unregistered image")
    return ";".join(FLOAT_FORMAT % v for v in R.ravel()), ";".join(FLOAT_FORMAT % v for v in t.ravel())


def parse_values(text, n: int, where: str) -> np.ndarray:
    """The `n` finite numbers of a `;`-joined field; ValueError naming `where` otherwise."""
    text = str(text).strip()
    parts = text.split(";") if text else []
    if len(parts) != n:
        raise ValueError(f"{where}: expected {n} values, got {len(parts)} in {text!r}")
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
    `image_name`. Errors name the file and the row (its line in the file; the header is row 1).
    """
    if kind == "submission":
        table = read_table(path, SUBMISSION_COLUMNS)
        names = [PurePosixPath(p).name for p in table["image_path"]]
    elif kind == "labels":
        table = read_table(path, LABEL_COLUMNS)
        names = list(table["image_name"])
    else:
        raise ValueError(f"kind must be 'submission' or 'labels', not {kind!r}")
    Rs, ts = [], []
    for i, (name, r_text, t_text) in enumerate(zip(names, table["rotation_matrix"], table["translation_vector"])):
        where = f"{path} row {i + 2}"
        if not name:
            raise ValueError(f"{where}: empty image name")
        Rs.append(parse_values(r_text, 9, f"{where}, rotation_matrix").reshape(3, 3))
        ts.append(parse_values(t_text, 3, f"{where}, translation_vector"))
    return pd.DataFrame(
        {
            "dataset": list(table["dataset"]),
            "scene": list(table["scene"]),
            "image_name": names,
            "R": Rs,
            "t": ts,
        },
        columns=POSE_COLUMNS,
    )


def scene_rows(scene, poses: dict) -> list[dict]:
    """The rows of one scene (a `data.Scene`) for `write_submission`: its poses {name: (R, t)},
    placeholders (R, t None) for the images without one."""
    return [
        {"image_path": path, "dataset": scene.dataset, "scene": scene.scene, "R": poses.get(name, (None, None))[0],
         "t": poses.get(name, (None, None))[1]}
        for name, path in zip(scene.image_names, scene.image_paths)
    ]  # fmt: skip


def write_submission(rows: Iterable[dict], path: Path) -> Path:
    """Write submission.csv atomically from dicts {image_path, dataset, scene, R, t}.

    R or t None marks an unregistered image: it is written as the identity rotation and zero
    translation, since the metric needs a pose on every row. The file is written to a temporary
    file in the same folder and moved into place, so a crash never leaves a half-written CSV.
    """
    path = Path(path)
    identity = format_pose(np.eye(3), np.zeros(3))
    records, missing = [], 0
    for row in rows:
        if row.get("R") is None or row.get("t") is None:
            missing += 1
            r_text, t_text = identity
        else:
            try:
                r_text, t_text = format_pose(row["R"], row["t"])
            except ValueError as err:
                raise ValueError(f"{row['image_path']}: {err}") from None
        records.append((row["image_path"], row["dataset"], row["scene"], r_text, t_text))
    if missing:
        logger.warning(
            "%d of %d rows have no pose; written as identity rotation and zero translation",
            missing,
            len(records),
        )
    table = pd.DataFrame(records, columns=SUBMISSION_COLUMNS)
    with atomic_file(path, newline="") as handle:
        table.to_csv(handle, index=False)
    return path
