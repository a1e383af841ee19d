"""Run the stages for every scene, in order, and write submission.csv: the only place that knows the order.

    WORK/<scene>/pairs-*.txt  orient-*.csv  feats-*.h5  *matches-*.h5  sfm_*/
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch

from . import data, ensemble, features, matching, models, orientation, pairs, reconstruction, submission
from .utils import pick_device

logger = logging.getLogger(__name__)

confs = {
    "aliked": {"pairs": "dinov2", "orientation": "upright", "features": "aliked-n16", "matching": "lightglue",
               "reconstruction": "incremental"},
    "disk": {"pairs": "dinov2", "orientation": "upright", "features": "disk", "matching": "lightglue",
             "reconstruction": "incremental"},
    # Both extractors, each with its LightGlue, keypoints and matches merged (imc_lib/ensemble.py).
    "aliked+disk": {"pairs": "dinov2", "orientation": "upright", "features": "aliked-n16", "also": ["disk"],
                    "matching": "lightglue", "reconstruction": "incremental"},
}


# LightGlue on 2 CPU cores: ~7.5 s per pair at 4096 keypoints, ~0.9 s at 2048.
CPU_MAX_KEYPOINTS = 2048
# What `run` uses on a CPU for every override left at None: imc-mini in about SIFT's wall time at a
# higher mAA on every scene (benchmarks/speed.py; README). ALIKED at 640 px costs 0.5 s per photo,
# mutual-nearest-neighbour matching milliseconds per pair (LightGlue: 0.2-0.6 s), and the `mnn`
# orientation reuses the main features instead of extracting its own.
CPU_DEFAULTS = {"max_keypoints": CPU_MAX_KEYPOINTS, "resize_to": 640, "matcher": "mnn", "orientation_method": "mnn"}


def stage_confs(name: str = "aliked", max_keypoints: int | None = None, pairs_method: str | None = None,
                resize_to: int | None = None, orientation_method: str | None = None,
                prefilter: int | None = None, matcher: str | None = None) -> dict:
    """The per-stage configs of a named pipeline config, with optional overrides (copied, not shared).

    `matcher`: a `matching.confs` name ("lightglue", or "mnn": mutual nearest neighbours, the CPU
    speed setting).
    `orientation_method`: an `orientation.confs` name ("upright": its own low-resolution LightGlue
    pass; "mnn": from the main features) or "none" (skip the stage: photos known to be upright).
    `prefilter`: drop pairs with fewer low-resolution matches (from the orientation stage) before
    full matching.
    """
    if name not in confs:
        raise ValueError(f"unknown pipeline config {name!r}; known: {sorted(confs)}")
    names = dict(confs[name])
    if pairs_method:
        names["pairs"] = pairs_method
    if matcher:
        names["matching"] = matcher
    if orientation_method:
        names["orientation"] = None if orientation_method == "none" else orientation_method
    def features_conf(fname: str) -> dict:
        fconf = {**features.confs[fname], "model": dict(features.confs[fname]["model"])}
        if max_keypoints:
            fconf["model"]["max_num_keypoints"] = max_keypoints
            fconf["output"] += f"-{max_keypoints}"
        if resize_to:
            fconf["resize_to"] = resize_to
            fconf["output"] += f"-r{resize_to}"
        if names.get("orientation"):
            fconf["output"] += "-upright"
        return fconf

    oconf = dict(orientation.confs[names["orientation"]]) if names.get("orientation") else None
    if prefilter is not None:
        if oconf is None:
            raise ValueError("the pair prefilter needs the orientation stage's matches; drop --orientation none")
        oconf["prefilter_min_matches"] = prefilter
    return {
        "pairs": dict(pairs.confs[names["pairs"]]),
        "orientation": oconf,
        "features": features_conf(names["features"]),
        # further extractors whose keypoints and matches are merged with the first's (ensemble)
        "also": [features_conf(n) for n in names.get("also", [])],
        "matching": dict(matching.confs[names["matching"]]),
        "reconstruction": dict(reconstruction.confs[names["reconstruction"]]),
    }


def scene_paths(work_dir: Path, scene: data.Scene, sconfs: dict) -> dict[str, Path]:
    """Where each stage of `sconfs` writes for `scene`; names carry the config so configs never collide.

    With an ensemble, "features" / "matches" are the merged files and "sources" lists each
    extractor's own (features, matches) files.
    """
    root = Path(work_dir) / scene.key
    pairs_name, match = sconfs["pairs"]["output"], sconfs["matching"]["output"]
    orientation_file = root / f"{(sconfs['orientation'] or {}).get('output', 'none')}_{pairs_name}.csv"
    prefilter = (sconfs["orientation"] or {}).get("prefilter_min_matches")
    all_pairs = root / f"{pairs_name}.txt"
    if prefilter is not None:
        pairs_name += f"-overlap{prefilter}"
    sources = [(root / f"{f['output']}.h5", root / f"{f['output']}_{match}_{pairs_name}.h5")
               for f in [sconfs["features"], *sconfs.get("also", [])]]
    feats = "+".join(f["output"] for f in [sconfs["features"], *sconfs.get("also", [])])
    if len(sources) > 1:
        merged = (root / f"{feats}.h5", root / f"{feats}_{match}_{pairs_name}.h5")
    else:
        merged = sources[0]
    return {
        "pairs": all_pairs,
        "global": root / f"{sconfs['pairs']['output']}-global.h5",
        "orientation": orientation_file,
        "match_pairs": root / f"{pairs_name}.txt",  # the pairs to match: all, or those that overlap
        "sources": sources,
        "features": merged[0],
        "matches": merged[1],
        "sfm": root / f"{sconfs['reconstruction']['output']}_{feats}_{match}_{pairs_name}",
    }


class _Clock:
    """`with clock("stage"):` adds the block's wall time to `times["stage"]` and, when given a
    `spans` list, appends (stage, start, end) in `time.perf_counter` seconds (for profilers)."""

    def __init__(self, times: dict, spans: list | None = None):
        self.times, self.spans = times, spans

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            self.times[stage] = self.times.get(stage, 0.0) + end - start
            if self.spans is not None:
                self.spans.append((stage, start, end))


def run(data_dir: Path, out: Path, work_dir: Path, split: str = "train", scenes: list[str] | None = None,
        conf: str = "aliked", device=None, overwrite: bool = False, weights: str | Path | None = None,
        dinov2: str | Path | None = None, max_keypoints: int | None = None, pairs_method: str | None = None,
        resize_to: int | None = None, orientation_method: str | None = None, prefilter: int | None = None,
        matcher: str | None = None, networks: dict | None = None) -> dict:
    """Reconstruct every scene of `data_dir`/`split` and write `out` (submission.csv).

    `networks`: a dict the caller keeps between runs (e.g. a loop over scenes): networks loaded by
    one run are stored in it and reused by the next instead of loading again.

    A scene that fails is logged and still gets its rows (no pose); the run goes on. Returns
    {"scenes": {key: {"registered", "images", "error", "times", "spans"}}, "times": {stage: seconds},
    "submission": out, "confs": the stage configs used}; "spans" are (stage, start, end) in
    `time.perf_counter` seconds.
    """
    device = pick_device(device)
    overrides = {"max_keypoints": max_keypoints, "resize_to": resize_to, "matcher": matcher,
                 "orientation_method": orientation_method}
    if device.type == "cpu":
        defaults = {k: v for k, v in CPU_DEFAULTS.items() if overrides[k] is None}
        if prefilter is not None and defaults.get("orientation_method") == "mnn":
            defaults["orientation_method"] = "upright"  # the prefilter counts low-resolution LightGlue matches
        overrides.update(defaults)
        if defaults:
            logger.info("CPU speed settings %s (each can be overridden; --max-keypoints 4096 --resize-to 1024 "
                        "--matcher lightglue --orientation upright are the GPU's)", defaults)
    sconfs = stage_confs(conf, overrides["max_keypoints"], pairs_method, overrides["resize_to"],
                         overrides["orientation_method"], prefilter, overrides["matcher"])
    if dinov2 is not None:
        sconfs["pairs"]["model"] = str(dinov2)
    fconfs = [sconfs["features"], *sconfs["also"]]
    scene_list = data.load_scenes(data_dir, split, scenes)
    logger.info("%d scene(s) from %s (%s), device %s", len(scene_list), data_dir, split, device)

    # Each network loads at most once, only if some scene still needs it, and stays in `networks`
    # for the caller's next run.
    networks = {} if networks is None else networks

    def once(*key, load):
        key = (*key, str(weights), str(device))
        return lambda: networks[key] if key in networks else networks.setdefault(key, load())

    extractors = [once("features", repr(c["model"]), load=lambda c=c: features.load_model(c, weights, device))
                  for c in fconfs]
    matchers = [once("matching", features.matcher_name(c), repr(sconfs["matching"]["model"]),
                     load=lambda c=c: matching.load_model(features.matcher_name(c), sconfs["matching"], weights, device))
                for c in fconfs]
    retrieval = once("pairs", str(sconfs["pairs"].get("model")), load=lambda: pairs.load_model(sconfs["pairs"]))
    orient_extractor = orient_matcher = None
    if sconfs["orientation"]:
        # The `upright` config has its own ALIKED + LightGlue; `mnn` uses the main extractor.
        oconf = sconfs["orientation"]
        ofeatures = oconf["features"] or fconfs[0]
        orient_extractor = once("features", repr(ofeatures["model"]),
                                load=lambda: features.load_model(ofeatures, weights, device))
        orient_matcher = once("matching", features.matcher_name(ofeatures), repr(oconf["matching"]["model"]),
                              load=lambda: matching.load_model(features.matcher_name(ofeatures), oconf["matching"],
                                                               weights, device))

    times: dict[str, float] = defaultdict(float)
    results, rows = {}, []
    for scene in scene_list:
        paths = scene_paths(work_dir, scene, sconfs)
        names = list(scene.image_names)
        logger.info("scene %s: %d images", scene.key, len(names))
        result = {"images": len(names), "registered": 0, "error": None, "times": {}, "spans": []}
        clock = _Clock(result["times"], result["spans"])
        model = None
        try:
            with clock("pairs"):
                pairs.main(sconfs["pairs"], scene.image_dir, names, paths["pairs"], paths["global"], device,
                           overwrite, model=retrieval)
            turns = None
            first_overwrite = overwrite
            if (sconfs["orientation"] and sconfs["orientation"]["features"] is None
                    and (overwrite or not paths["orientation"].exists())):
                # The orientation reads as-stored features from the main features file: extract
                # them first; the features stage below finds the turned ones saved by the orientation.
                with clock("features"):
                    features.main(fconfs[0], scene.image_dir, names, paths["sources"][0][0], device, overwrite,
                                  model=extractors[0])
                first_overwrite = False
            if sconfs["orientation"]:
                with clock("orientation"):
                    orientation.main(sconfs["orientation"], scene.image_dir, names, paths["pairs"],
                                     paths["orientation"], device, overwrite,
                                     extractor=orient_extractor, matcher=orient_matcher, weights=weights,
                                     feature_path=paths["sources"][0][0], features_conf=fconfs[0])
                    turns = orientation.read_orientations(paths["orientation"])
                    if sconfs["orientation"].get("prefilter_min_matches") is not None:
                        kept = orientation.overlapping_pairs(paths["orientation"],
                                                             sconfs["orientation"]["prefilter_min_matches"])
                        pairs.write_pairs(kept, paths["match_pairs"])
                        logger.info("scene %s: %d of %d pairs overlap at low resolution", scene.key, len(kept),
                                    len(pairs.read_pairs(paths["pairs"])))
            for i, (fconf, (feature_path, match_path), extractor, matcher_model) in enumerate(zip(
                    fconfs, paths["sources"], extractors, matchers)):
                with clock("features"):
                    features.main(fconf, scene.image_dir, names, feature_path, device,
                                  first_overwrite if i == 0 else overwrite, model=extractor, turns=turns)
                with clock("matching"):
                    matching.main(sconfs["matching"], paths["match_pairs"], feature_path, match_path,
                                  features.matcher_name(fconf), device, overwrite, model=matcher_model)
            if len(fconfs) > 1:
                with clock("merge"):
                    ensemble.main(ensemble.confs["merge"], names, paths["match_pairs"], paths["sources"],
                                  paths["features"], paths["matches"], overwrite)
            with clock("reconstruction"):
                model = reconstruction.main(sconfs["reconstruction"], scene.image_dir, names, paths["match_pairs"],
                                            paths["features"], paths["matches"], paths["sfm"], overwrite)
        except models.WeightsError:
            raise  # a set-up problem, not the scene's: every scene would fail the same way
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
    return {"scenes": results, "times": dict(times), "submission": Path(out), "confs": sconfs}
