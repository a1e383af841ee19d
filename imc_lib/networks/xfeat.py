"""XFeat (kornia; CVPR 2024): 64-d descriptors, a CPU-fast net; matched by LighterGlue (the small
LightGlue its authors trained) or mutual nearest neighbours."""

from __future__ import annotations

from pathlib import Path

import kornia.feature as KF
import torch

from .weights import load_checked, local_file, official, torch_load, weights_dir

WEIGHTS = {"xfeat": "xfeat.pt"}
LIGHTGLUE = "xfeat"
NO_LIGHTGLUE: dict[str, str] = {}
# XFeat reads images whose sides are multiples of 32 (it would resize them itself, unevenly).
SIDE_MULTIPLE = 32
# kornia documents XFeat's half-precision defects (kornia#5810, #5957); in fp32 it is cheap anyway.
HALF = False

confs = {
    "xfeat": {
        "output": "feats-xfeat",
        "model": {"name": "xfeat", "max_num_keypoints": 4096, "detection_threshold": 0.05},
        "resize_to": 1024,
    },
}
# With LighterGlue, or (--matcher mnn) nearest neighbours.
PIPELINES = {"xfeat": {"features": "xfeat", "matching": "lightglue"}}


def lightglue(mconf: dict) -> str:
    return LIGHTGLUE


def load(mconf: dict, directory: str | Path | None = None) -> KF.XFeat:
    """kornia XFeat with official weights, in eval mode (loaded strictly: the file is the whole net)."""
    top_k, threshold = mconf["max_num_keypoints"], mconf["detection_threshold"]
    local = weights_dir(directory)
    if local is None:
        return official(lambda: KF.XFeat.from_pretrained(top_k, threshold), "XFeat", WEIGHTS["xfeat"])
    model = KF.XFeat(top_k=top_k, detection_threshold=threshold)
    path = local_file(local, WEIGHTS["xfeat"])
    load_checked(model.net, torch_load(path), path, "XFeat")
    return model.eval()


def detect(model: KF.XFeat, mconf: dict, tensor: torch.Tensor) -> tuple:
    # Sides are multiples of 32 (SIDE_MULTIPLE), so keypoints are pixel centres of `tensor`.
    out = model.detectAndCompute(tensor, mconf["max_num_keypoints"], mconf["detection_threshold"])[0]
    return out["keypoints"], out["descriptors"], out["scores"]
