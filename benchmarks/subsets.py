"""Subsets of a scene, for the scale table: every k-th photo of one scene as a new data folder.

    python benchmarks/subsets.py --data ../shared/data/imc-hard --scene dino-full --sizes 50 100 200 363 --out DIR

Writes DIR/<scene>-<n>/train/<scene>-<n>/images/ (symbolic links to the photos), with matching
train_labels.csv and categories.csv, so `imc-lib run DIR/<scene>-<n>` and the benchmarks read it as any
data folder. Photos are taken evenly over the sorted names, so a subset spans the whole scene.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments  # noqa: E402


def make_subset(data_dir: Path, scene: str, size: int, out: Path) -> Path:
    """A data folder holding `size` photos of `scene` spread evenly over its sorted names."""
    labels = pd.read_csv(data_dir / "train" / "train_labels.csv")
    rows = labels[labels["scene"] == scene].sort_values("image_name")
    if rows.empty:
        raise ValueError(f"{data_dir}/train/train_labels.csv: no scene {scene!r}")
    keep = rows.iloc[np.unique(np.linspace(0, len(rows) - 1, min(size, len(rows))).round().astype(int))].copy()
    name = f"{scene}-{len(keep)}"
    root = out / name / "train"
    images = root / name / "images"
    images.mkdir(parents=True, exist_ok=True)
    for image in keep["image_name"]:
        link = images / image
        if not link.exists():
            link.symlink_to((data_dir / "train" / scene / "images" / image).resolve())
    keep["dataset"] = keep["scene"] = name
    keep.to_csv(root / "train_labels.csv", index=False)
    categories = pd.read_csv(data_dir / "train" / "categories.csv")
    categories = categories[categories["scene"] == scene].assign(scene=name)
    categories.to_csv(root / "categories.csv", index=False)
    return out / name


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--scene", required=True)
    p.add_argument("--sizes", type=int, nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    for size in args.sizes:
        print(make_subset(args.data, args.scene, size, args.out))


if __name__ == "__main__":
    main()
