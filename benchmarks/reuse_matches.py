"""The matching stage with and without the `mnn` orientation's as-stored matches (issue 20), on the
finished scenes of a default run: pairs copied vs matched, seconds each way, and whether the copies
equal the run's own matches (indices, scores, fingerprints).

    python benchmarks/reuse_matches.py RUN_DIR --data imc-mini --out DIR [--scenes fountain ...]

RUN_DIR: the `--work` folder's config folder of a finished `benchmarks/speed.py` run (e.g. WORK/default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments  # noqa: E402

from imc_lib import networks, plan, utils  # noqa: E402
from imc_lib.formats import data  # noqa: E402
from imc_lib.stages import matching, orientation  # noqa: E402
from imc_lib.storage import io  # noqa: E402


def read_all(path: Path) -> dict:
    with h5py.File(path) as f:
        return {f"{a}/{b}": (f[a][b]["matches"][()], f[a][b]["scores"][()], f[a][b].attrs["fingerprint"])
                for a in f for b in f[a]}  # fmt: skip


def copyable(orient_matches: Path, feature_path: Path, pairs: list, model: dict) -> int:
    with io.MatchReader(orient_matches) as stored, io.FeatureReader(feature_path) as feats:
        made_by = {(a, b): io.matcher_fingerprint(feats.fingerprint(a), feats.fingerprint(b), model) for a, b in pairs}
        return sum(stored.holds(a, b) and stored.fingerprint(a, b) == made_by[(a, b)] for a, b in pairs)


def one_scene(scene, run_dir: Path, out: Path, sconfs: dict, nets) -> str:
    fconf, oconf, mconf = sconfs["features"], sconfs["orientation"], sconfs["matching"]
    paths = plan.plan_scene(scene, sconfs, run_dir).paths
    (out / scene.key).mkdir(parents=True, exist_ok=True)
    feats = shutil.copy(paths.features, out / scene.key / paths.features.name)  # the run's stay untouched
    start = time.perf_counter()
    orient = orientation.main(oconf, scene.image_dir, list(scene.image_names), paths.candidates,
                              out / scene.key / paths.orientation.name, nets.device,
                              extractor=nets.extractor(fconf), matcher=nets.matcher(fconf, oconf["matching"]),
                              feature_path=feats, features_conf=fconf)  # fmt: skip
    seconds = {"orientation": time.perf_counter() - start}
    for name, reuse in (("fresh", None), ("copied", orientation.matches_path(orient))):
        start = time.perf_counter()
        matching.main(mconf, paths.match_pairs, feats, out / scene.key / f"{name}.h5", "aliked", nets.device,
                      network=nets.matcher(fconf, mconf), reuse=reuse)  # fmt: skip
        seconds[name] = time.perf_counter() - start
    run, copied = read_all(paths.matches), read_all(out / scene.key / "copied.h5")
    same = run.keys() == copied.keys() and all(all(map(np.array_equal, run[k], copied[k])) for k in run)
    pairs = io.read_pairs(paths.match_pairs)
    n = copyable(orientation.matches_path(orient), feats, pairs, mconf["model"])
    return (f"| {scene.key} | {len(pairs)} | {n} | {len(pairs) - n} | {seconds['orientation']:.1f} | "
            f"{seconds['fresh']:.2f} | {seconds['copied']:.2f} | {same} |")  # fmt: skip


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    add_data_arguments(p)
    args = p.parse_args()
    scenes = data.load_scenes(args.data, "train", args.scenes)
    # The pairs method the run used: exhaustive below the retrieval threshold, else VLAD (no DINOv2 here).
    method = "vlad" if any(len(s.image_names) >= 20 for s in scenes) else "exhaustive"
    sconfs = plan.resolve(device="cpu", features="aliked", pairs=method)
    nets = networks.Networks(args.weights, utils.pick_device("cpu"))
    print("| scene | pairs | copied | matched | orientation s | matching fresh s | copied s | copies == run's |")
    print("|---|---|---|---|---|---|---|---|")
    for scene in scenes:
        print(one_scene(scene, args.run_dir, args.out, sconfs, nets), flush=True)


if __name__ == "__main__":
    main()
