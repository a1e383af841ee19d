"""One scene's stages as declarations, and the one runner that walks them.

Each `Stage` states its name, when it applies, what it reads (side files too), what it writes, the
part of the plan it depends on, and how it runs. From these alone the runner knows:
- which stage depends on which (a stage reads a file an earlier one writes);
- each stage's fingerprint: its conf part and the fingerprints of its inputs (the photos' content, or
  the stage that wrote the file), so a changed photo or conf changes it and everything after it;
- after a stage runs, the stamp it leaves in `WORK/<scene>/stages.json`; `status(plan)` compares those
  stamps with what the plan expects: the app's "up to date / stale" view.

The stages' own files keep their finer stamps (per photo, per pair, per file: io.stamp), which decide
what a rerun computes again; the declarations' stamps only say what is up to date as a whole.

VLAD pairs and the `mnn` orientation read the main features as stored, so with those `extract` runs
before `pairs`; photos the orientation turns are then extracted at their turn by `features`, or copied
from what the orientation stage extracted while trying turns.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pycolmap

from .execution import budget, shards
from .execution.executor import LocalExecutor
from .networks import Networks, lightglue_key
from .plan import ScenePaths, ScenePlan
from .stages import ensemble, features, matching, orientation, pairs, reconstruction
from .storage import io
from .storage.io import read_pairs, stamp_path, write_pairs

logger = logging.getLogger(__name__)

PHOTOS = "photos"  # an input that is no stage's file: the scene's photos, by their content
STAMPS = "stages.json"  # in the scene's folder: {"<stage>:<its first output's name>": fingerprint}


@dataclass(frozen=True)
class Stage:
    """A stage of one scene: what it reads and writes, and how it runs (`run(ctx)`, a `_Context`).

    `outputs(plan)[0]` is the file whose presence says the stage ran; `clock` names its times' key
    (a first extraction counts as "features"). Side files (`orientation`'s turned features, matches
    and overlaps) are declared where they are written and where they are read."""

    name: str
    applies: Callable[[ScenePlan], bool]
    inputs: Callable[[ScenePlan], list]
    outputs: Callable[[ScenePlan], list[Path]]
    conf: Callable[[ScenePlan], object]
    run: Callable[..., None]
    clock: str = ""


def _always(plan: ScenePlan) -> bool:
    return True


def _first_extraction(plan: ScenePlan) -> bool:
    oconf = plan.confs["orientation"]
    return plan.confs["pairs"]["method"] == "vlad" or bool(oconf and oconf["features"] is None)


def _main_features(plan: ScenePlan) -> Path:
    return plan.paths.sources[0][0]


def _pairs_inputs(plan: ScenePlan) -> list:
    return [PHOTOS, _main_features(plan)] if plan.confs["pairs"]["method"] == "vlad" else [PHOTOS]


def _pairs_outputs(plan: ScenePlan) -> list[Path]:
    retrieval = plan.confs["pairs"]["method"] == "retrieval"
    return [plan.paths.candidates, *([plan.paths.descriptors] if retrieval else [])]


def _orientation_inputs(plan: ScenePlan) -> list:
    own_features = plan.confs["orientation"]["features"] is not None
    return [PHOTOS, plan.paths.candidates, *([] if own_features else [_main_features(plan)])]


def _orientation_outputs(plan: ScenePlan) -> list[Path]:
    p = plan.paths
    prefilter = plan.confs["orientation"].get("prefilter_min_matches") is not None
    return [p.orientation, p.turned, p.orientation_matches, p.overlaps, *([p.match_pairs] if prefilter else [])]


def _features_inputs(plan: ScenePlan) -> list:
    return [PHOTOS, plan.paths.orientation, plan.paths.turned] if plan.confs["orientation"] else [PHOTOS]


def _pairs_again(plan: ScenePlan) -> bool:
    """VLAD pairs with an orientation stage: chosen again on the photos as turned."""
    return plan.paths.pairs != plan.paths.candidates


def _matching_inputs(plan: ScenePlan) -> list:
    side = [plan.paths.orientation_matches] if plan.confs["orientation"] else []
    return [plan.paths.match_pairs, *(f for f, _ in plan.paths.sources), *side]


def _merge_inputs(plan: ScenePlan) -> list:
    return [plan.paths.match_pairs, *(p for source in plan.paths.sources for p in source)]


def stage(name: str) -> Stage:
    """The declaration named `name`."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"{name!r}: not a stage; stages: {[s.name for s in STAGES]}")


def planned(plan: ScenePlan) -> list[Stage]:
    """The stages that apply to `plan`, in order."""
    return [s for s in STAGES if s.applies(plan)]


def fingerprints(plan: ScenePlan) -> dict[str, str]:
    """stage name -> the fingerprint its stamp must carry for `plan`: its conf part and its inputs'
    fingerprints (the photos' content; a file: the fingerprint of the last stage before it that writes it)."""
    fps: dict[str, str] = {}
    writer: dict[Path, str] = {}  # file -> the stage that wrote it last
    photos = io.digest(PHOTOS, io.image_digests(plan.scene.image_dir, plan.names))
    for s in planned(plan):
        made_from = [photos if i == PHOTOS else fps.get(writer.get(Path(i)), "outside") for i in s.inputs(plan)]
        fps[s.name] = io.digest(s.name, s.conf(plan), made_from)
        writer.update({Path(o): s.name for o in s.outputs(plan)})
    return fps


def _stamp_key(plan: ScenePlan, s: Stage) -> str:
    return f"{s.name}:{Path(s.outputs(plan)[0]).name}"


def stamps(plan: ScenePlan) -> dict[str, str]:
    """What the runner stamped for this scene (every config's stages; see `status`)."""
    path = plan.paths.root / STAMPS
    return io.read_json(path) if path.is_file() else {}


def status(plan: ScenePlan) -> dict[str, bool]:
    """stage name -> whether it is up to date for `plan`: stamped with its fingerprint, its first output
    there, and every stage whose file it reads up to date."""
    fps, done = fingerprints(plan), stamps(plan)
    writer: dict[Path, str] = {}
    current: dict[str, bool] = {}
    for s in planned(plan):
        upstream = [current[writer[Path(i)]] for i in s.inputs(plan) if i != PHOTOS and Path(i) in writer]
        own = done.get(_stamp_key(plan, s)) == fps[s.name] and Path(s.outputs(plan)[0]).exists()
        current[s.name] = own and all(upstream)
        writer.update({Path(o): s.name for o in s.outputs(plan)})
    return current


def ran(plan: ScenePlan) -> dict[str, bool]:
    """stage name -> whether the runner stamped it for this plan's files at all (maybe for other inputs)."""
    done = stamps(plan)
    return {s.name: _stamp_key(plan, s) in done for s in planned(plan)}


def stale_outputs(plan: ScenePlan, names: list[str]) -> list[Path]:
    """The files that the stages `names` write and that exist although those stages are not up to date
    (a file an up-to-date stage also writes, as `extract` and `features` the main features, is not)."""
    current = status(plan)
    kept = {Path(o) for s in planned(plan) if current[s.name] for o in s.outputs(plan)}
    found = [o for s in planned(plan) if s.name in names and not current[s.name] for o in s.outputs(plan)]
    return list(dict.fromkeys(p for p in found if Path(p).exists() and Path(p) not in kept))


def _record(plan: ScenePlan, s: Stage, fingerprint: str) -> None:
    """Stamp a stage done (a rerun that finds it stamped writes nothing)."""
    done = stamps(plan)
    if done.get(_stamp_key(plan, s)) != fingerprint:
        io.write_json(plan.paths.root / STAMPS, {**done, _stamp_key(plan, s): fingerprint})


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


@dataclass
class SceneRun:
    """What one scene's stages gave (`run_scene`): the largest model and its poses ({name: (R, t)}), every
    kept model's poses (`clusters`, largest first), what joining the mapper's models did (`models`:
    reconstruction.summary), the stage times and spans, the plan's paths, the shards' counts."""

    paths: ScenePaths
    poses: dict = field(default_factory=dict)
    model: pycolmap.Reconstruction | None = None
    clusters: list[dict] = field(default_factory=list)
    models: dict = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    spans: list = field(default_factory=list)
    shards: dict = field(default_factory=dict)


def run_scene(
    plan: ScenePlan,
    nets: Networks,
    overwrite: bool = False,
    deadline: float | None = None,
    progress=None,
    until: str | None = None,
    executor=None,
) -> SceneRun:
    """One scene through its stages, in order; returns what they gave (SceneRun).

    Stages reuse what their files hold (unless `overwrite`). `deadline` (time.monotonic seconds) is
    checked between stages and inside extraction and matching: past it, budget.OutOfTime.
    `progress(stage, done, total)`: called as each stage goes (total None where not known ahead).
    `until`: a stage's name; stop after it (no poses; where it does not apply, where it would
    have run), as the app does to run one step at a time.
    `executor` (default local): where a large scene extracts and matches, in shards (shards.py).
    """
    last = STAGES.index(stage(until)) if until is not None else len(STAGES)
    executor = executor or LocalExecutor()
    sharded = executor.shards(len(plan.scene.image_names))
    with executor.pool(nets) if sharded else contextlib.nullcontext() as pool:
        ctx = _Context(plan, nets, overwrite, deadline, progress, pool, executor.sharding)
        fps = fingerprints(plan)
        for s in [s for s in planned(plan) if STAGES.index(s) <= last]:
            budget.check(deadline, f"scene {plan.scene.key}, before {s.name}")
            with ctx.clock(s.clock or s.name):
                s.run(ctx)
            _record(plan, s, fps[s.name])
    return ctx.out


class _Context:
    """What the stages of one scene's run share: the plan, the networks, the clock, progress, the
    shards' pool; `out` is what `run_scene` returns."""

    def __init__(self, plan: ScenePlan, nets, overwrite, deadline, progress, pool=None, sharding=None):
        self.plan, self.paths, self.confs, self.names = plan, plan.paths, plan.confs, plan.names
        self.nets, self.overwrite, self.deadline = nets, overwrite, deadline
        self.out = SceneRun(plan.paths)
        self.pool, self.sharding = pool, sharding  # where a large scene's shards run, and their sizes
        self.clock = _Clock(self.out.times, self.out.spans)
        self.fresh = overwrite  # a file is overwritten once per run, not again by a later stage
        self.turns = None
        self._progress = progress

    def report(self, stage: str):
        """The callback(done, total, desc) a stage's loop gets, telling `progress` the stage's name."""
        if self._progress is None:
            return None
        return lambda done, total, desc=None: self._progress(stage, done, total)

    def count(self, stage: str, counts: dict) -> None:
        total = self.out.shards.setdefault(stage, {"reused": 0, "computed": 0})
        for key, value in counts.items():
            total[key] += value

    def extract(self, fconf: dict, feature_path: Path, turns: dict | None) -> None:
        """One extractor's features (a large scene in shards on the executor's pool)."""
        main, reuse, image_dir = fconf is self.plan.confs["features"], self.paths.turned, self.plan.scene.image_dir
        overwrite = self.fresh if main else self.overwrite
        if self.pool is not None:
            self.count(
                "features",
                shards.extract(
                    self.pool,
                    fconf,
                    image_dir,
                    self.names,
                    feature_path,
                    overwrite,
                    turns,
                    reuse,
                    self.sharding["photos"],
                ),
            )
        else:
            features.main(
                fconf,
                image_dir,
                self.names,
                feature_path,
                self.nets.device,
                overwrite,
                network=self.nets.extractor(fconf),
                turns=turns,
                deadline=self.deadline,
                reuse=reuse,
                progress=self.report("features"),
            )
        if main:
            self.fresh = False

    def select_pairs(self, path: Path) -> None:
        pconf = self.confs["pairs"]
        pairs.main(
            pconf,
            self.plan.scene.image_dir,
            self.names,
            path,
            self.paths.descriptors,
            self.nets.device,
            self.overwrite,
            network=self.nets.retrieval(pconf),
            feature_path=_main_features(self.plan),
            progress=self.report("pairs"),
        )


def _extract(ctx: _Context) -> None:
    """The main features as stored (at the orientation's turns where a finished file holds them: a
    rerun keeps turned features as they are), for VLAD and the `mnn` orientation."""
    oconf, path = ctx.confs["orientation"], ctx.paths.orientation
    done = orientation.read_orientations(path) if oconf and not ctx.overwrite and path.exists() else None
    ctx.extract(ctx.confs["features"], _main_features(ctx.plan), done)


def _pairs(ctx: _Context) -> None:
    ctx.select_pairs(ctx.paths.candidates)


def _orientation(ctx: _Context) -> None:
    """Each photo's quarter turns (and, with a prefilter, the pairs to match)."""
    oconf, fconf, paths, nets = ctx.confs["orientation"], ctx.confs["features"], ctx.paths, ctx.nets
    ofeatures = oconf["features"] or fconf
    orientation.main(
        oconf,
        ctx.plan.scene.image_dir,
        ctx.names,
        paths.candidates,
        paths.orientation,
        nets.device,
        ctx.overwrite,
        extractor=nets.extractor(ofeatures),
        matcher=nets.matcher(ofeatures, oconf["matching"]),
        weights=nets.weights,
        feature_path=_main_features(ctx.plan),
        features_conf=fconf,
        progress=ctx.report("orientation"),
    )
    if oconf.get("prefilter_min_matches") is not None:
        kept = orientation.overlapping_pairs(paths.orientation, oconf["prefilter_min_matches"])
        write_pairs(kept, paths.match_pairs)
        logger.info(
            "scene %s: %d of %d pairs overlap at low resolution",
            ctx.plan.scene.key,
            len(kept),
            len(read_pairs(paths.candidates)),
        )
    ctx.turns = orientation.read_orientations(paths.orientation)


def _turns(ctx: _Context) -> dict[str, int] | None:
    if ctx.confs["orientation"] and ctx.turns is None:  # a run that starts after the orientation stage
        ctx.turns = orientation.read_orientations(ctx.paths.orientation)
    return ctx.turns


def _features(ctx: _Context) -> None:
    """Every extractor's features at the photos' turns."""
    for fconf, (feature_path, _) in zip(ctx.plan.fconfs, ctx.paths.sources):
        ctx.extract(fconf, feature_path, _turns(ctx))


def _select_again(ctx: _Context) -> None:
    """The pairs to match: VLAD again on the photos as turned, the candidates where none turned."""
    paths = ctx.paths
    if any((_turns(ctx) or {}).values()):
        ctx.select_pairs(paths.pairs)
    elif ctx.overwrite or not paths.pairs.exists() or read_pairs(paths.pairs) != read_pairs(paths.candidates):
        # nothing turned: VLAD would pick the same pairs; unstamped, so a later VLAD run redoes them
        stamp_path(paths.pairs).unlink(missing_ok=True)
        write_pairs(read_pairs(paths.candidates), paths.pairs)


def _matching(ctx: _Context) -> None:
    """Every extractor's matches; pairs whose photos stay upright copied from the `mnn` orientation's
    (the same features and matcher: fingerprints decide, so other extractors' pairs are matched); then,
    for a matcher with a rescue, LightGlue on the weakly tied photos' pairs (matching.rescue)."""
    mconf, paths, nets = ctx.confs["matching"], ctx.paths, ctx.nets
    for fconf, (feature_path, match_path) in zip(ctx.plan.fconfs, paths.sources):
        if ctx.pool is not None:  # a large scene: in shards on the executor's pool
            counts = shards.match(
                ctx.pool,
                mconf,
                fconf,
                paths.match_pairs,
                feature_path,
                match_path,
                ctx.overwrite,
                ctx.sharding["pairs"],
                paths.orientation_matches,
            )
            ctx.count("matching", counts)
        else:
            matching.main(
                mconf,
                paths.match_pairs,
                feature_path,
                match_path,
                lightglue_key(fconf),
                nets.device,
                ctx.overwrite,
                network=nets.matcher(fconf, mconf),
                deadline=ctx.deadline,
                reuse=paths.orientation_matches,
                progress=ctx.report("matching"),
            )
        if mconf.get("rescue"):
            matching.rescue(
                mconf,
                paths.match_pairs,
                feature_path,
                match_path,
                lightglue_key(fconf),
                nets.device,
                network=nets.matcher(fconf, {"model": mconf["rescue"]["model"]}),
                deadline=ctx.deadline,
                progress=ctx.report("matching"),
            )


def _merge(ctx: _Context) -> None:
    """An ensemble's keypoints and matches merged into one set."""
    paths = ctx.paths
    ensemble.main(
        ensemble.confs["merge"],
        ctx.names,
        paths.match_pairs,
        paths.sources,
        paths.features,
        paths.matches,
        ctx.overwrite,
        progress=ctx.report("merge"),
    )


def _reconstruction(ctx: _Context) -> None:
    paths = ctx.paths
    model = reconstruction.main(
        ctx.confs["reconstruction"],
        ctx.plan.scene.image_dir,
        ctx.names,
        paths.match_pairs,
        paths.features,
        paths.matches,
        paths.sfm,
        ctx.overwrite,
        progress=ctx.report("reconstruction"),
    )
    clusters = reconstruction.clusters(paths.sfm) if model is not None else []
    ctx.out.poses, ctx.out.model = reconstruction.poses(model), model
    ctx.out.clusters = [reconstruction.poses(c) for c in clusters]
    ctx.out.models = reconstruction.summary(paths.sfm)


# The stages of a scene, in the order the runner runs them.
STAGES: tuple[Stage, ...] = (
    Stage(
        name="extract",
        applies=_first_extraction,
        inputs=lambda p: [PHOTOS],
        outputs=lambda p: [_main_features(p)],
        conf=lambda p: [p.confs["features"], p.weights],
        run=_extract,
        clock="features",
    ),
    Stage(
        name="pairs",
        applies=_always,
        inputs=_pairs_inputs,
        outputs=_pairs_outputs,
        conf=lambda p: p.confs["pairs"],
        run=_pairs,
    ),
    Stage(
        name="orientation",
        applies=lambda p: bool(p.confs["orientation"]),
        inputs=_orientation_inputs,
        outputs=_orientation_outputs,
        conf=lambda p: [p.confs["orientation"], p.confs["features"], p.weights],
        run=_orientation,
    ),
    Stage(
        name="features",
        applies=_always,
        inputs=_features_inputs,
        outputs=lambda p: [f for f, _ in p.paths.sources],
        conf=lambda p: [p.fconfs, p.weights],
        run=_features,
    ),
    Stage(
        name="pairs-again",
        applies=_pairs_again,
        inputs=lambda p: [PHOTOS, *(f for f, _ in p.paths.sources)],
        outputs=lambda p: [p.paths.pairs],
        conf=lambda p: p.confs["pairs"],
        run=_select_again,
        clock="pairs",
    ),
    Stage(
        name="matching",
        applies=_always,
        inputs=_matching_inputs,
        outputs=lambda p: [m for _, m in p.paths.sources],
        conf=lambda p: [p.confs["matching"], p.weights],
        run=_matching,
    ),
    Stage(
        name="merge",
        applies=lambda p: len(p.fconfs) > 1,
        inputs=_merge_inputs,
        outputs=lambda p: [p.paths.features, p.paths.matches],
        conf=lambda p: ensemble.confs["merge"],
        run=_merge,
    ),
    Stage(
        name="reconstruction",
        applies=_always,
        inputs=lambda p: [PHOTOS, p.paths.match_pairs, p.paths.features, p.paths.matches],
        outputs=lambda p: [p.paths.sfm],
        conf=lambda p: p.confs["reconstruction"],
        run=_reconstruction,
    ),
)
# The keys of a scene's "times", in the order their stages first run (what benchmarks print).
TIMES = tuple(dict.fromkeys(s.clock or s.name for s in STAGES))
