"""Every scene of a folder through the runner, and what the run leaves: submission.csv (or a plain
folder's export), the run's record and its report. Also the time guard, which plans each scene's
keypoints and pairs from the last one's times.

The stages and their files: runner.py (declarations) and plan.py (confs, paths).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from .execution import budget
from .execution.executor import LocalExecutor
from .formats import data, report, submission
from .formats import export as export_mod
from .networks import Networks, WeightsError, local_dinov2
from .plan import Options, ScenePlan, choose_pairs, competition, plan_scene, resolve
from .runner import _Clock, run_scene
from .stages import features, matching
from .storage import io, lock
from .utils import ImageError, read_image, usable_device

logger = logging.getLogger(__name__)


def run(
    data_dir: Path,
    out: Path,
    work_dir: Path,
    split: str = "train",
    scenes: list[str] | None = None,
    networks: dict | None = None,
    executor=None,
    **options,
) -> dict:
    """Reconstruct every scene of `data_dir`/`split` and write `out` (submission.csv), then the run's
    record (`WORK/run.json`, report.RUN_RECORD) and its report (`report.html` beside `out`).

    A plain folder of photos (`data.layout` "folder"): `out` is a folder for the export's files and
    the report (export.py), no submission. `options`: plan.Options' fields. `networks`: a dict the
    caller keeps between runs, whose loaded networks the next run reuses.

    A scene that fails is logged and still gets its rows (no pose); the run goes on. Returns
    {"scenes": {key: SceneOutcome}, "times": {stage: seconds}, "submission": out (None for a plain folder),
    "export", "report", "confs": the stage confs}.
    """
    opts, executor = Options(**options), executor or LocalExecutor()
    data_dir, work_dir, folder = _folders(data_dir, work_dir, split, opts, executor)
    scene_list = data.load_scenes(data_dir, split, scenes)
    _writable(out, work_dir, folder, opts.export)  # once the photos are known to be there
    networks = {} if networks is None else networks
    method = choose_pairs(opts.pairs, scene_list, opts.dinov2, networks)
    device = usable_device(opts.device)  # a GPU that cannot run kernels: CPU settings, loudly
    sconfs = resolve(opts, device, pairs=method)
    nets = Networks(opts.weights, device, networks)
    guard = _guard(opts.time_limit, sconfs, method, scene_list, nets)
    where = "a plain folder" if folder else split
    logger.info("%d scene(s) from %s (%s), device %s", len(scene_list), data_dir, where, device)
    live = None if folder or not (guard or executor.parallel) else Path(out)
    runs = _Runs(scene_list, live, guard, competition(scene_list))
    for job, outcome in executor.scenes(
        scene_task, _jobs(scene_list, guard, sconfs, opts, device, work_dir, runs), nets
    ):
        runs.add(job, outcome)
    return {**_finish(runs, scene_list, data_dir, work_dir, split, Path(out), opts, folder), "confs": sconfs}


def _finish(runs, scene_list, data_dir: Path, work_dir: Path, split: str, out: Path, opts, folder: bool) -> dict:
    """After the last scene: submission.csv (a competition layout), the export's files, the run's record
    and its report."""
    sub_path, export = (None, out) if folder else (out, opts.export)
    results = runs.results()
    if sub_path:
        with _Clock(runs.times)("submission"):
            submission.write_submission(runs.rows(), sub_path, runs.year)
    _warn_unposed(results)
    _export(scene_list, runs, export, folder)
    report_path = (out if folder else out.parent) / "report.html"
    record = {
        "data_dir": _absolute(data_dir),
        "split": None if folder else split,
        "competition": None if folder else runs.year,
        "conf": opts.features,
        "times": dict(runs.times),
        "submission": _absolute(sub_path),
        "export": _absolute(export),
        "scenes": [_scene_record(s, results[s.key], runs.sfm_dirs[s.key]) for s in scene_list],
    }
    write_record(work_dir, record, report_path)
    return {
        "scenes": results,
        "times": dict(runs.times),
        "submission": sub_path,
        "export": export,
        "report": report_path,
    }


def _folders(data_dir: Path, work_dir: Path, split: str, opts: Options, executor) -> tuple[Path, Path, bool]:
    """The run's photo and work folders (absolute for a parallel executor, whose machines see them by
    their full paths), and whether the photos are a plain folder; refuses what cannot run."""
    if opts.time_limit is not None and executor.parallel:
        raise ValueError("--time-limit plans each scene from the last one's times: run it without --executor ray")
    if executor.parallel:
        data_dir, work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
    folder = data.layout(data_dir, split) == "folder"
    if folder and Path(data_dir).resolve() in Path(work_dir).resolve().parents:
        raise ValueError(
            f"{work_dir}: the work folder is inside the photo folder {data_dir}, whose every photo at "
            "any depth is read; pass --work a folder outside it"
        )
    executor.check(data_dir, work_dir)
    return Path(data_dir), Path(work_dir), folder


def _writable(out: Path, work_dir: Path, folder: bool, export: Path | None) -> None:
    """Refuses an output or work path that is not a folder (a file, for a submission) that can be written."""
    writable_folder(work_dir, "--work")
    (writable_folder if folder else writable_file)(out, "--out")
    if export:
        writable_folder(export, "--export")


def writable_folder(path: Path, option: str) -> None:
    """Make the folder `path` (given as `option`), or a ValueError naming it and the fix: before any
    work starts, not when the first file is written hours later."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: is a file, and {option} needs a folder; pass {option} a new or existing folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as err:
        raise ValueError(
            f"{path}: cannot be written ({err.strerror or err}); pass {option} a folder you can write to"
        ) from None


def writable_file(path: Path, option: str) -> None:
    """`writable_folder` for the file `path`'s folder, and `path` itself no folder."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{path}: is a folder, and {option} names a file here; pass e.g. {option} {path}/submission.csv"
        )
    writable_folder(path.parent, option)


def _jobs(scene_list, guard, sconfs, opts: Options, device, work_dir: Path, runs):
    """Each scene's job, drawn one at a time by a local executor, so the guard plans each scene from the last."""
    for i, scene in enumerate(scene_list):
        confs, runs.settings[scene.key] = _planned_confs(guard, scene_list[i:], sconfs, opts, device)
        plan = confs and plan_scene(scene, confs, work_dir, opts.weights)
        yield SceneJob(scene, plan, opts.overwrite, guard and guard.deadline, opts.device)


def _export(scene_list: list[data.Scene], runs, export: Path | None, folder: bool) -> None:
    """The export's files (export.py) of every scene, when asked."""
    if not export:
        return
    with _Clock(runs.times)("export"):
        for scene in scene_list:
            export_mod.main(scene, runs.sfm_dirs[scene.key], Path(export) if folder else Path(export) / scene.key)


class _Runs:
    """What the scenes of a run gave, as they finish: results, submission rows, reconstruction folders,
    stage times; with `live_submission`, that file rewritten complete after every scene (placeholder
    rows for the scenes to come: a killed run still leaves one)."""

    def __init__(self, scenes: list[data.Scene], live_submission: Path | None, guard, year: str):
        self.scenes, self.live, self.guard, self.year = scenes, live_submission, guard, year
        self.times: dict[str, float] = defaultdict(float)
        self.by_key, self.by_rows, self.settings, self.sfm_dirs = {}, {}, {}, {}

    def add(self, job: SceneJob, outcome) -> None:
        scene = job.scene
        result, clusters = _lost(scene, outcome) if isinstance(outcome, BaseException) else outcome
        if self.guard and job.plan:
            self.guard.record(result.images, self.settings[scene.key], result.times)
        for stage, seconds in result.times.items():
            self.times[stage] += seconds
        self.by_key[scene.key], self.by_rows[scene.key] = result, _rows(scene, clusters)
        self.sfm_dirs[scene.key] = job.plan and job.plan.paths.sfm
        if self.live:
            submission.write_submission(self.rows(), self.live, self.year)

    def rows(self) -> list[dict]:
        return [r for s in self.scenes for r in self.by_rows.get(s.key, _rows(s, []))]

    def results(self) -> dict[str, SceneOutcome]:
        return {s.key: self.by_key[s.key] for s in self.scenes}


def _warn_unposed(results: dict[str, SceneOutcome]) -> None:
    failed = [k for k, r in results.items() if r.error]
    unregistered = sum(r.unposed for r in results.values())
    if failed or unregistered:
        logger.warning(
            "%d image(s) without a pose, %d scene(s) failed %s; their rows carry a placeholder pose",
            unregistered,
            len(failed),
            failed,
        )


def _absolute(path) -> str | None:
    return str(Path(path).resolve()) if path else None


def write_record(work_dir: Path, record: dict, report_path: Path) -> None:
    """The run's record in its work folder (what `imc-lib report WORK_DIR` reads) and the report made from it."""
    io.write_json(Path(work_dir) / report.RUN_RECORD, record)
    report.main(Path(work_dir), report_path)


def _scene_record(scene: data.Scene, result: SceneOutcome, sfm_dir: Path | None) -> dict:
    """What the report needs of one scene: its photos, where its models are, what the run found."""
    kept = {k: v for k, v in dataclasses.asdict(result).items() if k != "spans" and v is not None}
    kept["error"], kept["status"] = result.error, result.status
    return {
        "key": scene.key,
        "dataset": scene.dataset,
        "scene": scene.scene,
        "mixed": scene.mixed,
        "image_dir": _absolute(scene.image_dir),
        "photos": list(scene.image_names),
        "sfm": _absolute(sfm_dir),
        **kept,
    }


def _planned_confs(guard, scenes_left, sconfs, opts: Options, device) -> tuple[dict | None, budget.Setting | None]:
    """The stage configs for `scenes_left[0]` and the guard's setting for it: `sconfs` without a
    guard; None when the guard skips the scene."""
    if guard is None:
        return sconfs, None
    scene = scenes_left[0]
    setting = guard.setting({s.key: len(s.image_names) for s in scenes_left}, scene.key)
    if setting is None:
        return None, None
    return resolve(opts, device, max_keypoints=setting.max_keypoints, pairs=setting.pairs), setting


# Measured rates of one image's extraction and one pair's matching -> whole-pipeline rates: an image
# also costs reading, orientation tries and mapping; a pair is also matched by the orientation stage.
PER_IMAGE_FACTOR, PER_PAIR_FACTOR = 2.0, 2.0
# The time guard halves keypoints down to this many, no lower.
MIN_KEYPOINTS = 1024


def _guard(time_limit: float | None, sconfs: dict, method: str, scenes: list, nets: Networks) -> budget.Guard | None:
    """The run's time guard (None without a time limit), its first rates measured on this device (`_measure_costs`)."""
    if time_limit is None or not scenes:
        return None
    prior = _measure_costs(sconfs, scenes[0], nets)
    retrieval = method if method != "exhaustive" else ("dinov2" if local_dinov2() else "vlad")
    settings = budget.ladder(prior.keypoints, method, min(MIN_KEYPOINTS, prior.keypoints), retrieval=retrieval)
    logger.info(
        "time guard: %.0f s; rates %s; settings from %s down to %s", time_limit, prior, settings[0], settings[-1]
    )
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
    return budget.Costs(
        per_image=PER_IMAGE_FACTOR * (extracted - start) / max(len(feats), 1),
        per_pair=0.0,
        per_pair_match=PER_PAIR_FACTOR * (matched - extracted),
        keypoints=fconf["model"]["max_num_keypoints"],
        exponent=default.exponent,
    )


def _rows(scene: data.Scene, clusters: list[dict]) -> list[dict]:
    """A scene's submission rows: every cluster of a mixed folder, or an IMC 2024 scene's one model."""
    if scene.mixed:
        return submission.scene_rows(scene, {}, clusters)
    return submission.scene_rows(scene, clusters[0] if clusters else {})


@dataclasses.dataclass(frozen=True)
class SceneJob:
    """One scene's work as an executor carries it: its plan (paths, names and confs), nothing loaded.
    `plan` None: the time guard skipped it. `device`: as asked (a Ray worker picks its own from it)."""

    scene: data.Scene
    plan: ScenePlan | None
    overwrite: bool
    deadline: float | None
    device: str | None


def scene_task(job: SceneJob, nets: Networks, executor) -> tuple[SceneOutcome, list[dict]]:
    """What an executor runs for one scene: `_run_one` on `nets`, large scenes sharded on `executor`."""
    return _run_one(job.scene, job.plan, nets, job.overwrite, job.deadline, executor)


@dataclasses.dataclass
class SceneOutcome:
    """What one scene of a run gave: its photos and those registered, what joining the mapper's models did
    (reconstruction.summary), its stage times; a failure's `error`, or the reason it was `skipped` (the time
    guard's decision, not a failure). A mixed folder also counts its clusters and outliers."""

    images: int
    registered: int = 0
    error: str | None = None
    skipped: str | None = None
    times: dict[str, float] = dataclasses.field(default_factory=dict)
    spans: list = dataclasses.field(default_factory=list)  # (stage, start, end) in time.perf_counter seconds
    models: dict = dataclasses.field(default_factory=dict)
    shards: dict = dataclasses.field(default_factory=dict)  # stage -> {"reused", "computed"} shards
    clusters: int | None = None  # mixed folders only
    outliers: int | None = None  # mixed folders only: photos in no cluster

    @property
    def unposed(self) -> int:
        """Photos with a placeholder pose: not registered, and not an outlier of a mixed folder."""
        return self.images - self.registered - (self.outliers or 0)

    @property
    def status(self) -> str:
        return self.error or (f"skipped: {self.skipped}" if self.skipped else "ok")


def _lost(scene: data.Scene, err: BaseException) -> tuple[SceneOutcome, list[dict]]:
    """A scene whose task was lost (its worker died, after every retry): recorded as failed, no poses."""
    logger.error("scene %s lost: %s; its %d images get rows without a pose", scene.key, err, len(scene.image_names))
    error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return SceneOutcome(len(scene.image_names), error=error), []


def _run_one(scene, plan, nets, overwrite, deadline=None, executor=None) -> tuple[SceneOutcome, list[dict]]:
    """`run_scene`, with a failure logged and recorded instead of raised (set-up problems excepted);
    returns the scene's outcome and its clusters' poses (largest first; one for an IMC 2024 scene).
    `plan` None: a scene the time guard skipped."""
    names = list(scene.image_names)
    logger.info("scene %s: %d images", scene.key, len(names))
    result, clusters = SceneOutcome(len(names)), []
    if plan is None:
        result.skipped = "time limit"
        return result, clusters
    try:
        with lock.scene_lock(plan.paths.root):  # another run on this scene stops this one
            out = run_scene(plan, nets, overwrite, deadline, executor=executor)
        clusters = out.clusters  # the largest only for an IMC 2024 scene (its conf keeps one)
        result.times, result.spans, result.models, result.shards = out.times, out.spans, out.models, out.shards
    except (WeightsError, lock.SceneLockedError):
        raise  # set-up problems, not the scene's: missing weights fail every scene; a busy folder is another run's
    except budget.OutOfTime as err:
        logger.warning("scene %s: %s; its %d images get placeholder rows", scene.key, err, len(names))
        result.skipped = str(err)
    except Exception as err:  # one bad scene must not cost the others their poses
        logger.exception("scene %s failed: %s; its %d images get rows without a pose", scene.key, err, len(names))
        result.error = f"{type(err).__name__}: {err}"
    finally:
        if nets.device.type == "cuda":
            torch.cuda.empty_cache()
    placed = set().union(*clusters)
    result.registered = sum(n in placed for n in names)
    if scene.mixed:  # photos in no cluster are its outliers, not failures
        result.clusters, result.outliers = len(clusters), len(names) - result.registered
    if result.status == "ok":  # the scene's summary line, whatever shows the stages' progress
        times = ", ".join(f"{k} {v:.1f} s" for k, v in result.times.items())
        logger.info("scene %s: %d of %d images registered in %.1f s (%s)", scene.key, result.registered,
                    len(names), sum(result.times.values()), times)  # fmt: skip
    return result, clusters
