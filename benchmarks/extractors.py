"""Extractor sweep: every combination of extractor x resolution x keypoints x matcher, each a whole
`imc-lib run` from scratch, next to COLMAP SIFT timed in the same process on the same photos.

    python benchmarks/extractors.py [--data imc-mini imc-mini-rot ...] [--scenes S ...]
        [--features aliked xfeat aliked-t16 aliked+xfeat ...] [--resize-to 640 1024 ...]
        [--max-keypoints 2048 4096 ...] [--matcher mnn lightglue] [--orientation mnn|upright|none]
        [--rate-photos 8] [--device auto|cpu|cuda] [--threads N] [--no-sift] [--work DIR]

Per data set and setting it prints the seconds of each stage (runner.TIMES, summed over
scenes), the wall time against SIFT's, and two rates of each extractor: "net" photos per second
(the network alone, on the first --rate-photos photos of the first scene, already decoded and
resized, after one warm-up photo) and "stage" photos per second (the features stage: decoding,
network, writing and the network's loading; photos the `mnn` orientation extracted turned are
timed in the orientation stage instead). Then per scene: mAA and seconds of every setting and of
SIFT. Options left out take `imc-lib run`'s value (on a CPU, plan.CPU_DEFAULTS); a setting
that cannot run (aliked-t16 has no LightGlue) is named and skipped. Data: names of
../shared/data folders or paths; weights: $IMC_WEIGHTS_DIR (else ../shared/weights).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pycolmap
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, run_sift  # noqa: E402

from imc_lib import networks, pipeline, plan, runner  # noqa: E402
from imc_lib.formats import data, metric  # noqa: E402
from imc_lib.stages import features  # noqa: E402
from imc_lib.utils import read_image, usable_device  # noqa: E402


def settings(args) -> list[dict]:
    """pipeline.run keyword arguments of every combination asked for; None keeps run's default."""
    axes = [args.features, args.resize_to or [None], args.max_keypoints or [None], args.matcher or [None]]
    return [
        {"features": conf, "resize_to": size, "max_keypoints": keypoints, "matcher": matcher,
         "orientation": args.orientation}
        for conf, size, keypoints, matcher in itertools.product(*axes)
    ]  # fmt: skip


def label(kwargs: dict) -> str:
    """A setting's short name: the pipeline conf and the options it sets (e.g. "xfeat 1024px mnn")."""
    parts = [kwargs["features"]]
    for key, fmt in (
        ("resize_to", "{}px"),
        ("max_keypoints", "{}kp"),
        ("matcher", "{}"),
        ("orientation", "orient-{}"),
    ):
        if kwargs[key] is not None:
            parts.append(fmt.format(kwargs[key]))
    return " ".join(parts)


def unusable(kwargs: dict, device: torch.device) -> str | None:
    """Why a setting cannot run (an extractor without LightGlue asked to use it), else None."""
    sconfs = plan.resolve(device=device, **{**kwargs, "pairs": "exhaustive"})
    if sconfs["matching"]["model"]["name"] != "lightglue":
        return None
    names = [networks.lightglue_key(f) for f in [sconfs["features"], *sconfs["also"]]]
    lacking = [n for n in names if f"lightglue-{n}" not in networks.WEIGHT_FILES]
    return f"no LightGlue for {', '.join(lacking)}" if lacking else None


def network_rate(fconf: dict, nets: networks.Networks, photos: list[Path]) -> float:
    """Photos per second of the extractor of `fconf` alone (decoded, resized photos; one warm-up)."""
    model = nets.extractor(fconf)()
    images = [read_image(p, max_side=features.max_side(fconf)) for p in photos]
    features.extract(model, fconf, images[0], nets.device)
    start = time.perf_counter()
    for image in images:
        features.extract(model, fconf, image, nets.device)
    return len(images) / (time.perf_counter() - start)


def run_setting(data_dir: Path, kwargs: dict, work: Path, args) -> dict:
    """One `imc-lib run` from scratch with `kwargs`: wall, stage times, rates, per-scene (mAA, seconds)."""
    networks: dict = {}
    start = time.perf_counter()
    result = pipeline.run(data_dir, work / "submission.csv", work, "train", args.scenes, device=args.device,
                          weights=args.weights, networks=networks, **kwargs)  # fmt: skip
    wall = time.perf_counter() - start
    scores = metric.score(data_dir / "train" / "train_labels.csv", work / "submission.csv").set_index("scene")["mAA"]
    scenes = result["scenes"]
    first = data.load_scenes(data_dir, "train", args.scenes)[0]
    photos = [first.image_dir / n for n in list(first.image_names)[: args.rate_photos]]
    nets = networks.Networks(args.weights, args.device, networks)
    fconfs = [result["confs"]["features"], *result["confs"]["also"]]
    photos_done = sum(r.images for r in scenes.values()) * len(fconfs)
    return {
        "wall": wall,
        "times": result["times"],
        "net": {f["model"].get("model_name", f["model"]["name"]): network_rate(f, nets, photos) for f in fconfs},
        "stage": photos_done / result["times"]["features"] if result["times"].get("features") else float("nan"),
        "scenes": {k: (scores[k], sum(r.times.values()), r.images) for k, r in scenes.items() if k in scores},
    }


def print_stages(rows: dict[str, dict], sift_wall: float | None) -> None:
    stages = [s for s in runner.TIMES if any(s in r["times"] for r in rows.values())]
    print("| setting | wall s | x SIFT | net photos/s | stage photos/s | " + " | ".join(f"{s} s" for s in stages)
          + " | mean mAA |")  # fmt: skip
    print("|---" * (6 + len(stages)) + "|")
    for name, r in rows.items():
        net = ", ".join(f"{k} {v:.1f}" for k, v in r["net"].items())
        ratio = f"{r['wall'] / sift_wall:.2f}" if sift_wall else "-"
        mean = sum(v[0] for v in r["scenes"].values()) / max(len(r["scenes"]), 1)
        print(f"| {name} | {r['wall']:.1f} | {ratio} | {net} | {r['stage']:.2f} | "
              + " | ".join(f"{r['times'].get(s, 0.0):.1f}" for s in stages) + f" | {mean:.3f} |")  # fmt: skip
    print()


def print_scenes(rows: dict[str, dict], sift: dict, sift_scores: dict) -> None:
    names = list(rows)
    print("| scene | photos | SIFT mAA (s) | " + " | ".join(f"{n} mAA (s)" for n in names) + " |")
    print("|---" * (3 + len(names)) + "|")
    scenes = sorted({k for r in rows.values() for k in r["scenes"]} | set(sift_scores))
    for scene in scenes:
        s = sift["scenes"].get(scene)
        cells = [f"{sift_scores[scene]:.3f} ({s['seconds']:.0f})" if s and scene in sift_scores else "not run"]
        cells += [f"{r['scenes'][scene][0]:.3f} ({r['scenes'][scene][1]:.0f})" if scene in r["scenes"] else "-"
                  for r in rows.values()]  # fmt: skip
        photos = s["images"] if s else next(r["scenes"][scene][2] for r in rows.values() if scene in r["scenes"])
        print(f"| {scene} | {photos} | " + " | ".join(cells) + " |")
    print()


def run_data_set(data_dir: Path, args, work: Path) -> None:
    print(f"## {data_dir} ({len(data.load_scenes(data_dir, 'train', args.scenes))} scenes)\n")
    sift, sift_scores, sift_wall = {"scenes": {}}, {}, None
    if not args.no_sift:
        start = time.perf_counter()
        sift = run_sift(data_dir, work / "sift", args.scenes)
        sift_wall = time.perf_counter() - start
        table = metric.score(data_dir / "train" / "train_labels.csv", sift["submission"]).set_index("scene")["mAA"]
        sift_scores = {k: v for k, v in table.items() if k in sift["scenes"]}
        print(f"COLMAP SIFT: {sift_wall:.1f} s wall\n")
    rows = {}
    for i, kwargs in enumerate(settings(args)):
        name = label(kwargs)
        why = unusable(kwargs, args.device)
        if why:
            print(f"{name}: skipped ({why})")
            continue
        rows[name] = run_setting(data_dir, kwargs, work / f"{i:02d}", args)
        print(f"{name}: {rows[name]['wall']:.1f} s", flush=True)
    print()
    print_stages(rows, sift_wall)
    print_scenes(rows, sift, sift_scores)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, several=True)
    p.add_argument("--features", nargs="+", default=["aliked", "xfeat"], choices=sorted(plan.confs))
    p.add_argument("--resize-to", nargs="+", type=int)
    p.add_argument("--max-keypoints", nargs="+", type=int)
    p.add_argument("--matcher", nargs="+", choices=["lightglue", "mnn"])
    p.add_argument("--orientation", choices=["upright", "mnn", "none"])
    p.add_argument("--rate-photos", type=int, default=8, help="photos the network-alone rate is timed on")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--no-sift", action="store_true", help="leave out the COLMAP SIFT peer")
    p.add_argument("--threads", type=int, help="torch threads (default torch's: one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    args.device = usable_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-extractors-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, device {args.device}; work {work}\n")  # fmt: skip
    for data_dir in args.data:
        run_data_set(data_dir, args, work / data_dir.name)


if __name__ == "__main__":
    main()
