"""ALIKED (kornia), official weights; matched by LightGlue's ALIKED weights, except ALIKED-t16 (mnn only).

On a CPU its forward runs laid out channels-last (`aliked_cpu`: the same keypoints, half the time).
"""

from __future__ import annotations

from pathlib import Path

import kornia.feature as KF
import torch

from . import aliked_cpu
from .weights import load_checked, local_file, official, torch_load, weights_dir

WEIGHTS = {
    "aliked-n16": "aliked-n16.pth",
    "aliked-n16rot": "aliked-n16rot.pth",
    "aliked-t16": "aliked-t16.pth",
    "aliked-n32": "aliked-n32.pth",
}
LIGHTGLUE = "aliked"  # the LightGlue trained for its 128-d descriptors
# Variants no LightGlue fits, and why: they pair with mutual nearest neighbours.
NO_LIGHTGLUE = {"aliked-t16": "its 64-d descriptors fit no released LightGlue (ALIKED's takes 128-d)"}
SIDE_MULTIPLE = 1
HALF = True  # mixed precision on CUDA

confs = {
    "aliked-n16": {
        "output": "feats-aliked-n16",
        "model": {"name": "aliked", "model_name": "aliked-n16", "max_num_keypoints": 4096, "detection_threshold": 0.01},
        "resize_to": 1024,
    },
    "aliked-n16rot": {
        "output": "feats-aliked-n16rot",
        "model": {
            "name": "aliked",
            "model_name": "aliked-n16rot",
            "max_num_keypoints": 4096,
            "detection_threshold": 0.01,
        },
        "resize_to": 1024,
    },
    # The smallest ALIKED: 64-d descriptors, no LightGlue (mutual nearest neighbours only).
    "aliked-t16": {
        "output": "feats-aliked-t16",
        "model": {"name": "aliked", "model_name": "aliked-t16", "max_num_keypoints": 4096, "detection_threshold": 0.01},
        "resize_to": 1024,
    },
}
# Named pipeline configs (plan.confs): the extractor and its matcher pairing.
PIPELINES = {
    "aliked": {"features": "aliked-n16", "matching": "lightglue"},
    # No LightGlue exists for its 64-d descriptors: mutual nearest neighbours on every device.
    "aliked-t16": {"features": "aliked-t16", "matching": "mnn"},
}


def lightglue(mconf: dict) -> str:
    """The LightGlue weights key of these features, or the variant's name where none fits (NO_LIGHTGLUE)."""
    return mconf["model_name"] if mconf.get("model_name") in NO_LIGHTGLUE else LIGHTGLUE


def load(mconf: dict, directory: str | Path | None = None) -> KF.ALIKED:
    """kornia ALIKED with official weights, in eval mode."""
    name = mconf["model_name"]
    kwargs = dict(max_num_keypoints=mconf["max_num_keypoints"], detection_threshold=mconf["detection_threshold"],
                  nms_radius=mconf.get("nms_radius", 2))  # fmt: skip
    local = weights_dir(directory)
    if local is None:
        return official(lambda: KF.ALIKED.from_pretrained(name, **kwargs), name, WEIGHTS[name])
    model = KF.ALIKED(model_name=name, **kwargs)
    path = local_file(local, WEIGHTS[name])
    # The checkpoints lack only the derived buffer dkd.hw_grid.
    load_checked(model, torch_load(path), path, name, derived=lambda k: k.endswith("hw_grid"))
    return model.eval()


def detect(model: KF.ALIKED, mconf: dict, tensor: torch.Tensor) -> tuple:
    """(keypoints in `tensor`'s pixels, descriptors, scores) of one (1, 3, H, W) image."""
    if tensor.device.type == "cpu":
        return aliked_cpu.detect(model, tensor)
    out = model(tensor)[0]
    return out.keypoints, out.descriptors, out.keypoint_scores
