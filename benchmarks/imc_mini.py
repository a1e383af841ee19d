"""End-to-end benchmark: run the pipeline on a data set, score it, print per-scene mAA and stage times.

    python benchmarks/imc_mini.py [--data $IMC_DATA_DIR] [--features aliked] [--max-keypoints N]
                                  [--pairs dinov2|exhaustive] [--work DIR] [--overwrite]

Defaults: data from $IMC_DATA_DIR (else ../shared/data/imc-mini), weights from $IMC_WEIGHTS_DIR
(else ../shared/weights). Timings are wall seconds; a rerun on the same --work reuses finished
stages, so pass --overwrite (or a fresh --work) to time from scratch.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import pycolmap
import torch

from imc_lib import pipeline, plan, runner
from imc_lib.formats import metric

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments  # noqa: E402

STAGES = runner.TIMES


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--features", default="aliked", choices=sorted(plan.confs))
    p.add_argument("--max-keypoints", type=int)
    p.add_argument("--resize-to", type=int)
    p.add_argument("--orientation", choices=["upright", "none"])
    p.add_argument("--pairs", choices=["dinov2", "exhaustive"])
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2

    work = args.work or Path(tempfile.mkdtemp(prefix="imc-bench-"))
    out = work / "submission.csv"
    start = time.perf_counter()
    result = pipeline.run(
        args.data,
        out,
        work,
        "train",
        args.scenes,
        features=args.features,
        weights=args.weights,
        overwrite=args.overwrite,
        max_keypoints=args.max_keypoints,
        pairs=args.pairs,
        resize_to=args.resize_to,
        orientation=args.orientation,
    )
    total = time.perf_counter() - start
    scores = metric.score(args.data / "train" / "train_labels.csv", out)
    scores = scores[scores["scene"].isin([k for k in result["scenes"]])]

    print(
        f"imc_lib on {args.data.name}: features={args.features} max_keypoints={args.max_keypoints or 'default'} "
        f"resize_to={args.resize_to or 'default'} orientation={args.orientation or 'default'} "
        f"pairs={args.pairs or 'default'}; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}"
    )
    print()
    header = "| scene | registered | mAA | " + " | ".join(f"{s} s" for s in STAGES) + " | total s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in scores.itertuples(index=False):
        r = result["scenes"][row.scene]
        t = [r.times.get(s, 0.0) for s in STAGES]
        print(
            f"| {row.scene} | {r.registered}/{row.images} | {row.mAA:.3f} | "
            + " | ".join(f"{x:.1f}" for x in t)
            + f" | {sum(t):.1f} |"
        )
    t = [result["times"].get(s, 0.0) for s in STAGES]
    print(
        f"| **mean / total** | | **{scores['mAA'].mean():.3f}** | "
        + " | ".join(f"{x:.1f}" for x in t)
        + f" | {total:.1f} |"
    )


if __name__ == "__main__":
    main()
