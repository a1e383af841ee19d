"""Speed benchmark: per stage, time per image / per pair and peak memory; the whole run against COLMAP
SIFT's wall time measured in the same process on the same photos; mAA per scene.

    python benchmarks/speed.py [--data DIR] [--configs default lightglue ...] [--device cpu|cuda] [--work DIR]

Each configuration runs from scratch in a fresh folder. Peak RSS is sampled every 20 ms; peak GPU
memory comes from torch.cuda.max_memory_allocated (reset per configuration).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import pycolmap
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, run_sift  # noqa: E402

from imc_lib import pipeline, plan, runner  # noqa: E402
from imc_lib.formats import data, metric  # noqa: E402
from imc_lib.stages import pairs  # noqa: E402

STAGES = runner.TIMES

# pipeline.run keyword arguments per named configuration ("default" is `imc-lib run`'s: on a CPU,
# plan.CPU_DEFAULTS). The others each change one lever of the CPU default, or restore an older one.
CONFIGS = {
    "default": {},
    "lightglue": {"matcher": "lightglue"},  # LightGlue instead of mutual nearest neighbours
    "upright-orientation": {"orientation": "upright"},  # separate 512 px LightGlue orientation pass
    "no-orientation": {"orientation": "none"},
    "1024px": {"resize_to": 1024},
    # The CPU default before the speed work: 1024 px, LightGlue, upright orientation.
    "lightglue-1024": {"resize_to": 1024, "matcher": "lightglue", "orientation": "upright"},
    # Its fastest variant then: 1024 keypoints at 768 px, pairs prefiltered by the orientation pass.
    "previous-fast": {"max_keypoints": 1024, "resize_to": 768, "prefilter": 40, "matcher": "lightglue"},
    "gpu": {"max_keypoints": 4096, "resize_to": 1024, "matcher": "lightglue", "orientation": "upright"},
}


class RssSampler(threading.Thread):
    """Samples this process's resident memory (MiB) with timestamps."""

    def __init__(self, every: float = 0.02):
        super().__init__(daemon=True)
        self.every, self.samples, self.running = every, [], True

    def run(self):
        while self.running:
            with open("/proc/self/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            self.samples.append((time.perf_counter(), rss / 1024))
            time.sleep(self.every)

    def peak(self, start: float, end: float) -> float:
        return max((m for t, m in self.samples if start <= t <= end), default=float("nan"))


def unit_counts(data_dir: Path, work: Path, scenes, sconfs) -> tuple[int, int]:
    """Images and matched pairs of a finished run (what per-image / per-pair times divide by)."""
    n_images = n_pairs = 0
    for scene in data.load_scenes(data_dir, "train", scenes):
        n_images += len(scene.image_names)
        n_pairs += len(pairs.read_pairs(plan.plan_scene(scene, sconfs, work).paths.match_pairs))
    return n_images, n_pairs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    p.add_argument("--configs", nargs="+", default=["default"], choices=sorted(CONFIGS))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-sift", action="store_true", help="leave out the COLMAP SIFT peer")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pycolmap.logging.minloglevel = 2
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-speed-"))
    sampler = RssSampler()
    sampler.start()
    labels = args.data / "train" / "train_labels.csv"

    start = time.perf_counter()
    sift = {"scenes": {}} if args.no_sift else run_sift(args.data, work / "sift", args.scenes)
    sift_wall = time.perf_counter() - start
    sift_scores = metric.score(labels, sift["submission"]).set_index("scene")["mAA"] if sift["scenes"] else {}
    sift_scores = {k: v for k, v in dict(sift_scores).items() if k in sift["scenes"]}

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
    )
    print(f"data: {args.data} ({len(data.load_scenes(args.data, 'train', args.scenes))} scenes)\n")
    print(
        f"COLMAP SIFT: {sift_wall:.1f} s wall; mAA "
        + ", ".join(f"{k} {v:.3f}" for k, v in sift_scores.items())
        + (f"; mean {sum(sift_scores.values()) / len(sift_scores):.3f}\n" if sift_scores else "not run\n")
    )

    for name in args.configs:
        kwargs = {"features": "aliked", **CONFIGS[name]}
        out = work / name
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = pipeline.run(
            args.data, out / "submission.csv", out, "train", args.scenes, device=device, weights=args.weights, **kwargs
        )
        wall = time.perf_counter() - start
        n_images, n_pairs = unit_counts(args.data, out, args.scenes, result["confs"])
        scores = metric.score(labels, out / "submission.csv").set_index("scene")["mAA"]
        spans = [s for r in result["scenes"].values() for s in r.spans]

        used = result["confs"]
        print(f"### {name}: {kwargs}")
        print(
            f"features {used['features']['output']} at {used['features']['resize_to']} px, matcher "
            f"{used['matching']['output']}, orientation {(used['orientation'] or {}).get('output', 'none')}"
        )
        print(
            f"{n_images} images, {n_pairs} matched pairs; wall {wall:.1f} s"
            + (f" = {wall / sift_wall:.2f} x SIFT; " if sift_scores else "; ")
            + (
                f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB; "
                if device.startswith("cuda")
                else ""
            )
            + f"peak RSS {sampler.peak(start, time.perf_counter()):.0f} MiB\n"
        )
        print("| stage | total s | per image s | per pair s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for stage in STAGES:
            total = result["times"].get(stage)
            if total is None:
                continue
            peak = max(sampler.peak(s, e) for st, s, e in spans if st == stage)
            print(f"| {stage} | {total:.1f} | {total / n_images:.2f} | {total / max(n_pairs, 1):.3f} | {peak:.0f} |")
        print(f"| **total** | **{wall:.1f}** | {wall / n_images:.2f} | {wall / max(n_pairs, 1):.3f} | |\n")
        print("| scene | photos | registered | mAA | s | SIFT mAA |")
        print("|---|---|---|---|---|---|")
        for scene, value in scores.items():
            if scene in result["scenes"]:
                r = result["scenes"][scene]
                sift_cell = f"{sift_scores[scene]:.3f}" if scene in sift_scores else "not run"
                print(f"| {scene} | {r.images} | {r.registered} | {value:.3f} | {sum(r.times.values()):.0f} "
                      f"| {sift_cell} |")  # fmt: skip
        print()
    sampler.running = False


if __name__ == "__main__":
    main()
