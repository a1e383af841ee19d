"""How the cost grows with the photos: the defaults on nested subsets of the 1,042-photo IMC 2025 set.

    python benchmarks/scale.py [--sizes 130 260 520 1042] [--work DIR] [--recipe big.json]

Each subset holds whole scenes of the recipe (`../shared/data/imc25-mix/big.json`: every scene of imc-hard
and imc-real, fountain and herzjesu-p8, 8-363 photos), added in a fixed shuffled order while they fit its size
(10% over at most), so every subset holds the one before it. Each is composed with the set's own compose.py (hard links)
into one IMC 2025 dataset and run as `imc-lib run` runs it, in a subprocess of its own, whose peak memory
(maximum RSS, `os.wait4`) is measured. One row per subset: photos, scenes, pairs chosen and pairs matched
(those that kept matches), the wall time of each stage, peak memory, clusters found, clusterness and score.
Run it alone: two benchmarks at once on 2 cores time each other.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, markdown  # noqa: E402

from imc_lib.formats import metric  # noqa: E402
from imc_lib.runner import TIMES  # noqa: E402
from imc_lib.storage import io  # noqa: E402

MIX = ROOT.parent / "shared" / "data" / "imc25-mix"


def scene_sizes(recipe: dict, base: Path) -> dict[tuple[str, str], int]:
    """(source, scene) -> photos, from each source's train_labels.csv."""
    sizes: dict[tuple[str, str], int] = {}
    for key, folder in recipe["sources"].items():
        with open((base / folder).resolve() / "train" / "train_labels.csv") as f:
            for row in csv.DictReader(f):
                sizes[(key, row["scene"])] = sizes.get((key, row["scene"]), 0) + 1
    return sizes


def nested_subsets(scenes: list, sizes: dict, targets: list[int], seed: int = 0) -> list[list]:
    """For each target, whole scenes near it (up to 10% over), each subset holding the one before: scenes
    of a fixed shuffled order are added while they fit; a target of all the photos or more takes every scene."""
    order = list(scenes)
    random.Random(seed).shuffle(order)
    total = sum(sizes[tuple(s)] for s in scenes)
    chosen, photos, out = [], 0, []
    for target in targets:
        for scene in [s for s in order if s not in chosen]:
            if target >= total or photos + sizes[tuple(scene)] <= 1.1 * target:
                chosen.append(scene)
                photos += sizes[tuple(scene)]
        out.append(list(chosen))
    return out


def compose(recipe: dict, base: Path, scenes: list, out: Path) -> Path:
    """One IMC 2025 dataset `thousand` of `scenes`, by compose.py with a recipe of its own (sources absolute)."""
    sub = {**recipe, "sources": {k: str((base / v).resolve()) for k, v in recipe["sources"].items()}}
    sub["datasets"] = {"thousand": {"scenes": scenes, "outliers": []}}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(sub))
    subprocess.run([sys.executable, MIX / "compose.py", out, "--recipe", path, "--link"], check=True,
                   capture_output=True)  # fmt: skip
    return out


def timed_run(data: Path, work: Path, log: Path) -> tuple[float, float]:
    """(wall s, peak RSS GiB) of `imc-lib run` on `data` with the defaults, in a subprocess of its own."""
    cmd = [sys.executable, "-m", "imc_lib.cli", "run", str(data), "--out", str(work / "submission.csv"),
           "--work", str(work)]  # fmt: skip
    start = time.perf_counter()
    with log.open("w") as stderr:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"imc-lib run failed on {data}: see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 2**20  # Linux: KiB


def pair_counts(record: dict) -> tuple[int, int]:
    """(pairs chosen, pairs that kept matches) of the run's one dataset, from its matches file."""
    (scene,) = record["scenes"]
    sfm = Path(scene["sfm"])
    matches = sfm.parent / (sfm.name.split("_", 1)[1] + ".h5")  # sfm-clusters_<feats>_<matcher>_<pairs>
    chosen = len(io.read_pairs(sfm.parent / (sfm.name.rsplit("_", 1)[1] + ".txt")))
    found = []
    with h5py.File(matches, "r") as f:
        f.visititems(lambda name, item: found.append(item.shape[0]) if name.endswith("/matches") else None)
    return chosen, sum(n > 0 for n in found)


def row(data: Path, work: Path, scenes: list, wall: float, rss: float) -> dict:
    record = io.read_json(work / "run.json")
    datasets, _ = metric.score_2025(data / "train_labels.csv", work / "submission.csv", data / "train_thresholds.csv")
    d = datasets.iloc[0]
    chosen, kept = pair_counts(record)
    times = record["times"]
    return {
        "photos": int(d["images"]),
        "scenes": len(scenes),
        "pairs chosen": chosen,
        "pairs matched": kept,
        **{f"{s} s": round(times.get(s, 0.0), 1) for s in TIMES},
        "wall s": round(wall, 1),
        "peak RSS GiB": round(rss, 2),
        "clusters": int(d["clusters"]),
        "clusterness": round(float(d["clusterness"]), 3),
        "score": round(float(d["score"]), 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[130, 260, 520, 1042])
    p.add_argument("--work", type=Path, help="default: a new temporary folder")
    p.add_argument("--recipe", type=Path, default=MIX / "big.json")
    args = p.parse_args(argv)
    recipe, base = json.loads(args.recipe.read_text()), args.recipe.resolve().parent
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    scenes = recipe["datasets"]["thousand"]["scenes"]
    rows = []
    for target, chosen in zip(args.sizes, nested_subsets(scenes, scene_sizes(recipe, base), args.sizes)):
        data = compose(recipe, base, chosen, work / f"data-{target}")
        run_dir = work / f"run-{target}"
        wall, rss = timed_run(data, run_dir, work / f"run-{target}.log")
        rows.append(row(data, run_dir, chosen, wall, rss))
        print(markdown(pd.DataFrame(rows[-1:])), flush=True)
    print(f"\n`python benchmarks/scale.py --sizes {' '.join(map(str, args.sizes))}` (work: {work})\n")
    print(markdown(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
