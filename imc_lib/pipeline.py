"""Run the stages for every scene, in order, and write submission.csv: the only place that knows the order.

    WORK/<scene>/pairs-*.txt  orient-*.csv  feats-*.h5  *matches-*.h5  sfm_*/
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch

from . import data, features, matching, orientation, pairs, reconstruction, submission
from .utils import pick_device

logger = logging.getLogger(__name__)

confs = {
    "aliked": {"pairs": "dinov2", "orientation": "upright", "features": "aliked-n16", "matching": "lightglue",
               "reconstruction": "incremental"},
    "disk": {"pairs": "dinov2", "orientation": "upright", "features": "disk", "matching": "lightglue",
             "reconstruction": "incremental"},
}


# LightGlue on 2 CPU cores: ~7.5 s per pair at 4096 keypoints, ~0.9 s at 2048.
CPU_MAX_KEYPOINTS = 2048


def stage_confs(name: str = "aliked", max_keypoints: int | None = None, pairs_method: str | None = None,
                resize_to: int | None = None, orientation_method: str | None = None) -> dict:
    """The per-stage configs of a named pipeline config, with optional overrides (copied, not shared).

    `orientation_method`: "upright" or "none" (skip the stage: photos known to be upright).
    """
    if name not in confs:
        raise ValueError(f"unknown pipeline config {name!r}; known: {sorted(confs)}")
    names = dict(confs[name])
    if pairs_method:
        names["pairs"] = pairs_method
    if orientation_method:
        names["orientation"] = None if orientation_method == "none" else orientation_method
    out = {
        "pairs": dict(pairs.confs[names["pairs"]]),
        "orientation": dict(orientation.confs[names["orientation"]]) if names.get("orientation") else None,
        "features": {**features.confs[names["features"]], "model": dict(features.confs[names["features"]]["model"])},
        "matching": dict(matching.confs[names["matching"]]),
        "reconstruction": dict(reconstruction.confs[names["reconstruction"]]),
    }
    if max_keypoints:
        out["features"]["model"]["max_num_keypoints"] = max_keypoints
        out["features"]["output"] += f"-{max_keypoints}"
    if resize_to:
        out["features"]["resize_to"] = resize_to
        out["features"]["output"] += f"-r{resize_to}"
    if out["orientation"]:
        out["features"]["output"] += "-upright"
    return out


def scene_paths(work_dir: Path, scene: data.Scene, sconfs: dict) -> dict[str, Path]:
    """Where each stage of `sconfs` writes for `scene`; names carry the config so configs never collide."""
    root = Path(work_dir) / scene.key
    feats, match = sconfs["features"]["output"], sconfs["matching"]["output"]
    return {
        "pairs": root / f"{sconfs['pairs']['output']}.txt",
        "global": root / f"{sconfs['pairs']['output']}-global.h5",
        "orientation": root / f"{(sconfs['orientation'] or {}).get('output', 'none')}_{sconfs['pairs']['output']}.csv",
        "features": root / f"{feats}.h5",
        "matches": root / f"{feats}_{match}_{sconfs['pairs']['output']}.h5",
        "sfm": root / f"{sconfs['reconstruction']['output']}_{feats}_{match}_{sconfs['pairs']['output']}",
    }


class _Clock:
    """`with clock("stage"):` adds the block's wall time to `times["stage"]`."""

    def __init__(self, times: dict):
        self.times = times

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start


def run(data_dir: Path, out: Path, work_dir: Path, split: str = "train", scenes: list[str] | None = None,
        conf: str = "aliked", device=None, overwrite: bool = False, weights: str | Path | None = None,
        dinov2: str | Path | None = None, max_keypoints: int | None = None, pairs_method: str | None = None,
        resize_to: int | None = None, orientation_method: str | None = None) -> dict:
    """Reconstruct every scene of `data_dir`/`split` and write `out` (submission.csv).

    A scene that fails is logged and still gets its rows (no pose); the run goes on. Returns
    {"scenes": {key: {"registered", "images", "error", "times"}}, "times": {stage: seconds}, "submission": out}.
    """
    device = pick_device(device)
    if max_keypoints is None and device.type == "cpu":
        max_keypoints = CPU_MAX_KEYPOINTS
        logger.info("CPU: %d keypoints per image (LightGlue cost grows with their square); "
                    "--max-keypoints 4096 gives the GPU setting", max_keypoints)
    sconfs = stage_confs(conf, max_keypoints, pairs_method, resize_to, orientation_method)
    if dinov2 is not None:
        sconfs["pairs"]["model"] = str(dinov2)
    feature_name = features.matcher_name(sconfs["features"])
    scene_list = data.load_scenes(data_dir, split, scenes)
    logger.info("%d scene(s) from %s (%s), device %s", len(scene_list), data_dir, split, device)

    # Each network loads at most once, and only if some scene still needs it.
    extractor = functools.cache(lambda: features.load_model(sconfs["features"], weights, device))
    matcher = functools.cache(lambda: matching.load_model(feature_name, sconfs["matching"], weights, device))
    retrieval = functools.cache(lambda: pairs.load_model(sconfs["pairs"]))
    if sconfs["orientation"]:
        orient_extractor = functools.cache(lambda: features.load_model(sconfs["orientation"]["features"], weights, device))
        orient_matcher = functools.cache(
            lambda: matching.load_model("aliked", sconfs["orientation"]["matching"], weights, device))

    times: dict[str, float] = defaultdict(float)
    results, rows = {}, []
    for scene in scene_list:
        paths = scene_paths(work_dir, scene, sconfs)
        names = list(scene.image_names)
        logger.info("scene %s: %d images", scene.key, len(names))
        result = {"images": len(names), "registered": 0, "error": None, "times": {}}
        clock = _Clock(result["times"])
        model = None
        try:
            with clock("pairs"):
                pairs.main(sconfs["pairs"], scene.image_dir, names, paths["pairs"], paths["global"], device,
                           overwrite, model=retrieval)
            turns = None
            if sconfs["orientation"]:
                with clock("orientation"):
                    orientation.main(sconfs["orientation"], scene.image_dir, names, paths["pairs"],
                                     paths["orientation"], device, overwrite, extractor=orient_extractor,
                                     matcher=orient_matcher, weights=weights)
                    turns = orientation.read_orientations(paths["orientation"])
            with clock("features"):
                features.main(sconfs["features"], scene.image_dir, names, paths["features"], device, overwrite,
                              model=extractor, turns=turns)
            with clock("matching"):
                matching.main(sconfs["matching"], paths["pairs"], paths["features"], paths["matches"],
                              feature_name, device, overwrite, model=matcher)
            with clock("reconstruction"):
                model = reconstruction.main(sconfs["reconstruction"], scene.image_dir, names, paths["pairs"],
                                            paths["features"], paths["matches"], paths["sfm"], overwrite)
        except Exception as err:  # one bad scene must not cost the others their poses
            logger.exception("scene %s failed: %s; its %d images get rows without a pose", scene.key, err, len(names))
            result["error"] = f"{type(err).__name__}: {err}"
        for stage, seconds in result["times"].items():
            times[stage] += seconds
        found = reconstruction.poses(model)
        result["registered"] = sum(n in found for n in names)
        results[scene.key] = result
        for name, path in zip(names, scene.image_paths):
            R, tvec = found.get(name, (None, None))
            rows.append({"image_path": path, "dataset": scene.dataset, "scene": scene.scene, "R": R, "t": tvec})
        if device.type == "cuda":
            torch.cuda.empty_cache()

    with _Clock(times)("submission"):
        submission.write_submission(rows, out)
    failed = [k for k, r in results.items() if r["error"]]
    unregistered = sum(r["images"] - r["registered"] for r in results.values())
    if failed or unregistered:
        logger.warning("%d image(s) without a pose, %d scene(s) failed %s; their rows carry a placeholder pose",
                       unregistered, len(failed), failed)
    return {"scenes": results, "times": dict(times), "submission": Path(out)}
