"""ALIKED on a CPU: kornia's forward against imc_lib.aliked's (the one the features stage runs on a
CPU), on the same decoded photos in one process, alternating per photo so machine drift hits both.

    python benchmarks/aliked_cpu.py [--data imc-mini ...] [--scenes S ...] [--models aliked-n16 aliked-t16]
        [--resize-to 640] [--max-keypoints 2048] [--threads N]

Prints per model: seconds per photo of each forward, the ratio, and how far the outputs agree
(keypoints within 1e-3 px of kornia's, largest descriptor difference on those).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_arguments, markdown  # noqa: E402

from imc_lib.formats import data
from imc_lib.networks import aliked, aliked_cpu  # noqa: E402
from imc_lib.stages import features  # noqa: E402
from imc_lib.utils import read_image  # noqa: E402


def photos(data_dirs: list[Path], scenes: list[str] | None, resize_to: int) -> list[torch.Tensor]:
    """Every photo of the data sets, decoded and resized as the features stage does."""
    out = []
    for data_dir in data_dirs:
        for scene in data.load_scenes(data_dir, "train", scenes):
            for name in scene.image_names:
                image = read_image(scene.image_dir / name, max_side=resize_to)
                out.append(features.prepare(image, resize_to, torch.device("cpu")))
    return out


def compare(model, images: list[torch.Tensor]) -> dict:
    """Seconds per photo of both forwards (after one warm-up each) and their agreement."""
    with torch.inference_mode():
        model(images[0]), aliked_cpu.detect(model, images[0])
        seconds, same, desc = [0.0, 0.0], [], 0.0
        for image in images:
            start = time.perf_counter()
            ref = model(image)[0]
            middle = time.perf_counter()
            keypoints, descriptors, _ = aliked_cpu.detect(model, image)
            seconds[0] += middle - start
            seconds[1] += time.perf_counter() - middle
            mode = "donot_use_mm_for_euclid_dist"
            distance, nearest = torch.cdist(keypoints, ref.keypoints, compute_mode=mode).min(1)
            close = distance < 1e-3
            same.append(close.float().mean().item())
            desc = max(desc, (descriptors[close] - ref.descriptors[nearest[close]]).abs().max().item())
    n = len(images)
    return {
        "kornia s/photo": f"{seconds[0] / n:.3f}",
        "imc_lib s/photo": f"{seconds[1] / n:.3f}",
        "ratio": f"{seconds[1] / seconds[0]:.2f}",
        "keypoints at kornia's (min)": f"{min(same):.1%}",
        "max descriptor diff": f"{desc:.1e}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, several=True)
    parser.add_argument("--models", nargs="+", default=["aliked-n16", "aliked-t16"])
    parser.add_argument("--resize-to", type=int, default=640)
    parser.add_argument("--max-keypoints", type=int, default=2048)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = photos(args.data, args.scenes, args.resize_to)
    threads = torch.get_num_threads()
    print(f"{len(images)} photos at {args.resize_to} px, {args.max_keypoints} keypoints, {threads} torch threads")
    rows = []
    for name in args.models:
        model = aliked.load(
            {"model_name": name, "max_num_keypoints": args.max_keypoints, "detection_threshold": 0.01}, args.weights
        ).eval()
        rows.append({"model": name, **compare(model, images)})
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
