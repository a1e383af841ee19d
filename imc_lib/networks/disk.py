"""DISK (kornia, depth-trained), official weights; matched by LightGlue's DISK weights."""

from __future__ import annotations

from pathlib import Path

import kornia.feature as KF
import torch

from .weights import load_checked, local_file, official, torch_load, weights_dir

WEIGHTS = {"disk": "disk-depth-save.pth"}
LIGHTGLUE = "disk"
NO_LIGHTGLUE: dict[str, str] = {}
SIDE_MULTIPLE = 1
HALF = True

confs = {
    "disk": {
        "output": "feats-disk",
        "model": {"name": "disk", "max_num_keypoints": 4096},
        "resize_to": 1024,
    },
}
PIPELINES = {"disk": {"features": "disk", "matching": "lightglue"}}


def lightglue(mconf: dict) -> str:
    return LIGHTGLUE


def load(mconf: dict, directory: str | Path | None = None) -> KF.DISK:
    """kornia DISK (depth-trained) with official weights, in eval mode."""
    local = weights_dir(directory)
    if local is None:
        return official(lambda: KF.DISK.from_pretrained("depth"), "DISK", WEIGHTS["disk"])
    model = KF.DISK()
    path = local_file(local, WEIGHTS["disk"])
    state = torch_load(path)
    load_checked(model, state.get("extractor", {}) if isinstance(state, dict) else {}, path, "DISK")
    return model.eval()


def detect(model: KF.DISK, mconf: dict, tensor: torch.Tensor) -> tuple:
    out = model(tensor, n=mconf["max_num_keypoints"], pad_if_not_divisible=True)[0]
    return out.keypoints, out.descriptors, out.detection_scores
