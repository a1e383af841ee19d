"""Local features (ALIKED or DISK, via kornia) for every image of a scene -> `feats-*.h5`.

HDF5 layout, one group per image name:
    keypoints    (N, 2) float32, pixel coordinates in the original image (pixel centres at integers)
    descriptors  (N, D) float32
    scores       (N,)   float32
    image_size   (2,)   int, original (width, height)
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import kornia
import numpy as np
import torch
from tqdm import tqdm

from . import models
from .utils import autocast_dtype, pick_device, read_image, resolve_model

logger = logging.getLogger(__name__)

confs = {
    "aliked-n16": {
        "output": "feats-aliked-n16",
        "model": {"name": "aliked", "model_name": "aliked-n16", "max_num_keypoints": 4096, "detection_threshold": 0.01},
        "resize_to": 1024,
    },
    "aliked-n16rot": {
        "output": "feats-aliked-n16rot",
        "model": {"name": "aliked", "model_name": "aliked-n16rot", "max_num_keypoints": 4096, "detection_threshold": 0.01},
        "resize_to": 1024,
    },
    "disk": {
        "output": "feats-disk",
        "model": {"name": "disk", "max_num_keypoints": 4096},
        "resize_to": 1024,
    },
}


def load_model(conf: dict, weights: str | Path | None = None, device=None) -> torch.nn.Module:
    """The extractor named in `conf['model']`, on `device`."""
    mconf = conf["model"]
    if mconf["name"] == "aliked":
        model = models.load_aliked(mconf["model_name"], mconf["max_num_keypoints"], mconf["detection_threshold"],
                                   directory=weights)
    elif mconf["name"] == "disk":
        model = models.load_disk(directory=weights)
    else:
        raise ValueError(f"unknown feature model {mconf['name']!r}; known: aliked, disk")
    return model.to(pick_device(device))


def matcher_name(conf: dict) -> str:
    """Which LightGlue weights fit these features."""
    return conf["model"]["name"]


def prepare(image: np.ndarray, resize_to: int | None, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """RGB uint8 (H, W, 3) -> (1, 3, h, w) float tensor with longest side `resize_to`, and the (sx, sy)
    factors that take resized pixel coordinates back to the original grid."""
    tensor = kornia.image.image_to_tensor(image, keepdim=False).float().div(255).to(device)
    h, w = image.shape[:2]
    if resize_to and max(h, w) != resize_to:
        scale = resize_to / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        tensor = kornia.geometry.resize(tensor, size, interpolation="area" if scale < 1 else "bilinear",
                                        antialias=scale < 1)
    scales = np.array([w / tensor.shape[-1], h / tensor.shape[-2]], dtype=np.float32)
    return tensor, scales


@torch.inference_mode()
def extract(model: torch.nn.Module, conf: dict, image: np.ndarray, device: torch.device,
            turns: int = 0) -> dict[str, np.ndarray]:
    """Keypoints, descriptors and scores of one RGB image, keypoints on its original pixel grid.

    `turns`: extract on the image turned by that many quarter turns counter-clockwise (see the
    orientation stage); keypoints still come back on the stored grid.
    """
    stored_size = np.array([image.shape[1], image.shape[0]], dtype=np.int64)
    if turns % 4:
        image = np.ascontiguousarray(np.rot90(image, turns))
    tensor, scales = prepare(image, conf.get("resize_to"), device)
    mconf = conf["model"]
    with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
        if mconf["name"] == "disk":
            out = model(tensor, n=mconf["max_num_keypoints"], pad_if_not_divisible=True)[0]
            kpts, desc, scores = out.keypoints, out.descriptors, out.detection_scores
        else:
            out = model(tensor)[0]
            kpts, desc, scores = out.keypoints, out.descriptors, out.keypoint_scores
    kpts = kpts.float().cpu().numpy()
    kpts = (kpts + 0.5) * scales[None] - 0.5
    if turns % 4:
        kpts = rotate_keypoints_back(kpts, turns, tuple(stored_size))
    return {
        "keypoints": kpts.astype(np.float32),
        "descriptors": desc.float().cpu().numpy().astype(np.float32),
        "scores": scores.float().cpu().numpy().astype(np.float32),
        "image_size": stored_size,
    }


def rotate_keypoints_back(kpts: np.ndarray, turns: int, size: tuple[int, int]) -> np.ndarray:
    """Keypoints of `np.rot90(image, turns)` -> the stored image's pixel grid; `size` = stored (w, h)."""
    kpts = np.asarray(kpts, dtype=np.float32).copy()
    w, h = size
    for level in range(turns % 4, 0, -1):
        # np.rot90 once sends stored (x, y) to (y, W - 1 - x); undo one turn at a time.
        height = w if level % 2 else h  # height of np.rot90(image, level)
        kpts = np.stack([height - 1 - kpts[:, 1], kpts[:, 0]], axis=1)
    return kpts


def _complete(group: h5py.Group) -> bool:
    return all(k in group for k in ("keypoints", "descriptors", "scores", "image_size"))


def main(conf: dict, image_dir: Path, image_names: list[str], feature_path: Path, device=None,
         overwrite: bool = False, model: torch.nn.Module | None = None, weights: str | Path | None = None,
         turns: dict[str, int] | None = None) -> Path:
    """Extract features for `image_names` into `feature_path`, skipping images already there.

    `turns`: quarter turns per image from the orientation stage (default none).
    `model`: a loaded extractor or a zero-argument loader, called only if some image still needs
    extracting; by default the network of `conf` is loaded.
    """
    device = pick_device(device)
    feature_path = Path(feature_path)
    feature_path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and feature_path.exists():
        feature_path.unlink()
    done = set()
    if feature_path.exists():
        with h5py.File(feature_path, "r") as f:
            done = {n for n in image_names if n in f and _complete(f[n])}
    todo = [n for n in image_names if n not in done]
    if not todo:
        logger.info("%s: all %d images already extracted, reusing", feature_path, len(image_names))
        return feature_path
    if done:
        logger.info("%s: %d images already extracted, extracting %d", feature_path, len(done), len(todo))
    model = resolve_model(model, lambda: load_model(conf, weights, device))
    for name in tqdm(todo, desc=f"features {conf['output']}", unit="img"):
        feats = extract(model, conf, read_image(Path(image_dir) / name), device, (turns or {}).get(name, 0))
        with h5py.File(feature_path, "a") as f:
            if name in f:
                del f[name]
            group = f.create_group(name)
            for key, value in feats.items():
                group.create_dataset(key, data=value)
    return feature_path


def read_features(feature_path: Path, name: str) -> dict[str, np.ndarray]:
    """All arrays stored for one image."""
    feature_path = Path(feature_path)
    if not feature_path.exists():
        raise FileNotFoundError(f"{feature_path}: no features file; run the features stage first")
    with h5py.File(feature_path, "r") as f:
        if name not in f:
            raise KeyError(f"{feature_path}: no features for image {name!r}; run the features stage first")
        return {k: v[()] for k, v in f[name].items()}
