"""Pair selection benchmark: pairs kept and recall of the pairs that matter, per method and scene.

    python benchmarks/pairs_recall.py [--data DIR] [--scenes ...] [--work DIR] [--angle 30] [--min-pairs 10 20]

"Pairs that matter" come from the ground truth: two cameras whose optical axes differ by less than
--angle degrees look at the same part of the object (every imc-hard scene is an object on a table or
turntable). Features are the CPU default's (ALIKED, 2048 keypoints, 640 px) as stored, extracted into
--work and reused; turned photos are not turned here, so a method's recall of pairs across photos
stored upside down shows in its own column ("cross").
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, markdown  # noqa: E402

from imc_lib import plan
from imc_lib.formats import data, submission
from imc_lib.stages import features, pairs


def ground_truth(labels: pd.DataFrame, names: list[str], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, N) bool: cameras whose optical axes are within `angle` degrees; (N,) bool: camera rolled
    more than 90 degrees from the scene's mean up vector (photo stored upside down)."""
    rows = labels.set_index("image_name").loc[names]
    R = np.stack([submission.parse_values(r, 9, "train_labels.csv").reshape(3, 3) for r in rows["rotation_matrix"]])
    axis, up = R[:, 2, :], -R[:, 1, :]
    close = axis @ axis.T > np.cos(np.radians(angle))
    np.fill_diagonal(close, False)
    mean_up = up.mean(0)
    return close, up @ mean_up < 0


def recall(selected: list[tuple[str, str]], names: list[str], close: np.ndarray, flipped: np.ndarray) -> dict:
    index = {n: i for i, n in enumerate(names)}
    chosen = np.zeros_like(close)
    for a, b in selected:
        chosen[index[a], index[b]] = chosen[index[b], index[a]] = True
    upper = np.triu(np.ones_like(close), 1)
    cross = (flipped[:, None] != flipped[None, :]) & close & upper
    return {
        "pairs": len(selected),
        "recall": (chosen & close & upper).sum() / max((close & upper).sum(), 1),
        "cross": (chosen & cross).sum() / cross.sum() if cross.sum() else float("nan"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--angle", type=float, default=30.0)
    p.add_argument("--min-pairs", type=int, nargs="+", default=[10, 20])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-pairs-"))
    labels = pd.read_csv(args.data / "train" / "train_labels.csv", dtype={"image_name": str})
    fconf = plan.resolve(device="cpu", pairs="vlad")["features"]
    rows = []
    for scene in data.load_scenes(args.data, "train", args.scenes):
        names = list(scene.image_names)
        feature_path = work / scene.key / f"{fconf['output']}.h5"
        features.main(fconf, scene.image_dir, names, feature_path, "cpu", weights=args.weights)
        close, flipped = ground_truth(labels[labels["scene"] == scene.scene], names, args.angle)
        total = len(names) * (len(names) - 1) // 2
        row = {
            "scene": scene.scene,
            "photos": len(names),
            "all pairs": total,
            "pairs that matter": int(np.triu(close, 1).sum()),
        }
        for k in args.min_pairs:
            vconf = pairs.confs["vlad"]
            desc = pairs.vlad_descriptors(feature_path, names, vconf["clusters"], vconf["sample"], vconf["iterations"])
            chosen = [(names[i], names[j]) for i, j in pairs.pairs_from_descriptors(torch.from_numpy(desc), 0.0, k)]
            r = recall(chosen, names, close, flipped)
            row.update(
                {
                    f"vlad k={k} pairs": r["pairs"],
                    f"vlad k={k} recall": round(r["recall"], 3),
                    f"vlad k={k} cross": round(r["cross"], 3),
                }
            )
        rows.append(row)
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
