"""Accuracy benchmark: named configurations and plain COLMAP SIFT on the same photos, one table.

    python benchmarks/accuracy.py [--data DIR ...] [--configs default stored ...] [--no-sift] [--work DIR]

Per scene and configuration: mAA, registered/total and wall seconds; SIFT runs in this process as
the peer. Data default: $IMC_DATA_DIR (else ../shared/data/imc-mini); weights: $IMC_WEIGHTS_DIR
(else ../shared/weights). Each configuration gets its own work folder under --work, so reruns
reuse finished stages (pass a fresh --work to time from scratch).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, run_sift  # noqa: E402

from imc_lib import pipeline  # noqa: E402
from imc_lib.formats import metric

LIGHTGLUE_1024 = {"resize_to": 1024, "matcher": "lightglue", "orientation": "upright"}
# pipeline.run keyword arguments per named configuration; "default" is what `imc-lib run` does
# (on a CPU: plan.CPU_DEFAULTS).
CONFIGS = {
    "default": {},
    "1024px": {"resize_to": 1024},  # the main features at 1024 px instead of the CPU's 640
    # The GPU's stages at the CPU's keypoint budget (the CPU default before the speed work).
    "lightglue-1024": LIGHTGLUE_1024,
    "stored": {"orientation": "none"},
    "disk": {"features": "disk", **LIGHTGLUE_1024},
    "4096": {**LIGHTGLUE_1024, "max_keypoints": 4096},
}


def score_table(data_dir: Path, submission: Path, registered: dict[str, int]) -> dict[str, tuple[float, int]]:
    scores = metric.score(data_dir / "train" / "train_labels.csv", submission)
    return {r.scene: (r.mAA, registered.get(r.scene, 0)) for r in scores.itertuples() if r.scene in registered}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, several=True)
    p.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    p.add_argument("--no-sift", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-accuracy-"))

    for data_dir in args.data:
        columns: dict[str, dict] = {}
        if not args.no_sift:
            sift = run_sift(data_dir, work / data_dir.name / "sift", args.scenes)
            scores = score_table(data_dir, sift["submission"], {k: r["registered"] for k, r in sift["scenes"].items()})
            columns["COLMAP SIFT"] = {
                k: (*scores[k], sift["scenes"][k]["images"], sift["scenes"][k]["seconds"]) for k in scores
            }
        for name in args.configs:
            out = work / data_dir.name / name
            start = time.perf_counter()
            result = pipeline.run(
                data_dir,
                out / "submission.csv",
                out,
                "train",
                args.scenes,
                weights=args.weights,
                **{"features": "aliked", **CONFIGS[name]},
            )
            wall = time.perf_counter() - start
            scenes = result["scenes"]
            scores = score_table(data_dir, out / "submission.csv", {k: r.registered for k, r in scenes.items()})
            columns[name] = {k: (*scores[k], scenes[k].images, sum(scenes[k].times.values())) for k in scores}
            columns[name]["_wall"] = wall

        print(f"\n{data_dir.name} ({data_dir}):\n")
        print("| scene | " + " | ".join(f"{c} mAA | reg | s" for c in columns) + " |")
        print("|---|" + "---|---|---|" * len(columns))
        scene_names = sorted({k for col in columns.values() for k in col if not k.startswith("_")})
        for scene in scene_names:
            cells = []
            for col in columns.values():
                if scene not in col:  # SIFT skips the largest scenes (common.SIFT_MAX_IMAGES)
                    cells.append("not run | | ")
                    continue
                mAA, reg, n, secs = col[scene]
                cells.append(f"{mAA:.3f} | {reg}/{n} | {secs:.0f}")
            print(f"| {scene} | " + " | ".join(cells) + " |")
        means = []
        for col in columns.values():
            rows = [v for k, v in col.items() if not k.startswith("_")]
            means.append(f"**{sum(r[0] for r in rows) / len(rows):.3f}** | | {sum(r[3] for r in rows):.0f}")
        print("| **mean / total** | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
