"""The Ray executor's overhead: the same scenes run by the local executor and by the Ray executor on a
local cluster of this machine's cores, in one process, each from scratch in its own folder.

    python benchmarks/ray_overhead.py [--data imc-mini] [--scenes ...] [--device cpu] [--work DIR]

Prints one row per executor: the cluster's start (not part of the run: a cluster outlives many runs),
the run's wall time, its overhead against the local run, and the mAA per scene (they must agree).
The default pipeline settings (`imc-lib run`'s); imc-mini's scenes are far below the shard threshold,
so the Ray run is one task per scene.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, markdown  # noqa: E402

from imc_lib import pipeline  # noqa: E402
from imc_lib.execution.executor import LocalExecutor  # noqa: E402
from imc_lib.execution.ray_executor import RayExecutor  # noqa: E402
from imc_lib.formats import metric


def timed_run(args, work: Path, name: str, runner) -> tuple[float, str]:
    """Wall seconds of one `pipeline.run`, and its mAA per scene ("a / b / ...")."""
    start = time.perf_counter()
    pipeline.run(args.data, work / f"{name}.csv", work / name, scenes=args.scenes, device=args.device,
                 weights=args.weights, executor=runner)  # fmt: skip
    wall = time.perf_counter() - start
    table = metric.score(args.data / "train/train_labels.csv", work / f"{name}.csv")
    ran = table[table["scene"].isin(args.scenes) if args.scenes else table["scene"] != "all"]
    return wall, " / ".join(f"{v:.3f}" for v in ran["mAA"])  # scenes left out by --scenes are not rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="the local Ray cluster's CPUs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    local_wall, local_maa = timed_run(args, work, "local", LocalExecutor())
    start = time.perf_counter()
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    started = time.perf_counter() - start
    try:
        ray_wall, ray_maa = timed_run(args, work, "ray", RayExecutor())
    finally:
        ray.shutdown()
    rows = [
        ("local", "", f"{local_wall:.1f}", "", local_maa),
        (f"ray ({args.num_cpus} CPUs)", f"{started:.1f}", f"{ray_wall:.1f}",
         f"{100 * (ray_wall / local_wall - 1):+.1f}%", ray_maa),
    ]  # fmt: skip
    columns = ["executor", "cluster start s", "run wall s", "overhead", "mAA per scene"]
    print(f"{args.data} ({', '.join(args.scenes or ['all scenes'])}), device {args.device}, work {work}")
    print(markdown(pd.DataFrame(rows, columns=columns)))


if __name__ == "__main__":
    main()
