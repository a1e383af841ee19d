"""The run's configuration, made in one place: the named pipeline configs, the CPU's settings, each
stage's resolved conf, and per scene a frozen plan (`ScenePlan`: its confs and the typed paths of its
files, `plan_scene`). The runner (runner.py), the run loop (pipeline.py), the app and the benchmarks
read plans; none of them builds a file name or a conf on its own.

WORK/<scene>/pairs-*.txt  orient-*.csv  feats-*.h5  *matches-*.h5  sfm_*/
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .formats import data
from .networks import (
    DINOV2_HUB_ID,
    DINOV2_KAGGLE_DIR,
    EXTRACTORS,
    NO_LIGHTGLUE,
    Registered,
    WeightsError,
    load_dinov2,
    local_dinov2,
)
from .stages import features, matching, orientation, pairs, reconstruction
from .utils import merge_conf, pick_device

logger = logging.getLogger(__name__)

# Named pipeline configs (--features): each registered extractor's (imc_lib/networks: its features conf
# and its matcher pairing, e.g. aliked, aliked-t16, disk, xfeat), then the ensembles, whose extractors'
# keypoints and matches are merged (imc_lib/ensemble.py); every entry over NAMED_DEFAULTS. "pairs":
# "auto" is DINOv2 where a model loads (a local folder: --dinov2, $IMC_DINOV2, the Kaggle input), else
# VLAD over the scene's own features; decided once per run (`choose_pairs`).
NAMED_DEFAULTS = {"pairs": "auto", "orientation": "upright", "reconstruction": "incremental"}
ENSEMBLES = {
    "aliked+disk": {"features": "aliked-n16", "also": ["disk"], "matching": "lightglue"},
    "aliked+xfeat": {"features": "aliked-n16", "also": ["xfeat"], "matching": "lightglue"},
}
confs = collections.ChainMap(ENSEMBLES, Registered("PIPELINES", EXTRACTORS))
PAIR_METHODS = ("auto", *pairs.confs)


def _side(text: str) -> int | str:
    """--resize-to: pixels, or "auto"."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give pixels (e.g. 1024) or auto") from None


def duration(text: str) -> float:
    """Seconds from '9h', '45m', '600s' or '600'."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 9h, 45m, 600s, 600)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the time limit must be positive")
    return value


def _option(default, **cli):
    """A field of `Options` and its command-line flag's settings (argparse's), which the CLI reads."""
    return field(default=default, metadata={"cli": cli})


# The smallest --resize-to: a photo's features at fewer pixels than this see next to nothing.
MIN_SIDE = 32


@dataclass(frozen=True)
class Options:
    """A run's options: one name each, from the CLI's flag (`--max-keypoints` is `max_keypoints`) through
    the run loop and the plan to the stage that reads it; the app's settings use the same names. The CLI's
    parser is made from these fields (their metadata), so an option is added here and in its stage.
    None: the named config's value, or on a CPU its speed setting (CPU_DEFAULTS)."""

    features: str = _option("aliked", choices=lambda: sorted(confs), help="the named pipeline config")
    pairs: str = _option(
        "auto",
        choices=lambda: PAIR_METHODS,
        help="which pairs to match in scenes of 20+ photos (smaller ones: all): auto (DINOv2 when a local model "
        "is found, else vlad), dinov2, vlad (retrieval over the scene's own features, no weights) or exhaustive",
    )
    orientation: str | None = _option(
        None,
        choices=lambda: [*orientation.confs, "none"],
        help="turn sideways photos upright before features: upright (own low-resolution LightGlue pass) or mnn "
        "(from the main features); default upright, mnn on a CPU",
    )
    prefilter: int | None = _option(
        None,
        type=int,
        metavar="N",
        help="match only pairs with N+ low-resolution matches in the orientation stage (default: all)",
    )
    matcher: str | None = _option(
        None,
        choices=lambda: sorted(matching.confs),
        help="lightglue, or mnn: mutual nearest neighbours, ms per pair, or mnn+lightglue: LightGlue again for "
        "the weak pairs of weakly tied photos (default lightglue, mnn on a CPU)",
    )
    max_keypoints: int | None = _option(
        None, type=int, metavar="N", help="keypoints per image (default 4096, 2048 on a CPU)"
    )
    resize_to: int | str | None = _option(
        None,
        type=_side,
        metavar="PX|auto",
        help="longest image side for features, or auto: each photo at its own size within 640-1024, one under "
        "640 at twice its size (default 1024, auto on a CPU)",
    )
    device: str = _option("auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    weights: str | Path | None = _option(
        None,
        type=Path,
        metavar="DIR",
        help="folder of ALIKED/DISK/LightGlue weights (default $IMC_WEIGHTS_DIR, else download the official ones)",
    )
    dinov2: str | Path | None = _option(
        None, metavar="DIR_OR_HUB_ID", help="DINOv2 weights folder or hub id (default $IMC_DINOV2, Kaggle input, hub)"
    )
    overwrite: bool = _option(False, action="store_true", help="recompute every stage")
    # Seconds: a budget.Guard picks each scene's keypoints and pairs so the scenes left fit, skips what
    # cannot, stops a scene that runs over, and the submission is rewritten after every scene. The CLI
    # takes only a positive one; a caller's budget already spent (a notebook's) skips every scene.
    time_limit: float | None = _option(
        None,
        type=duration,
        metavar="T",
        help="finish within T (9h, 45m, 600s or seconds): fewer keypoints/pairs, or placeholder rows, for the "
        "scenes that would not fit; --out is rewritten after every scene",
    )
    export: Path | None = _option(
        None,
        type=Path,
        metavar="DIR",
        help="competition layouts: also write each scene's poses.csv, COLMAP models, transforms.json and "
        "points3D.ply to DIR/<scene>/",
    )

    def __post_init__(self):
        """Refuses a value no stage could use, naming the option and the fix, before any work starts."""
        for option, value, least in (("max-keypoints", self.max_keypoints, 1), ("prefilter", self.prefilter, 0)):
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"--{option} {value}: must be a whole number of at least {least}")
        if self.resize_to is not None and self.resize_to != "auto":
            if not isinstance(self.resize_to, int) or self.resize_to < MIN_SIDE:
                raise ValueError(f"--resize-to {self.resize_to}: give pixels, at least {MIN_SIDE} (e.g. 1024), or auto")
        if self.features not in confs:
            known = sorted(confs)
            raise ValueError(f"--features {self.features}: unknown pipeline config {self.features!r}; known: {known}")

    def but(self, **changes) -> Options:
        """A copy with `changes` (Options' field names), checked as a new one is."""
        return dataclasses.replace(self, **changes)


# LightGlue on 2 CPU cores: ~7.5 s per pair at 4096 keypoints, ~0.9 s at 2048.
CPU_MAX_KEYPOINTS = 2048
# resize_to "auto" (the CPU's default): each photo's features at its own size (longest side) within
# these bounds, photos under 640 px at twice their size (features.target_side). 640 px loses what large
# sharp photos hold (two unseen 1280 px object scenes: 0.365 -> 0.735 and 0.576 -> 0.980 mAA at 1024);
# 1024 is the GPU's setting and costs ALIKED ~2.5x 640's time, so 640 px photos stay at 640.
AUTO_RESIZE = [640, 1024]
# What `run` uses on a CPU for every override left at None: imc-mini in about SIFT's wall time at a
# higher mAA on every scene (benchmarks/speed.py; README). ALIKED at 640 px costs 0.5 s per photo,
# mutual-nearest-neighbour matching milliseconds per pair (LightGlue: 0.2-0.6 s), and the `mnn`
# orientation reuses the main features instead of extracting its own.
CPU_DEFAULTS = {"max_keypoints": CPU_MAX_KEYPOINTS, "resize_to": "auto", "matcher": "mnn", "orientation": "mnn"}


def stage_confs(options: Options | None = None, **changes) -> dict:
    """The per-stage configs of `options` (with `changes`, Options' field names), copied, not shared; its
    None values keep the named config's (no CPU settings: `resolve` adds those). `pairs` must be resolved
    ("auto" is not: choose_pairs).

    `matcher`: a `matching.confs` name. `orientation`: an `orientation.confs` name ("upright": its own
    low-resolution LightGlue pass; "mnn": from the main features) or "none" (skip the stage: photos known
    to be upright). `prefilter`: drop pairs with fewer low-resolution matches (from the orientation stage)
    before full matching.
    """
    o = (options or Options()).but(**changes)
    names = {**NAMED_DEFAULTS, **confs[o.features]}
    if o.pairs != "auto":
        names["pairs"] = o.pairs
    if names["pairs"] not in pairs.confs:
        raise ValueError(
            f"pairs {names['pairs']!r}: resolve 'auto' first (plan.choose_pairs); known: {sorted(pairs.confs)}"
        )
    if o.matcher:
        names["matching"] = o.matcher
    _check_lightglue([names["features"], *names.get("also", [])], matching.confs[names["matching"]])
    if o.orientation:
        names["orientation"] = None if o.orientation == "none" else o.orientation

    oconf = merge_conf(orientation.confs[names["orientation"]], {}) if names.get("orientation") else None
    if o.prefilter is not None:
        if oconf is None:
            raise ValueError("the pair prefilter needs the orientation stage's matches; drop --orientation none")
        oconf["prefilter_min_matches"] = o.prefilter
    fconfs = [_features_conf(n, o.max_keypoints, o.resize_to, names.get("orientation")) for n in
              [names["features"], *names.get("also", [])]]  # fmt: skip
    return {
        "pairs": merge_conf(pairs.confs[names["pairs"]], {}),
        "orientation": oconf,
        "features": fconfs[0],
        "also": fconfs[1:],  # further extractors whose keypoints and matches are merged with the first's (ensemble)
        "matching": merge_conf(matching.confs[names["matching"]], {}),
        # with the joining's, the checks' and the held mapping's settings in it (their defaults live in those modules)
        "reconstruction": reconstruction.resolved(reconstruction.confs[names["reconstruction"]]),
    }


def _check_lightglue(features: list[str], mconf: dict) -> None:
    """A WeightsError before any photo is read, not when the matcher first loads, for features no LightGlue
    fits under a matcher that uses LightGlue."""
    no_lightglue = [f for f in features if f in NO_LIGHTGLUE]
    if (mconf["model"]["name"] == "lightglue" or mconf.get("rescue")) and no_lightglue:
        raise WeightsError(
            f"no LightGlue weights for {no_lightglue[0]} features ({NO_LIGHTGLUE[no_lightglue[0]]}); pass --matcher mnn"
        )


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


def resolve(options: Options | None = None, device=None, **changes) -> dict:
    """The stage configs of a run: `options` (with `changes`, Options' field names) and, on a CPU, the
    speed settings (CPU_DEFAULTS) for every option left at None. `device`: default `options.device`.
    `pairs` must be resolved ("auto" is not)."""
    o = (options or Options()).but(**changes)
    if pick_device(o.device if device is None else device).type == "cpu":
        defaults = {k: v for k, v in CPU_DEFAULTS.items() if getattr(o, k) is None}
        if o.prefilter is not None and defaults.get("orientation") == "mnn":
            defaults["orientation"] = "upright"  # the prefilter counts low-resolution LightGlue matches
        if defaults:
            logger.info(
                "CPU speed settings %s (each can be overridden; --max-keypoints 4096 --resize-to 1024 "
                "--matcher lightglue --orientation upright are the GPU's)",
                defaults,
            )
        o = o.but(**defaults)
    sconfs = stage_confs(o)
    if o.dinov2 is not None and sconfs["pairs"]["method"] == "retrieval":
        sconfs["pairs"]["model"] = str(o.dinov2)
    return sconfs


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


def competition(scenes: list[data.Scene]) -> str:
    """The submission's year, decided once per run: "2025" when the scenes are mixed photo sets (IMC 2025
    datasets, a plain folder), else "2024" (a folder a scene); the layouts never mix them."""
    mixed = {s.mixed for s in scenes}
    if len(mixed) > 1:
        raise ValueError("IMC 2024 scenes and IMC 2025 datasets in one run; run them apart")
    return "2025" if mixed == {True} else "2024"


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
        sconfs = {
            **sconfs,
            "reconstruction": merge_conf(sconfs["reconstruction"], MIXED_RECONSTRUCTION),
            "orientation": oconf,
        }
    threshold = sconfs["pairs"].get("exhaustive_if_less")
    by_category = [CATEGORY_PAIRS[c] for c in scene.categories if c in CATEGORY_PAIRS]
    if by_category and by_category[0] != sconfs["pairs"]["method"]:
        logger.info("scene %s (%s): %s pairs", scene.key, ";".join(scene.categories), by_category[0])
        return {**sconfs, "pairs": merge_conf(pairs.confs[by_category[0]], {})}
    if threshold and len(scene.image_names) < threshold:
        return {**sconfs, "pairs": merge_conf(pairs.confs["exhaustive"], {})}
    return sconfs


@dataclass(frozen=True)
class ScenePaths:
    """Where each stage writes for one scene; names carry the configs, so configs never collide.

    With an ensemble, `features` / `matches` are the merged files and `sources` each extractor's own
    (features, matches) files; with one extractor they are `sources[0]`.
    """

    root: Path
    pairs: Path  # every pair the pairs stage keeps (VLAD: chosen again on the turned photos)
    candidates: Path  # the pairs the orientation stage tries (VLAD: over the photos as stored), else `pairs`
    descriptors: Path  # DINOv2's global descriptors
    orientation: Path  # quarter turns per photo (orientation.csv), with its side files below
    match_pairs: Path  # the pairs to match: all, or those that overlap at low resolution (prefilter)
    sources: tuple[tuple[Path, Path], ...]
    features: Path
    matches: Path
    sfm: Path

    @property
    def turned(self) -> Path:
        """The orientation stage's features of turned photos, which the features stage copies."""
        return orientation.turned_path(self.orientation)

    @property
    def orientation_matches(self) -> Path:
        """The orientation stage's matches of photos as stored, which the matching stage copies."""
        return orientation.matches_path(self.orientation)

    @property
    def overlaps(self) -> Path:
        """The orientation stage's low-resolution match counts per pair (the prefilter's input)."""
        return orientation.overlap_path(self.orientation)


@dataclass(frozen=True)
class ScenePlan:
    """One scene's run, decided before it starts: its stage confs (`scene_confs`) and its files."""

    scene: data.Scene
    confs: dict
    paths: ScenePaths
    weights: str | None = None  # the networks' weights folder ($IMC_WEIGHTS_DIR when None)

    @property
    def fconfs(self) -> list[dict]:
        """Every extractor's features conf: the main one first, then an ensemble's others."""
        return [self.confs["features"], *self.confs["also"]]

    @property
    def names(self) -> list[str]:
        return list(self.scene.image_names)


def plan_scene(scene: data.Scene, sconfs: dict, work_dir: Path, weights=None) -> ScenePlan:
    """The plan of `scene` under the run's stage confs `sconfs` (its own confs: `scene_confs`)."""
    confs = scene_confs(sconfs, scene)
    return ScenePlan(scene, confs, _scene_paths(work_dir, scene, confs), None if weights is None else str(weights))


def _scene_paths(work_dir: Path, scene: data.Scene, sconfs: dict) -> ScenePaths:
    """Where each stage of `sconfs` writes for `scene` (use `plan_scene`, which resolves the scene's confs first)."""
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
    return ScenePaths(
        root=root,
        pairs=all_pairs,
        # The pairs the orientation stage tries: VLAD over the photos as stored (the final VLAD pairs
        # come from the turned photos); other methods do not see turns, so the same file.
        candidates=all_pairs.with_name(all_pairs.stem + "-as-stored.txt")
        if sconfs["pairs"]["method"] == "vlad" and sconfs["orientation"]
        else all_pairs,
        descriptors=root / f"{sconfs['pairs']['output']}-global.h5",
        orientation=orientation_file,
        match_pairs=root / f"{pairs_name}.txt",  # the pairs to match: all, or those that overlap
        sources=tuple(sources),
        features=merged[0],
        matches=merged[1],
        sfm=root / f"{sconfs['reconstruction']['output']}_{feats}_{match}_{pairs_name}",
    )
