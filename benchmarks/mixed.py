"""Mixed folders (IMC 2025): the composed set run as `imc-lib run` runs it, against its scenes run alone.

    python benchmarks/mixed.py [--datasets small tabletop] [--work DIR] [--no-alone]

Builds ../shared/data/imc25-mix with its compose.py (hard links) into --work, runs every dataset with
the defaults (pipeline.run, no options) and prints per dataset: score, mAA, clusterness, outliers
found (of the true outliers) and wall seconds. Then runs each scene of the recipe alone from its
IMC 2024 source (imc-mini, imc-hard), also with the defaults, and prints each scene's mAA in the
mixed run next to its mAA alone, each dataset's wall next to the sum of its scenes' walls alone, and
the same per stage (where mixing costs its time).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, markdown  # noqa: E402

from imc_lib import pipeline  # noqa: E402
from imc_lib.formats import metric

MIX = ROOT.parent / "shared" / "data" / "imc25-mix"


def timed_run(data_dir: Path, work: Path, scenes: list[str], weights) -> tuple[dict, float]:
    start = time.perf_counter()
    result = pipeline.run(data_dir, work / "submission.csv", work, "train", scenes, weights=weights)
    return result, time.perf_counter() - start


def mixed(root: Path, work: Path, datasets: list[str], weights) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The datasets run mixed: per dataset scores and wall; per scene mAA; per dataset seconds per stage."""
    walls, stages = {}, {}
    for dataset in datasets:  # one run per dataset, so each has its own wall
        result, walls[dataset] = timed_run(root, work / dataset, [dataset], weights)
        stages[dataset] = result["times"]
    subs = pd.concat([pd.read_csv(work / d / "submission.csv", dtype=str) for d in datasets])
    subs.to_csv(work / "submission.csv", index=False)
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    labels[labels["dataset"].isin(datasets)].to_csv(work / "labels.csv", index=False)
    per_dataset, per_scene = metric.score_2025(work / "labels.csv", work / "submission.csv",
                                               root / "train_thresholds.csv")  # fmt: skip
    per_dataset["wall s"] = per_dataset["dataset"].map(walls)
    return per_dataset, per_scene, stages


def alone(recipe: dict, work: Path, datasets: list[str], weights) -> dict[str, tuple[float, float, dict]]:
    """{scene: (mAA, wall s, seconds per stage)} of each scene of `datasets` run alone from its IMC 2024 source."""
    out = {}
    for dataset in datasets:
        for key, scene in recipe["datasets"][dataset]["scenes"]:
            source = (MIX / recipe["sources"][key]).resolve()
            result, wall = timed_run(source, work / key / scene, [scene], weights)
            table = metric.score(source / "train" / "train_labels.csv", work / key / scene / "submission.csv")
            out[scene] = (float(table[table["scene"] == scene]["mAA"].iloc[0]), wall, result["times"])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["small", "tabletop"])
    p.add_argument("--work", type=Path, help="default: a fresh temporary folder")
    p.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    p.add_argument("--no-alone", action="store_true", help="skip the scenes run alone")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-mixed-"))
    root = work / "imc25"
    if not root.exists():
        subprocess.run([sys.executable, str(MIX / "compose.py"), str(root), "--link"], check=True)
    recipe = json.loads((MIX / "recipe.json").read_text())
    per_dataset, per_scene, stages = mixed(root, work / "mixed", args.datasets, args.weights)
    print("\nmixed (IMC 2025 layout), `imc-lib run` defaults:\n")
    columns = ["dataset", "images", "clusters", "score", "mAA", "clusterness", "outliers_found", "outliers", "wall s"]
    print(markdown(per_dataset[[c for c in columns if c in per_dataset]].round(3)))
    if args.no_alone:
        print(markdown(per_scene.round(3)))
        return
    solo = alone(recipe, work / "alone", args.datasets, args.weights)
    per_scene["mAA alone"] = per_scene["scene"].map(lambda s: solo[s][0])
    print("\nper scene, mixed against alone (IMC 2024 layout, same defaults):\n")
    print(markdown(per_scene[["dataset", "scene", "cluster", "mAA", "mAA alone"]].round(3)))
    print("\nwall, mixed against its scenes alone:\n")
    scenes_of = {d: [s for _, s in recipe["datasets"][d]["scenes"]] for d in args.datasets}
    walls = [
        {"dataset": d, "mixed s": round(w), "alone s": round(sum(solo[s][1] for s in scenes_of[d]))}
        for d, w in zip(per_dataset["dataset"], per_dataset["wall s"])
    ]
    table = pd.DataFrame(walls)
    table.loc[len(table)] = ["both", table["mixed s"].sum(), table["alone s"].sum()]
    table["ratio"] = (table["mixed s"] / table["alone s"]).round(2)
    print(markdown(table))
    print("\nseconds per stage, mixed / its scenes alone:\n")
    print(markdown(stage_table(stages, {d: [solo[s][2] for s in scenes_of[d]] for d in args.datasets})))


def stage_table(mixed: dict[str, dict], alone: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per dataset, a column per stage: "mixed s / alone s" (alone: the sum over its scenes)."""
    rows = []
    for dataset, times in mixed.items():
        row = {"dataset": dataset}
        for stage, seconds in times.items():
            row[stage] = f"{seconds:.0f} / {sum(t.get(stage, 0.0) for t in alone[dataset]):.0f}"
        rows.append(row)
    return pd.DataFrame(rows)


if __name__ == "__main__":
    main()
