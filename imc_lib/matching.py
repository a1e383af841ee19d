"""Match local features of image pairs with LightGlue, or mutual nearest neighbours, (kornia) -> `matches-*.h5`.

LightGlue is the accurate choice (~0.2-0.6 s per pair at 1024-2048 keypoints on 2 CPU cores);
`mnn` (mutual nearest neighbours passing a ratio test, kornia's `DescriptorMatcher("smnn")`) costs
milliseconds per pair and is the CPU speed setting: COLMAP's geometric verification drops its outliers.

HDF5 layout, one group per pair `name0/name1` (as in the pairs file):
    matches  (M, 2) int32, indices into name0's and name1's keypoints
    scores   (M,)   float32, match confidence (LightGlue's; 1 - distance ratio for mnn)
A pair with fewer than `min_matches` matches is kept as an empty group (so a rerun does not
match it again) and is never handed to reconstruction.

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import kornia
import numpy as np
import torch

from . import budget, models
from .pairs import read_pairs
from .progress import bar as progress_bar
from .utils import full_conf, pair_key, pending, pick_device, resolve_model, write_group

logger = logging.getLogger(__name__)

confs = {
    "lightglue": {
        "output": "matches-lightglue",
        "model": {"name": "lightglue", "filter_threshold": 0.1, "depth_confidence": 0.95, "width_confidence": 0.99},
        "min_matches": 15,
    },
    "mnn": {
        "output": "matches-mnn",
        # ratio: best / second-best descriptor distance must be below it (Lowe's test, mutual check)
        "model": {"name": "mnn", "ratio": 0.9},
        "min_matches": 15,
    },
}

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name or model name), else over lightglue.
DEFAULT_BY = ("output", "model.name")


def load_model(features: str, conf: dict, weights: str | Path | None = None, device=None) -> torch.nn.Module:
    """The matcher of `conf`: LightGlue trained for `features` ('aliked' or 'disk', mixed precision
    on CUDA), or a mutual-nearest-neighbour matcher (needs no weights)."""
    device = pick_device(device)
    mconf = dict(conf["model"])
    name = mconf.pop("name", "lightglue")
    if name == "mnn":
        return kornia.feature.DescriptorMatcher("smnn", th=mconf["ratio"]).to(device)
    if name != "lightglue":
        raise ValueError(f"unknown matcher {name!r}; known: lightglue, mnn")
    return models.load_lightglue(features, weights, mp=device.type == "cuda", **mconf).to(device)


def _to_lightglue(feats: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    # LightGlue rejects positions outside the image; a keypoint at the border of a small, upscaled
    # image maps back to just beyond it (e.g. x = -0.48 in a 16 px image).
    size = feats["image_size"].astype(np.float32)
    kpts = np.clip(feats["keypoints"], 0, np.maximum(size - 1, 0))
    return {
        "keypoints": torch.from_numpy(kpts).float()[None].to(device),
        "descriptors": torch.from_numpy(feats["descriptors"]).float()[None].to(device),
        "image_size": torch.from_numpy(feats["image_size"]).float()[None].to(device),
    }


@torch.inference_mode()
def match_pair(
    model: torch.nn.Module, feats0: dict, feats1: dict, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) index pairs and (M,) scores of the mutual matches `model` (LightGlue or a kornia
    `DescriptorMatcher`) finds between two images."""
    if len(feats0["keypoints"]) == 0 or len(feats1["keypoints"]) == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0,), np.float32)
    if isinstance(model, kornia.feature.DescriptorMatcher):
        ratios, matches = model(
            torch.from_numpy(feats0["descriptors"]).float().to(device),
            torch.from_numpy(feats1["descriptors"]).float().to(device),
        )
        return matches.cpu().numpy().astype(np.int32).reshape(-1, 2), 1 - ratios.float().cpu().numpy().reshape(-1)
    out = model({"image0": _to_lightglue(feats0, device), "image1": _to_lightglue(feats1, device)})
    return out["matches"][0].cpu().numpy().astype(np.int32), out["scores"][0].float().cpu().numpy()


class _FeatureCache:
    """Reads each image's features from HDF5 once per stage run, keeping only the last few."""

    def __init__(self, path: Path, size: int = 64):
        self.file = h5py.File(path, "r")
        self.size = size
        self.cache: dict[str, dict] = {}

    def __getitem__(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.cache:
            if name not in self.file:
                raise KeyError(f"{self.file.filename}: no features for {name!r}; run the features stage first")
            if len(self.cache) >= self.size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[name] = {k: self.file[name][k][()] for k in ("keypoints", "descriptors", "scores", "image_size")}
        return self.cache[name]

    def close(self):
        self.file.close()


def main(
    conf: dict,
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    features: str,
    device=None,
    overwrite: bool = False,
    model: torch.nn.Module | None = None,
    weights: str | Path | None = None,
    deadline: float | None = None,
    progress=None,
) -> Path:
    """Match every pair of `pairs_path` that `match_path` does not hold yet.

    `features` names the LightGlue weights ('aliked' or 'disk'); it must fit the features file.
    `model`: a loaded matcher or a zero-argument loader, called only if some pair needs matching.
    `deadline` (time.monotonic seconds): past it, budget.OutOfTime is raised before the next pair.
    `progress`: callback(done, total, desc) after each pair (default: a tqdm bar).
    """
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    device = pick_device(device)
    match_path = Path(match_path)
    pairs = read_pairs(pairs_path)
    keys = {pair_key(*p): p for p in pairs}
    # "scores" is written last: a pair without it was cut short.
    todo = [keys[k] for k in pending(match_path, list(keys), ("matches", "scores"), overwrite, "pairs")]
    if not todo:
        return match_path
    model = resolve_model(model, lambda: load_model(features, conf, weights, device))
    cache = _FeatureCache(feature_path)
    dropped = 0
    try:
        for name0, name1 in progress_bar(todo, desc=f"matching {conf['output']}", callback=progress, unit="pair"):
            budget.check(deadline, f"matching ({match_path})")
            logger.debug("%s: matching %s %s", match_path, name0, name1)  # the pairs before it are stored
            matches, scores = match_with_retry(model, cache[name0], cache[name1], device)
            if len(matches) < conf["min_matches"]:
                matches, scores = matches[:0], scores[:0]
                dropped += 1
            write_group(match_path, pair_key(name0, name1), {"matches": matches, "scores": scores})
    finally:
        cache.close()
    if dropped:
        logger.info(
            "%s: %d of %d pairs had fewer than %d matches and were dropped",
            match_path,
            dropped,
            len(todo),
            conf["min_matches"],
        )
    return match_path


def _strongest(feats: dict, keep: int) -> tuple[dict, np.ndarray]:
    index = np.sort(np.argsort(-feats["scores"], kind="stable")[:keep]) if "scores" in feats else np.arange(keep)
    return {**feats, "keypoints": feats["keypoints"][index], "descriptors": feats["descriptors"][index]}, index


def match_with_retry(
    model: torch.nn.Module, feats0: dict, feats1: dict, device: torch.device, attempts: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """`match_pair`, retried with the strongest half of the keypoints each time memory runs out."""
    device = pick_device(device)
    index0, index1 = np.arange(len(feats0["keypoints"])), np.arange(len(feats1["keypoints"]))
    for attempt in range(attempts):
        try:
            matches, scores = match_pair(model, feats0, feats1, device)
            return np.stack([index0[matches[:, 0]], index1[matches[:, 1]]], axis=1).astype(np.int32), scores
        except torch.OutOfMemoryError:
            if attempt == attempts - 1:
                raise
            keep = max(len(index0), len(index1)) // 2
            logger.warning(
                "out of memory matching %d x %d keypoints; retrying with the strongest %d",
                len(index0),
                len(index1),
                keep,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
            feats0, sub0 = _strongest(feats0, keep)
            feats1, sub1 = _strongest(feats1, keep)
            index0, index1 = index0[sub0], index1[sub1]


def read_matches(match_path: Path, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) indices and (M,) scores of a pair, in the order (name0, name1); empty if dropped."""
    match_path = Path(match_path)
    if not match_path.exists():
        raise FileNotFoundError(f"{match_path}: no matches file; run the matching stage first")
    with h5py.File(match_path, "r") as f:
        for a, b, flip in ((name0, name1, False), (name1, name0, True)):
            if pair_key(a, b) in f:
                group = f[pair_key(a, b)]
                matches, scores = group["matches"][()], group["scores"][()]
                return (matches[:, ::-1].copy() if flip else matches), scores
    raise KeyError(f"{match_path}: pair {name0} {name1} not matched; run the matching stage first")
