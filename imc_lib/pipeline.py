"""Run the stages for every scene, in order, and write submission.csv: the only place that knows the order.

WORK/<scene>/pairs-*.txt  orient-*.csv  feats-*.h5  *matches-*.h5  sfm_*/
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch

from . import (
    budget,
    data,
    ensemble,
    features,
    io,
    lock,
    matching,
    orientation,
    pairs,
    reconstruction,
    report,
    shards,
    submission,
)
from . import export as export_mod
from .executor import LocalExecutor
from .io import read_pairs, stamp_path, write_pairs
from .networks import (
    DINOV2_HUB_ID,
    DINOV2_KAGGLE_DIR,
    EXTRACTORS,
    NO_LIGHTGLUE,
    Networks,
    Registered,
    WeightsError,
    lightglue_key,
    load_dinov2,
    local_dinov2,
)
from .utils import ImageError, merge_conf, pick_device, read_image, usable_device

logger = logging.getLogger(__name__)

# Named pipeline configs (--features): each registered extractor's (imc_lib/networks: its features conf
# and its matcher pairing, e.g. aliked, aliked-t16, disk, xfeat), then the ensembles, whose extractors'
# keypoints and matches are merged (imc_lib/ensemble.py); every entry over NAMED_DEFAULTS. "pairs":
# "auto" is DINOv2 where a model loads (a local folder: --dinov2, $IMC_DINOV2, the Kaggle input), else
# VLAD over the scene's own features; decided once per run (`pairs_method`).
NAMED_DEFAULTS = {"pairs": "auto", "orientation": "upright", "reconstruction": "incremental"}
ENSEMBLES = {
    "aliked+disk": {"features": "aliked-n16", "also": ["disk"], "matching": "lightglue"},
    "aliked+xfeat": {"features": "aliked-n16", "also": ["xfeat"], "matching": "lightglue"},
}
confs = collections.ChainMap(ENSEMBLES, Registered("PIPELINES", EXTRACTORS))
PAIR_METHODS = ("auto", *pairs.confs)


# LightGlue on 2 CPU cores: ~7.5 s per pair at 4096 keypoints, ~0.9 s at 2048.
CPU_MAX_KEYPOINTS = 2048
# What `run` uses on a CPU for every override left at None: imc-mini in about SIFT's wall time at a
# higher mAA on every scene (benchmarks/speed.py; README). ALIKED at 640 px costs 0.5 s per photo,
# mutual-nearest-neighbour matching milliseconds per pair (LightGlue: 0.2-0.6 s), and the `mnn`
# orientation reuses the main features instead of extracting its own.
# The time guard halves keypoints down to this many, no lower.
MIN_KEYPOINTS = 1024
# resize_to "auto" (the CPU's default): each photo's features at its own size (longest side) within
# these bounds, photos under 640 px at twice their size (features.target_side). 640 px loses what large
# sharp photos hold (two unseen 1280 px object scenes: 0.365 -> 0.735 and 0.576 -> 0.980 mAA at 1024);
# 1024 is the GPU's setting and costs ALIKED ~2.5x 640's time, so 640 px photos stay at 640.
AUTO_RESIZE = [640, 1024]
CPU_DEFAULTS = {"max_keypoints": CPU_MAX_KEYPOINTS, "resize_to": "auto", "matcher": "mnn", "orientation_method": "mnn"}


def stage_confs(
    name: str = "aliked",
    max_keypoints: int | None = None,
    pairs_method: str | None = None,
    resize_to: int | None = None,
    orientation_method: str | None = None,
    prefilter: int | None = None,
    matcher: str | None = None,
) -> dict:
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
    names = {**NAMED_DEFAULTS, **confs[name]}
    if pairs_method:
        names["pairs"] = pairs_method
    if names["pairs"] not in pairs.confs:
        raise ValueError(
            f"pairs {names['pairs']!r}: resolve 'auto' first (pipeline.choose_pairs); known: {sorted(pairs.confs)}"
        )
    if matcher:
        names["matching"] = matcher
    no_lightglue = [f for f in [names["features"], *names.get("also", [])] if f in NO_LIGHTGLUE]
    mconf = matching.confs[names["matching"]]
    if (mconf["model"]["name"] == "lightglue" or mconf.get("rescue")) and no_lightglue:
        raise WeightsError(
            f"no LightGlue weights for {no_lightglue[0]} features ({NO_LIGHTGLUE[no_lightglue[0]]}); pass --matcher mnn"
        )  # said before any photo is read, not when the matcher first loads
    if orientation_method:
        names["orientation"] = None if orientation_method == "none" else orientation_method

    oconf = merge_conf(orientation.confs[names["orientation"]], {}) if names.get("orientation") else None
    if prefilter is not None:
        if oconf is None:
            raise ValueError("the pair prefilter needs the orientation stage's matches; drop --orientation none")
        oconf["prefilter_min_matches"] = prefilter
    return {
        "pairs": merge_conf(pairs.confs[names["pairs"]], {}),
        "orientation": oconf,
        "features": _features_conf(names["features"], max_keypoints, resize_to, names.get("orientation")),
        # further extractors whose keypoints and matches are merged with the first's (ensemble)
        "also": [_features_conf(n, max_keypoints, resize_to, names.get("orientation")) for n in names.get("also", [])],
        "matching": merge_conf(matching.confs[names["matching"]], {}),
        "reconstruction": merge_conf(reconstruction.confs[names["reconstruction"]], {}),
    }


def _features_conf(fname: str, max_keypoints: int | None, resize_to, orientation_name: str | None) -> dict:
    """A features conf with the run's overrides, its output name saying each (and the orientation stage
    whose turns it was extracted at)."""
    over, tags = {}, ""
    if max_keypoints:
        over["model"], tags = {"max_num_keypoints": max_keypoints}, f"-{max_keypoints}"
    if resize_to == "auto":
        over["resize_to"], tags = list(AUTO_RESIZE), tags + "-r{}-{}".format(*AUTO_RESIZE)
    elif resize_to:
        over["resize_to"], tags = resize_to, tags + f"-r{resize_to}"
    if orientation_name:  # photos turned by the orientation stage's findings: say which stage
        tags += "-" + orientation.confs[orientation_name]["output"]
    return merge_conf(features.confs[fname], {**over, "output": features.confs[fname]["output"] + tags})


def choose_pairs(requested: str | None, scenes: list[data.Scene], dinov2=None, networks: dict | None = None) -> str:
    """The pair method of a run: `requested`, or for "auto"/None DINOv2 when a local model loads, else VLAD.

    Decided once per run, so a missing model costs one log line, not a retry per scene. "auto" only
    tries local sources (--dinov2, $IMC_DINOV2, the Kaggle input), never the hub: an offline machine
    would spend minutes retrying. A loaded model is kept in `networks` for the pairs stage.
    """
    threshold = pairs.confs["dinov2"]["exhaustive_if_less"]
    needed = any(len(s.image_names) >= threshold for s in scenes)  # else every scene gets all pairs
    if requested == "dinov2" and needed:
        try:
            model = load_dinov2(dinov2)
        except Exception as err:
            raise WeightsError(
                f"{dinov2 or local_dinov2() or DINOV2_HUB_ID}: DINOv2 cannot be "
                f"loaded ({err}); pass a model folder with --dinov2 DIR or $IMC_DINOV2, or "
                "use --pairs vlad (no weights)"
            ) from err
        if networks is not None:
            networks[("pairs", str(dinov2 or local_dinov2()))] = model
    if requested not in (None, "auto"):
        return requested
    if not needed:
        return "vlad"
    source = dinov2 or local_dinov2()
    if source is None:
        logger.warning(
            "pairs: no DINOv2 model found (--dinov2 DIR, $IMC_DINOV2, %s); scenes of %d+ photos use "
            "VLAD retrieval over their own features (--pairs vlad)",
            DINOV2_KAGGLE_DIR,
            threshold,
        )
        return "vlad"
    try:
        model = load_dinov2(source)
    except Exception as err:  # a broken folder must not cost the scenes their pairs
        logger.warning(
            "pairs: DINOv2 at %s cannot be loaded (%s); scenes of %d+ photos use VLAD retrieval over "
            "their own features (--pairs vlad); fix the folder given by --dinov2 / $IMC_DINOV2",
            source,
            err,
            threshold,
        )
        return "vlad"
    if networks is not None:
        networks[("pairs", str(source))] = model
    logger.info("pairs: DINOv2 retrieval from %s", source)
    return "dinov2"


# Categories (the competition's categories.csv) that change a stage's setting. Transparent objects:
# global descriptors of a glass on a turntable see the same background through every view, so
# retrieval cannot tell near views from far ones; such scenes are small (IMC 2024: under 100
# photos), and matching all pairs is affordable. Not measured here: imc-hard has no transparent scene.
CATEGORY_PAIRS = {"transparent": "exhaustive"}


# What a mixed photo set (an IMC 2025 dataset: several scenes and outliers) changes in the
# reconstruction conf: every model the joining keeps apart is a cluster (reconstruction.confs["clusters"]).
MIXED_RECONSTRUCTION = {k: reconstruction.confs["clusters"][k] for k in ("output", "keep")}
# Its photo groups are mostly other scenes and outliers, not photos turned: one photo of a group tried
# at every quarter turn without joining another group tells that (orientation's max_tries_per_group;
# each try costs three extractions, and the tries were most of what mixing added to the wall).
MIXED_ORIENTATION = {"max_tries_per_group": 1}


def scene_confs(sconfs: dict, scene: data.Scene) -> dict:
    """`sconfs` for one scene: retrieval turns into exhaustive pairs (so named) below its size
    threshold, or for a category of CATEGORY_PAIRS; a mixed folder keeps every cluster."""
    if scene.mixed:
        oconf = sconfs["orientation"] and merge_conf(sconfs["orientation"], MIXED_ORIENTATION)
        sconfs = {**sconfs, "reconstruction": merge_conf(sconfs["reconstruction"], MIXED_RECONSTRUCTION),
                  "orientation": oconf}  # fmt: skip
    threshold = sconfs["pairs"].get("exhaustive_if_less")
    by_category = [CATEGORY_PAIRS[c] for c in scene.categories if c in CATEGORY_PAIRS]
    if by_category and by_category[0] != sconfs["pairs"]["method"]:
        logger.info("scene %s (%s): %s pairs", scene.key, ";".join(scene.categories), by_category[0])
        return {**sconfs, "pairs": merge_conf(pairs.confs[by_category[0]], {})}
    if threshold and len(scene.image_names) < threshold:
        return {**sconfs, "pairs": merge_conf(pairs.confs["exhaustive"], {})}
    return sconfs


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
    sources = [
        (root / f"{f['output']}.h5", root / f"{f['output']}_{match}_{pairs_name}.h5")
        for f in [sconfs["features"], *sconfs.get("also", [])]
    ]
    feats = "+".join(f["output"] for f in [sconfs["features"], *sconfs.get("also", [])])
    if len(sources) > 1:
        merged = (root / f"{feats}.h5", root / f"{feats}_{match}_{pairs_name}.h5")
    else:
        merged = sources[0]
    return {
        "pairs": all_pairs,
        # The pairs the orientation stage tries: VLAD over the photos as stored (the final VLAD pairs
        # come from the turned photos); other methods do not see turns, so the same file.
        "candidates": all_pairs.with_name(all_pairs.stem + "-as-stored.txt")
        if sconfs["pairs"]["method"] == "vlad" and sconfs["orientation"]
        else all_pairs,
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


# The stages of a scene, in the order `run_scene` runs them (its `times` keys). VLAD pairs and the
# `mnn` orientation read the main features as stored, so with those a first "features" pass runs
# before "pairs"; "merge" runs for an ensemble only.
STAGES = ("pairs", "orientation", "features", "matching", "merge", "reconstruction")


def run_scene(
    scene: data.Scene,
    sconfs: dict,
    work_dir: Path,
    nets: Networks,
    overwrite: bool = False,
    deadline: float | None = None,
    progress=None,
    until: str | None = None,
    executor=None,
) -> dict:
    """One scene through STAGES, in order; returns {"poses": {name: (R, t)}, "model", "clusters", "models",
    "times", "spans", "paths"}: "clusters" the poses of every kept model (largest first), "models" what
    joining the mapper's models did (reconstruction.summary).

    Stages reuse what their files hold (unless `overwrite`). `deadline` (time.monotonic seconds) is
    checked between stages and inside extraction and matching: past it, budget.OutOfTime.
    `progress(stage, done, total)`: called as each stage goes (total None where not known ahead);
    a stage that finds its work done reports nothing. `until`: a name of STAGES; stop after it
    (no poses), as the app does to run one step at a time ("merge" for an ensemble's matches).
    `executor` (default local): where a scene it calls large extracts and matches, in shards
    (imc_lib/shards.py); "shards" in the result counts them per stage.
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"until={until!r}: not a stage; stages: {STAGES}")
    executor = executor or LocalExecutor()
    sharded = executor.shards(len(scene.image_names))
    with executor.pool(nets) if sharded else contextlib.nullcontext() as pool:
        steps = _SceneRun(scene, sconfs, work_dir, nets, overwrite, deadline, progress, pool, executor.sharding)
        for stage in STAGES:
            budget.check(deadline, f"scene {scene.key}, before {stage}")
            getattr(steps, stage)()
            if stage == until:
                break
    return steps.out


class _SceneRun:
    """One scene's run, a method per stage of STAGES; `out` is what `run_scene` returns.

    VLAD pairs and the `mnn` orientation read the main features as stored, so `pairs` extracts them
    first; photos the orientation turns are then extracted at their turn by `features`, or copied
    from what the orientation stage extracted while trying turns.
    """

    def __init__(self, scene, sconfs, work_dir, nets, overwrite, deadline, progress, pool=None, sharding=None):
        self.scene, self.sconfs = scene, scene_confs(sconfs, scene)
        self.paths = scene_paths(work_dir, scene, self.sconfs)
        self.nets, self.overwrite, self.deadline = nets, overwrite, deadline
        self.names = list(scene.image_names)
        self.fconfs = [self.sconfs["features"], *self.sconfs["also"]]
        self.out = {"poses": {}, "model": None, "clusters": [], "models": {}, "times": {}, "spans": [],
                    "paths": self.paths, "shards": {}}  # fmt: skip
        self.pool, self.sharding = pool, sharding  # where a large scene's shards run, and their sizes
        self.clock = _Clock(self.out["times"], self.out["spans"])
        self.report = _reporter(progress)
        self.fresh = overwrite  # a file is overwritten once per run, not again by a later step of the stage
        self.turns = None

    def _count(self, stage: str, counts: dict) -> None:
        total = self.out["shards"].setdefault(stage, {"reused": 0, "computed": 0})
        for key, value in counts.items():
            total[key] += value

    def _extract(self, fconf: dict, feature_path: Path, turns: dict | None) -> None:
        overwrite = self.fresh if fconf is self.fconfs[0] else self.overwrite
        reuse, names = orientation.turned_path(self.paths["orientation"]), self.names
        with self.clock("features"):
            if self.pool is not None:  # a large scene: in shards on the executor's pool
                self._count("features", shards.extract(self.pool, fconf, self.scene.image_dir, names, feature_path,
                            overwrite, turns, reuse, self.sharding["photos"]))  # fmt: skip
            else:
                features.main(fconf, self.scene.image_dir, names, feature_path, self.nets.device, overwrite,
                              model=self.nets.extractor(fconf), turns=turns, deadline=self.deadline, reuse=reuse,
                              progress=self.report("features"))  # fmt: skip
        if fconf is self.fconfs[0]:
            self.fresh = False

    def _select_pairs(self, path: Path) -> None:
        pconf = self.sconfs["pairs"]
        with self.clock("pairs"):
            pairs.main(pconf, self.scene.image_dir, self.names, path, self.paths["global"], self.nets.device,
                       self.overwrite, model=self.nets.retrieval(pconf), feature_path=self.paths["sources"][0][0],
                       progress=self.report("pairs"))  # fmt: skip

    def pairs(self) -> None:
        """Candidate pairs (VLAD: over the main features as stored, extracted first)."""
        oconf = self.sconfs["orientation"]
        if self.sconfs["pairs"]["method"] == "vlad" or (oconf and oconf["features"] is None):
            done = _turns_if_done(self.paths["orientation"], oconf, self.overwrite)
            self._extract(self.fconfs[0], self.paths["sources"][0][0], done)
        self._select_pairs(self.paths["candidates"])

    def orientation(self) -> None:
        """Each photo's quarter turns (and, with a prefilter, the pairs to match)."""
        oconf, fconf, paths = self.sconfs["orientation"], self.sconfs["features"], self.paths
        if not oconf:
            return
        ofeatures = oconf["features"] or fconf
        with self.clock("orientation"):
            orientation.main(oconf, self.scene.image_dir, self.names, paths["candidates"], paths["orientation"],
                             self.nets.device, self.overwrite, extractor=self.nets.extractor(ofeatures),
                             matcher=self.nets.matcher(ofeatures, oconf["matching"]), weights=self.nets.weights,
                             feature_path=paths["sources"][0][0], features_conf=fconf,
                             progress=self.report("orientation"))  # fmt: skip
            if oconf.get("prefilter_min_matches") is not None:
                kept = orientation.overlapping_pairs(paths["orientation"], oconf["prefilter_min_matches"])
                write_pairs(kept, paths["match_pairs"])
                logger.info("scene %s: %d of %d pairs overlap at low resolution", self.scene.key, len(kept),
                            len(read_pairs(paths["candidates"])))  # fmt: skip
        self.turns = orientation.read_orientations(paths["orientation"])

    def features(self) -> None:
        """Every extractor's features at the photos' turns; the pairs to match (VLAD again if any turned)."""
        paths = self.paths
        for fconf, (feature_path, _) in zip(self.fconfs, paths["sources"]):
            self._extract(fconf, feature_path, self.turns)
        if paths["pairs"] == paths["candidates"]:
            return
        if any((self.turns or {}).values()):
            self._select_pairs(paths["pairs"])  # VLAD again, on the photos as turned
        elif self.overwrite or not paths["pairs"].exists() or _differ(paths["pairs"], paths["candidates"]):
            # nothing turned: VLAD would pick the same pairs; unstamped, so a later VLAD run redoes them
            stamp_path(paths["pairs"]).unlink(missing_ok=True)
            write_pairs(read_pairs(paths["candidates"]), paths["pairs"])

    def matching(self) -> None:
        """Every extractor's matches; pairs whose photos stay upright copied from the `mnn` orientation's
        (the same features and matcher: fingerprints decide, so other extractors' pairs are matched);
        then, for a matcher with a rescue, LightGlue on the weakly tied photos' pairs (matching.rescue)."""
        mconf, paths = self.sconfs["matching"], self.paths
        reuse = orientation.matches_path(paths["orientation"])
        for fconf, (feature_path, match_path) in zip(self.fconfs, paths["sources"]):
            with self.clock("matching"):
                if self.pool is not None:  # a large scene: in shards on the executor's pool
                    self._count("matching", shards.match(self.pool, mconf, fconf, paths["match_pairs"], feature_path,
                                match_path, self.overwrite, self.sharding["pairs"], reuse))  # fmt: skip
                else:
                    matching.main(mconf, paths["match_pairs"], feature_path, match_path, lightglue_key(fconf),
                                  self.nets.device, self.overwrite, model=self.nets.matcher(fconf, mconf),
                                  deadline=self.deadline, reuse=reuse, progress=self.report("matching"))  # fmt: skip
                if mconf.get("rescue"):
                    matching.rescue(mconf, paths["match_pairs"], feature_path, match_path,
                                    lightglue_key(fconf), self.nets.device,
                                    model=self.nets.matcher(fconf, {"model": mconf["rescue"]["model"]}),
                                    deadline=self.deadline, progress=self.report("matching"))  # fmt: skip

    def merge(self) -> None:
        """An ensemble's keypoints and matches merged into one set (nothing for one extractor)."""
        if len(self.fconfs) > 1:
            with self.clock("merge"):
                paths = self.paths
                ensemble.main(ensemble.confs["merge"], self.names, paths["match_pairs"], paths["sources"],
                              paths["features"], paths["matches"], self.overwrite,
                              progress=self.report("merge"))  # fmt: skip

    def reconstruction(self) -> None:
        paths = self.paths
        with self.clock("reconstruction"):
            model = reconstruction.main(self.sconfs["reconstruction"], self.scene.image_dir, self.names,
                                        paths["match_pairs"], paths["features"], paths["matches"], paths["sfm"],
                                        self.overwrite, progress=self.report("reconstruction"))  # fmt: skip
        clusters = reconstruction.clusters(paths["sfm"]) if model is not None else []
        self.out.update(poses=reconstruction.poses(model), model=model, clusters=[reconstruction.poses(c) for c in
                        clusters], models=reconstruction.summary(paths["sfm"]))  # fmt: skip


def _reporter(progress):
    """`report(stage)`: the callback(done, total, desc) a stage gets, telling `progress` the stage's name."""
    if progress is None:
        return lambda stage: None
    return lambda stage: lambda done, total, desc=None: progress(stage, done, total)


def _differ(path0: Path, path1: Path) -> bool:
    return read_pairs(path0) != read_pairs(path1)


def _turns_if_done(orientation_path: Path, oconf: dict | None, overwrite: bool) -> dict[str, int] | None:
    """The orientation stage's turns when a finished file holds them (a rerun keeps turned features as they are)."""
    if oconf and not overwrite and Path(orientation_path).exists():
        return orientation.read_orientations(orientation_path)
    return None


def resolve(
    conf: str = "aliked",
    device=None,
    max_keypoints: int | None = None,
    pairs_method: str | None = None,
    resize_to: int | None = None,
    orientation_method: str | None = None,
    prefilter: int | None = None,
    matcher: str | None = None,
    dinov2=None,
) -> dict:
    """The stage configs of a run: the named config, the caller's overrides, and on a CPU the speed
    settings (CPU_DEFAULTS) for every override left at None. `pairs_method` must be resolved ("auto" is not)."""
    overrides = {
        "max_keypoints": max_keypoints,
        "resize_to": resize_to,
        "matcher": matcher,
        "orientation_method": orientation_method,
    }
    if pick_device(device).type == "cpu":
        defaults = {k: v for k, v in CPU_DEFAULTS.items() if overrides[k] is None}
        if prefilter is not None and defaults.get("orientation_method") == "mnn":
            defaults["orientation_method"] = "upright"  # the prefilter counts low-resolution LightGlue matches
        overrides.update(defaults)
        if defaults:
            logger.info(
                "CPU speed settings %s (each can be overridden; --max-keypoints 4096 --resize-to 1024 "
                "--matcher lightglue --orientation upright are the GPU's)",
                defaults,
            )
    sconfs = stage_confs(
        conf,
        overrides["max_keypoints"],
        pairs_method,
        overrides["resize_to"],
        overrides["orientation_method"],
        prefilter,
        overrides["matcher"],
    )
    if dinov2 is not None and sconfs["pairs"]["method"] == "retrieval":
        sconfs["pairs"]["model"] = str(dinov2)
    return sconfs


def run(
    data_dir: Path,
    out: Path,
    work_dir: Path,
    split: str = "train",
    scenes: list[str] | None = None,
    conf: str = "aliked",
    device=None,
    overwrite: bool = False,
    weights: str | Path | None = None,
    dinov2: str | Path | None = None,
    pairs_method: str | None = None,
    networks: dict | None = None,
    time_limit: float | None = None,
    executor=None,
    export: Path | None = None,
    **overrides,
) -> dict:
    """Reconstruct every scene of `data_dir`/`split` and write `out` (submission.csv), then the run's
    record (`WORK/run.json`, report.RUN_RECORD) and its report (`report.html` beside `out`).

    A plain folder of photos (`data.layout` "folder"): `out` is a folder that gets the export's files
    (poses.csv, a COLMAP model, transforms.json and a PLY per cluster: imc_lib/export.py) and the
    report, no submission. `export`: a folder where competition layouts also get those files, one
    subfolder per scene.

    `overrides`: max_keypoints, resize_to, orientation_method, prefilter, matcher (see `resolve`).
    `pairs_method`: "auto" (default), "dinov2", "vlad" or "exhaustive"; see `choose_pairs`.
    `networks`: a dict the caller keeps between runs (e.g. a loop over scenes): networks loaded by
    one run are stored in it and reused by the next instead of loading again.
    `time_limit` (seconds): a `budget.Guard` picks each scene's keypoints and pairs so the scenes
    left fit, skips what cannot, stops a scene that runs over, and `out` is rewritten after every
    scene (complete, placeholders for the scenes to come), so a killed run still leaves one.

    A scene that fails is logged and still gets its rows (no pose); the run goes on. Returns
    {"scenes": {key: {"registered", "images", "error", "times", "spans", "models"}}, "times": {stage: seconds},
    "submission": out (None for a plain folder), "export", "report", "confs": the stage configs used}; "spans"
    are (stage, start, end) in `time.perf_counter` seconds.
    """
    executor = executor or LocalExecutor()
    if time_limit is not None and executor.parallel:
        raise ValueError("--time-limit plans each scene from the last one's times: run it without --executor ray")
    if executor.parallel:  # other machines see the folders by their full paths
        data_dir, work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
    requested, device = device, usable_device(device)  # a GPU that cannot run kernels: CPU settings, loudly
    scene_list = data.load_scenes(data_dir, split, scenes)
    folder = data.layout(data_dir, split) == "folder"
    sub_path, export = (None, Path(out)) if folder else (Path(out), export)
    if folder and Path(data_dir).resolve() in Path(work_dir).resolve().parents:
        raise ValueError(f"{work_dir}: the work folder is inside the photo folder {data_dir}, whose every photo at "
                         "any depth is read; pass --work a folder outside it")  # fmt: skip
    executor.check(data_dir, work_dir)
    networks = {} if networks is None else networks
    method = choose_pairs(pairs_method, scene_list, dinov2, networks)
    sconfs = resolve(conf, device, pairs_method=method, dinov2=dinov2, **overrides)
    nets = Networks(weights, device, networks)
    guard = _guard(time_limit, sconfs, method, scene_list[0], nets) if time_limit is not None and scene_list else None
    logger.info("%d scene(s) from %s (%s), device %s", len(scene_list), data_dir, "a plain folder" if folder else split,
                device)  # fmt: skip
    runs = _Runs(scene_list, sub_path if guard or executor.parallel else None, guard)

    def jobs():  # drawn one at a time by a local executor, so the guard plans each scene from the last
        for i, scene in enumerate(scene_list):
            planned, runs.settings[scene.key] = _plan(guard, scene_list[i:], sconfs, conf, device, dinov2, overrides)
            yield SceneJob(scene, planned, Path(work_dir), overwrite, guard and guard.deadline, requested)

    for job, outcome in executor.scenes(scene_task, jobs(), nets):
        runs.add(job, outcome)
    results = runs.results()
    if sub_path:
        with _Clock(runs.times)("submission"):
            submission.write_submission(runs.rows(), sub_path)
    _warn_unposed(results)
    with _Clock(runs.times)("export") if export else contextlib.nullcontext():
        for scene in scene_list if export else []:
            export_mod.main(scene, runs.sfm_dirs[scene.key], Path(export) if folder else Path(export) / scene.key)
    report_path = (Path(out) if folder else Path(out).parent) / "report.html"
    record = {"data_dir": _absolute(data_dir), "split": None if folder else split, "conf": conf,
              "times": dict(runs.times), "submission": _absolute(sub_path), "export": _absolute(export),
              "scenes": [_scene_record(s, results[s.key], runs.sfm_dirs[s.key]) for s in scene_list]}  # fmt: skip
    write_record(work_dir, record, report_path)
    return {"scenes": results, "times": dict(runs.times), "submission": sub_path, "export": export,
            "report": report_path, "confs": sconfs}  # fmt: skip


class _Runs:
    """What the scenes of a run gave, as they finish: results, submission rows, reconstruction folders,
    stage times; with `live_submission`, that file rewritten complete after every scene (placeholder
    rows for the scenes to come: a killed run still leaves one)."""

    def __init__(self, scenes: list[data.Scene], live_submission: Path | None, guard):
        self.scenes, self.live, self.guard = scenes, live_submission, guard
        self.times: dict[str, float] = defaultdict(float)
        self.by_key, self.by_rows, self.settings, self.sfm_dirs = {}, {}, {}, {}

    def add(self, job: SceneJob, outcome) -> None:
        scene = job.scene
        result, clusters = _lost(scene, outcome) if isinstance(outcome, BaseException) else outcome
        if self.guard and job.sconfs:
            self.guard.record(result["images"], self.settings[scene.key], result["times"])
        for stage, seconds in result["times"].items():
            self.times[stage] += seconds
        self.by_key[scene.key], self.by_rows[scene.key] = result, _rows(scene, clusters)
        planned = job.sconfs and scene_confs(job.sconfs, scene)
        self.sfm_dirs[scene.key] = planned and scene_paths(job.work_dir, scene, planned)["sfm"]
        if self.live:
            submission.write_submission(self.rows(), self.live)

    def rows(self) -> list[dict]:
        return [r for s in self.scenes for r in self.by_rows.get(s.key, _rows(s, []))]

    def results(self) -> dict:
        return {s.key: self.by_key[s.key] for s in self.scenes}


def _warn_unposed(results: dict) -> None:
    failed = [k for k, r in results.items() if r["error"]]
    unregistered = sum(r["images"] - r["registered"] - r.get("outliers", 0) for r in results.values())
    if failed or unregistered:
        logger.warning("%d image(s) without a pose, %d scene(s) failed %s; their rows carry a placeholder pose",
                       unregistered, len(failed), failed)  # fmt: skip


def _absolute(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def write_record(work_dir: Path, record: dict, report_path: Path) -> None:
    """The run's record in its work folder (what `imc-lib report WORK_DIR` reads) and the report made from it."""
    io.write_json(Path(work_dir) / report.RUN_RECORD, record)
    report.main(Path(work_dir), report_path)


def _scene_record(scene: data.Scene, result: dict, sfm_dir: Path | None) -> dict:
    """What the report needs of one scene: its photos, where its models are, what the run found."""
    kept = {k: v for k, v in result.items() if k != "spans"}
    return {"key": scene.key, "dataset": scene.dataset, "scene": scene.scene, "mixed": scene.mixed,
            "image_dir": _absolute(scene.image_dir), "photos": list(scene.image_names), "sfm": _absolute(sfm_dir),
            **kept}  # fmt: skip


def _plan(guard, scenes_left, sconfs, conf, device, dinov2, overrides) -> tuple[dict | None, budget.Setting | None]:
    """The stage configs for `scenes_left[0]` and the guard's setting for it: `sconfs` without a
    guard; None when the guard skips the scene."""
    if guard is None:
        return sconfs, None
    scene = scenes_left[0]
    setting = guard.setting({s.key: len(s.image_names) for s in scenes_left}, scene.key)
    if setting is None:
        return None, None
    overrides = {**overrides, "max_keypoints": setting.max_keypoints}
    return resolve(conf, device, pairs_method=setting.pairs, dinov2=dinov2, **overrides), setting


# Measured rates of one image's extraction and one pair's matching -> whole-pipeline rates: an image
# also costs reading, orientation tries and mapping; a pair is also matched by the orientation stage.
PER_IMAGE_FACTOR, PER_PAIR_FACTOR = 2.0, 2.0


def _guard(time_limit: float, sconfs: dict, method: str, scene: data.Scene, nets: Networks) -> budget.Guard:
    """The run's time guard, its first rates measured on this device (`_measure_costs`)."""
    prior = _measure_costs(sconfs, scene, nets)
    retrieval = method if method != "exhaustive" else ("dinov2" if local_dinov2() else "vlad")
    settings = budget.ladder(prior.keypoints, method, min(MIN_KEYPOINTS, prior.keypoints), retrieval=retrieval)
    logger.info("time guard: %.0f s; rates %s; settings from %s down to %s", time_limit, prior, settings[0],
                settings[-1])  # fmt: skip
    return budget.Guard(time_limit, settings, prior)


def _measure_costs(sconfs: dict, scene: data.Scene, nets: Networks) -> budget.Costs:
    """Rates from extracting the first two photos of `scene` and matching them; the device's default
    rates when they cannot be read (the features stage will name them)."""
    fconf, mconf = sconfs["features"], sconfs["matching"]
    extractor, matcher = nets.extractor(fconf)(), nets.matcher(fconf, mconf)()  # loading is not a rate
    default = budget.default_costs(nets.device)
    try:
        images = [read_image(scene.image_dir / n, features.max_side(fconf)) for n in list(scene.image_names)[:2]]
    except (ImageError, FileNotFoundError):
        return default
    start = time.monotonic()
    feats = [features.extract(extractor, fconf, image, nets.device) for image in images]
    extracted = time.monotonic()
    if len(feats) == 2:
        matching.match_pair(matcher, feats[0], feats[1], nets.device)
    matched = time.monotonic()
    return budget.Costs(per_image=PER_IMAGE_FACTOR * (extracted - start) / max(len(feats), 1), per_pair=0.0,
                        per_pair_match=PER_PAIR_FACTOR * (matched - extracted),
                        keypoints=fconf["model"]["max_num_keypoints"], exponent=default.exponent)  # fmt: skip


def _rows(scene: data.Scene, clusters: list[dict]) -> list[dict]:
    """A scene's submission rows: its model's poses (IMC 2024), or every cluster (a mixed folder)."""
    if scene.mixed:
        return submission.scene_rows(scene, {}, clusters)
    return submission.scene_rows(scene, clusters[0] if clusters else {})


@dataclasses.dataclass(frozen=True)
class SceneJob:
    """One scene's work as an executor carries it: paths, names and confs, nothing loaded.
    `sconfs` None: the time guard skipped it. `device`: as asked (a Ray worker picks its own from it)."""

    scene: data.Scene
    sconfs: dict | None
    work_dir: Path
    overwrite: bool
    deadline: float | None
    device: str | None


def scene_task(job: SceneJob, nets: Networks, executor) -> tuple[dict, list[dict]]:
    """What an executor runs for one scene: `_run_one` on `nets`, large scenes sharded on `executor`."""
    return _run_one(job.scene, job.sconfs, job.work_dir, nets, job.overwrite, job.deadline, executor)


def _lost(scene: data.Scene, err: BaseException) -> tuple[dict, list[dict]]:
    """A scene whose task was lost (its worker died, after every retry): recorded as failed, no poses."""
    logger.error("scene %s lost: %s; its %d images get rows without a pose", scene.key, err, len(scene.image_names))
    error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return {"images": len(scene.image_names), "registered": 0, "error": error, "times": {}, "spans": [],
            "models": {}, "shards": {}}, []  # fmt: skip


def _run_one(scene, sconfs, work_dir, nets, overwrite, deadline=None, executor=None) -> tuple[dict, list[dict]]:
    """`run_scene`, with a failure logged and recorded instead of raised (set-up problems excepted);
    returns the scene's result and its clusters' poses (largest first; one for an IMC 2024 scene).
    `sconfs` None: a scene the time guard skipped."""
    names = list(scene.image_names)
    logger.info("scene %s: %d images", scene.key, len(names))
    result = {"images": len(names), "registered": 0, "error": None, "times": {}, "spans": [], "models": {},
              "shards": {}}  # fmt: skip
    clusters = []
    if sconfs is None:
        result["error"] = "skipped: time limit"
        return result, clusters
    try:
        with lock.scene_lock(Path(work_dir) / scene.key):  # another run on this scene stops this one
            out = run_scene(scene, sconfs, work_dir, nets, overwrite, deadline, executor=executor)
        clusters = out["clusters"] if scene.mixed else [out["poses"]]
        result.update(times=out["times"], spans=out["spans"], models=out["models"], shards=out["shards"])
    except (WeightsError, lock.SceneLockedError):
        raise  # set-up problems, not the scene's: missing weights fail every scene; a busy folder is another run's
    except budget.OutOfTime as err:
        logger.warning("scene %s: %s; its %d images get placeholder rows", scene.key, err, len(names))
        result["error"] = f"skipped: {err}"
    except Exception as err:  # one bad scene must not cost the others their poses
        logger.exception("scene %s failed: %s; its %d images get rows without a pose", scene.key, err, len(names))
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        if nets.device.type == "cuda":
            torch.cuda.empty_cache()
    placed = set().union(*clusters)
    result["registered"] = sum(n in placed for n in names)
    if scene.mixed:  # photos in no cluster are its outliers, not failures
        result.update(clusters=len(clusters), outliers=len(names) - result["registered"])
    if not result["error"]:  # the scene's summary line, whatever shows the stages' progress
        times = ", ".join(f"{k} {v:.1f} s" for k, v in result["times"].items())
        logger.info("scene %s: %d of %d images registered in %.1f s (%s)", scene.key, result["registered"], len(names),
                    sum(result["times"].values()), times)  # fmt: skip
    return result, clusters
