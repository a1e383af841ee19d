"""What joining the mapper's models does (imc_lib/stages/joining.py), per scene: before and after, one table.

    python benchmarks/models.py [--data imc-mini imc-hard ...] [--scenes S ...] [--work DIR]

Runs `imc-lib run`'s default (pipeline.run, no options) on each data set, then per scene reads its
reconstruction folder: "before" is the largest model the mapper made (what the pipeline kept before
models were joined), "after" the final model. Columns: mapper models -> kept models, photos registered
before -> after, mAA before -> after, seconds the joining took and the scene's whole wall seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, markdown  # noqa: E402

from imc_lib import pipeline
from imc_lib.formats import data, metric, submission
from imc_lib.stages import reconstruction  # noqa: E402


def before_poses(sfm_dir: Path, summary: dict) -> dict:
    """The largest model the mapper made in the folder the final clusters came from."""
    folder = sfm_dir / summary["mapped_in"]
    models = {int(p.parent.name): pycolmap.Reconstruction(p.parent) for p in folder.glob("*/images.bin")}
    return reconstruction.poses(reconstruction.largest_model(models))


def scene_maa(data_dir: Path, scene: data.Scene, found: dict, path: Path) -> float:
    submission.write_submission(submission.scene_rows(scene, found), path)
    table = metric.score(data_dir / "train" / "train_labels.csv", path)
    return float(table[table["scene"] == scene.key]["mAA"].iloc[0])


def rows(data_dir: Path, work: Path, result: dict, scenes: list[str] | None) -> list[dict]:
    out = []
    for scene in data.load_scenes(data_dir, "train", scenes):
        r = result["scenes"][scene.key]
        summary = r.models
        if not summary:
            out.append({"scene": scene.key, "status": r.error or r.skipped or "no model"})
            continue
        (sfm_dir,) = [p.parent for p in (work / scene.key).glob("*/summary.json")]
        before = before_poses(sfm_dir, summary)
        after = reconstruction.poses(reconstruction.clusters(sfm_dir)[0])
        maa = [scene_maa(data_dir, scene, found, work / f"{scene.key}-{k}.csv") for k, found in
               (("before", before), ("after", after))]  # fmt: skip
        out.append({
            "scene": scene.key,
            "models": f"{summary['models_before']} -> {summary['models_after']}",
            "registered": f"{summary['registered_before']} -> {summary['registered_after']} / {len(scene.image_names)}",
            "mAA": f"{maa[0]:.3f} -> {maa[1]:.3f}",
            "join s": f"{summary['seconds']:.1f}",
            "scene s": f"{sum(r['times'].values()):.0f}",
            "mapped in": summary["mapped_in"],
        })  # fmt: skip
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, several=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-models-"))
    for data_dir in args.data:
        out = work / data_dir.name
        result = pipeline.run(data_dir, out / "submission.csv", out, "train", args.scenes, weights=args.weights)
        print(f"\n{data_dir.name} ({data_dir}):\n")
        print(markdown(pd.DataFrame(rows(data_dir, out, result, args.scenes)).fillna("")))


if __name__ == "__main__":
    main()
