"""COLMAP database from features + matches, geometric verification and mapping (pycolmap) -> `sfm/`.

sfm/database.db   cameras (from image size / EXIF), keypoints, raw matches, verified geometries
sfm/models/N/     every model the mapper found
sfm/models-held/  the same with radial distortion held at zero (a second try; see remap_held_below)
sfm/clusters/K/   the final models, largest first: the mapper's parts of one scene joined and left-out
                  photos registered (imc_lib/stages/joining.py); IMC 2025 folders keep several
sfm/model/        the largest of them (what an IMC 2024 submission reads)
sfm/summary.json  models and registered photos before and after the joining
sfm.fingerprint   what the folder was made from (`fingerprint`: the features and matches it read, the
                  pairs, the conf); a rerun whose inputs differ rebuilds database and model from scratch

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pycolmap
from PIL import ExifTags

from ..execution.progress import report as report_progress
from ..storage import io
from ..utils import colmap_image_dir, full_conf, merge_conf, open_image
from . import checks, joining

logger = logging.getLogger(__name__)

confs = {
    "incremental": {
        "output": "sfm",
        "mapper": "incremental",
        # "shared": one camera per group of images with the same size and EXIF camera/focal length;
        # or a pycolmap CameraMode: auto | single | per_image | per_folder
        "camera_mode": "shared",
        "camera_model": "SIMPLE_RADIAL",
        # 30 verified inliers, not 15: chance matches on plain backgrounds otherwise pass as
        # geometry and derail mapping (temple: 0.08-0.58 mAA over seeds -> 0.58-0.60).
        "verification": {"min_num_inliers": 30, "ransac": {"max_num_trials": 20000, "min_inlier_ratio": 0.1}},
        "options": {"min_model_size": 3, "ba_refine_principal_point": False},
        # When the mapper's largest model registers fewer than this share of the photos, map again with
        # radial distortion held at zero (HELD_DISTORTION) and keep that mapping unless its largest
        # model registers fewer (judged before joining: `_final_clusters`).
        # Refined as each photo joins, distortion can run away on narrow-angle photos (dino-full, focal
        # ~5x the image width: k = 2.1) and the scene breaks into dozens of small models: 13 of 363
        # photos registered, 350 held (mAA 0.026 -> 0.836); 100 of its photos: 67 -> 95 (0.555 ->
        # 0.847). Held from the start everywhere, it costs elsewhere (imc-mini temple 0.910 -> 0.897,
        # fox 0.936 -> 0.926), so it is the second try of scenes that left photos out. None: map once.
        "remap_held_below": 0.9,
        # What becomes of the mapper's models (imc_lib/stages/joining.py): "one" joins the parts of one scene
        # into the largest model and registers what was left out (IMC 2024: a folder is a scene);
        # "all" keeps every model as a cluster of its own unless geometry joins it to another (IMC 2025).
        "keep": "one",
        "scenes": {},  # over joining.confs["join"]: join_share, max_passes, min_cluster_size
        # The final models are refined once more keeping only observations within this many pixels
        # (the mapper filters at 4). Measured on the mapper's models of every scene we have: mAA
        # imc-mini entry 0.952 -> 0.976, temple 0.910 -> 0.974 (rot 0.885 -> 0.936), temple-ring
        # 0.989 -> 1.000, dino-full 0.875 -> 0.921, fox 0.940 -> 0.936 (0.933 at 1, 1.25 and 2 px),
        # the rest kept. None: skip.
        "final_max_reproj_error": 1.5,
        "seed": 0,
    },
}
# IMC 2025: a folder holds several scenes and outliers; every cluster is kept, photos in none are outliers.
confs["clusters"] = {**confs["incremental"], "output": "sfm-clusters", "keep": "all"}
# pycolmap's global mapper (GLOMAP): rotation averaging + global positioning, then bundle adjustment.
confs["global"] = {**confs["incremental"], "output": "sfm-global", "mapper": "global", "options": {"min_model_size": 3}}
HELD_DISTORTION = {"ba_refine_extra_params": False, "mapper": {"abs_pose_refine_extra_params": False}}
# What `main` reports to its progress callback, in order (then "model written").
STEPS = ("COLMAP database", "geometric verification", "mapping")

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name or mapper), else over incremental; nested dicts (verification, options) key by key.
DEFAULT_BY = ("output", "mapper")
# The joining's settings this conf gives at its top level ("keep", "final_max_reproj_error"), not in "scenes".
OWN_JOIN_KEYS = ("keep", "final_max_reproj_error")


def resolved(conf: dict | None) -> dict:
    """`conf` over the default it names, with every default this stage reads from other modules made
    part of it: the joining's settings ("scenes", over joining.confs["join"]), the thresholds of their
    checks ("scenes"/"check", over checks.confs["check"]) and the held-distortion mapping's options
    ("held_distortion", over HELD_DISTORTION). So each is in the fingerprint: a changed value, or an
    edited module default, maps again instead of serving the old model. The plan resolves its confs so."""
    conf = full_conf(confs, conf, DEFAULT_BY)
    given = conf.get("scenes") or {}
    scenes = merge_conf({k: v for k, v in joining.confs["join"].items() if k not in OWN_JOIN_KEYS}, given)
    scenes["check"] = merge_conf(checks.confs["check"], scenes.get("check"))
    return {**conf, "scenes": scenes, "held_distortion": merge_conf(HELD_DISTORTION, conf.get("held_distortion"))}


def camera_groups(image_dir: Path, image_names: list[str]) -> list[list[str]]:
    """Images that plausibly share intrinsics: same size, same EXIF make, model and focal length.

    Shared intrinsics are far better constrained than one camera per image (imc-mini: entry
    0.81 -> 1.00 mAA); photos from different phones or zoom settings differ in EXIF or size.
    """
    groups: dict[tuple, list[str]] = {}
    for name in image_names:
        with open_image(Path(image_dir) / name) as im:  # the header only, whatever the photo's size
            exif = im.getexif()
            focal = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.FocalLength)
            key = (im.size, exif.get(ExifTags.Base.Make), exif.get(ExifTags.Base.Model), str(focal))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def create_database(
    conf: dict,
    image_dir: Path,
    image_names: list[str],
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    database_path: Path,
    colmap_dir: Path | None = None,
) -> tuple[int, int]:
    """Fresh COLMAP database with cameras, keypoints and the matches of every kept pair; returns the
    numbers of images and of matched pairs written. Images without keypoints (unreadable, blank)
    are left out. Photos too large for COLMAP to decode whole reach it reduced, from `colmap_dir`
    (default: `images/` beside the database; utils.colmap_image_dir), their cameras and keypoints
    at that size."""
    if database_path.exists():
        database_path.unlink()
    with io.FeatureReader(feature_path, size=1) as reader:
        keypoints = {n: reader[n]["keypoints"] for n in image_names}
    image_names = [n for n in image_names if len(keypoints[n])]
    pycolmap.Database.open(database_path).close()  # import_images needs the file to exist
    if not image_names:
        return 0, 0
    colmap_dir, scales = colmap_image_dir(image_dir, image_names, colmap_dir or database_path.parent / "images")
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = conf["camera_model"]
    if conf["camera_mode"] == "shared":
        for group in camera_groups(image_dir, image_names):
            pycolmap.import_images(database_path, colmap_dir, pycolmap.CameraMode.SINGLE, group, reader)
    else:
        mode = getattr(pycolmap.CameraMode, conf["camera_mode"].upper())
        pycolmap.import_images(database_path, colmap_dir, mode, list(image_names), reader)
    pairs = io.read_pairs(pairs_path)
    written = 0
    with pycolmap.Database.open(database_path) as db, _match_reader(match_path, pairs) as read_matches:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        missing = [n for n in image_names if n not in ids]
        if missing:
            raise RuntimeError(f"{image_dir}: pycolmap could not import {missing[:5]}; check these image files")
        for name in image_names:
            # COLMAP puts the top-left pixel corner at (0, 0); features.h5 puts the first pixel centre there.
            db.write_keypoints(ids[name], ((keypoints[name] + 0.5) * scales.get(name, 1.0)).astype(np.float32))
        for name0, name1 in pairs:
            if name0 not in ids or name1 not in ids:
                continue
            matches, _ = read_matches(name0, name1)
            if len(matches):
                db.write_matches(ids[name0], ids[name1], matches.astype(np.uint32))
                written += 1
    return len(image_names), written


def largest_model(models: dict[int, pycolmap.Reconstruction]) -> pycolmap.Reconstruction | None:
    """The model registering the most images (ties: more 3D points)."""
    if not models:
        return None
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def main(
    conf: dict,
    image_dir: Path,
    image_names: list[str],
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    sfm_dir: Path,
    overwrite: bool = False,
    num_threads: int = -1,
    progress=None,
) -> pycolmap.Reconstruction | None:
    """Reconstruct one photo set; returns its largest cluster (also `sfm_dir/model`), or None when no
    model could be built. Every kept cluster is written to `sfm_dir/clusters/K` (largest first; see
    `clusters`), and what the joining did to `sfm_dir/summary.json` (`summary`). A finished result
    made from the same inputs (`fingerprint`) is reused unless `overwrite`; otherwise the whole
    folder, database included, is built afresh. `progress`: callback(done, total, desc) at each of STEPS."""
    conf = resolved(conf)  # a partial conf over the default it names, every default it reads in it
    sfm_dir = Path(sfm_dir)
    model_dir = sfm_dir / "model"
    made_from = fingerprint(conf, image_names, pairs_path, feature_path, match_path)
    if model_dir.exists() and io.reusable(sfm_dir, made_from, overwrite, "model"):
        if (model_dir / "images.bin").exists():
            return pycolmap.Reconstruction(model_dir)
        if (sfm_dir / "EMPTY").exists():
            logger.info("%s: an earlier run found no model, reusing that result", sfm_dir)
            return None
    io.stamp_path(sfm_dir).unlink(missing_ok=True)
    if sfm_dir.exists():
        shutil.rmtree(sfm_dir)
    sfm_dir.mkdir(parents=True)
    database_path = sfm_dir / "database.db"
    report_progress(progress, 0, len(STEPS), STEPS[0])
    colmap_dir = sfm_dir / "images"  # holds what COLMAP reads when some photo is too large for it (else unused)
    n_images, n_pairs = create_database(
        conf, Path(image_dir), image_names, pairs_path, feature_path, match_path, database_path, colmap_dir
    )
    logger.info(
        "%s: %d of %d images with keypoints, %d matched pairs", database_path, n_images, len(image_names), n_pairs
    )
    if n_pairs == 0:
        return _no_model(sfm_dir, "no image pair kept enough matches", made_from)

    report_progress(progress, 1, len(STEPS), STEPS[1])
    verification = pycolmap.TwoViewGeometryOptions(conf.get("verification", {}))  # nested dicts set sub-options
    verification.ransac.random_seed = conf.get("seed", -1)
    pycolmap.geometric_verification(database_path, two_view_geometry_options=verification)

    logger.info("%s: %s mapping of %d images", sfm_dir, conf["mapper"], n_images)
    report_progress(progress, 2, len(STEPS), STEPS[2])
    image_dir = colmap_dir if colmap_dir.is_dir() else Path(image_dir)  # the mapper reads photos for colours
    outcome = _final_clusters(conf, database_path, image_dir, sfm_dir, n_images, num_threads)
    if not outcome.clusters:
        return _no_model(sfm_dir, f"the mapper found no model in {len(image_names)} images", made_from)
    _write(outcome, sfm_dir)
    io.stamp(sfm_dir, made_from)
    report_progress(progress, 3, len(STEPS), "model written")
    return outcome.clusters[0]


def _write(outcome: joining.Outcome, sfm_dir: Path) -> None:
    """`clusters/K` for every cluster, `summary.json`, then `model` (the largest) last: its presence
    marks a finished folder."""
    for k, cluster in enumerate(outcome.clusters):
        (sfm_dir / "clusters" / str(k)).mkdir(parents=True)
        cluster.write(sfm_dir / "clusters" / str(k))
    io.write_json(sfm_dir / "summary.json", outcome.summary())
    tmp = sfm_dir / "model.tmp"
    tmp.mkdir()
    outcome.clusters[0].write(tmp)
    tmp.rename(sfm_dir / "model")


def clusters(sfm_dir: Path) -> list[pycolmap.Reconstruction]:
    """Every cluster `main` kept in `sfm_dir`, largest first (none without a model)."""
    folders = sorted((Path(sfm_dir) / "clusters").glob("*/images.bin"), key=lambda p: int(p.parent.name))
    return [pycolmap.Reconstruction(p.parent) for p in folders]


def summary(sfm_dir: Path) -> dict:
    """Models and registered photos before and after the joining (`joining.Outcome.summary`); {} without."""
    path = Path(sfm_dir) / "summary.json"
    return io.read_json(path) if path.exists() else {}


def _final_clusters(conf, database_path, image_dir, sfm_dir, n_images, num_threads) -> joining.Outcome:
    """The one place that decides a photo set's final model(s).

    Map, then join the models of one scene and register left-out photos (`joining.main`). When the
    mapper's own models (its largest for keep="one", all for "all") hold under `remap_held_below` of
    the photos, map again with radial distortion held at zero (`models-held/`), join again, and keep
    the try whose mapper placed more photos (ties: the held one). Judged before joining: a mapping
    whose distortion ran away breaks into many small models, and joining them back covers the photos
    in loose poses (ALIKED-t16 on dino-full: 50 models, the largest 45 photos, joined to 351 of 363
    at mAA 0.506; held: 351 in one model, 0.836)."""
    options = conf.get("options", {})
    outcome = _map_and_join(conf, options, sfm_dir / "models", database_path, image_dir, n_images, num_threads)
    share = conf.get("remap_held_below")
    if conf["mapper"] != "incremental" or share is None or outcome.registered_before >= share * n_images:
        return outcome
    logger.warning("%s: the mapper placed %d of %d photos; mapping again with radial distortion held at zero",
                   sfm_dir, outcome.registered_before, n_images)  # fmt: skip
    held = _map_and_join(conf, merge_conf(options, conf["held_distortion"]), sfm_dir / "models-held", database_path,
                         image_dir, n_images, num_threads)  # fmt: skip
    return held if _held_kept(outcome, held, sfm_dir, n_images) else outcome


def _held_kept(first: joining.Outcome, held: joining.Outcome, sfm_dir: Path, n_images: int) -> bool:
    """The check of the held-distortion second mapping: kept unless its mapper placed fewer photos.
    Only that sign: the two mappings differ in distortion by design, so their focal lengths and
    errors say nothing of which is better. Logged with its numbers, and kept in summary.json."""
    kept = held.registered_before >= first.registered_before
    line = (f"held-distortion mapping: {'kept' if kept else 'refused (fewer photos)'}; the mapper placed "
            f"{first.registered_before}->{held.registered_before} of {n_images} photos, "
            f"{first.models_before}->{held.models_before} models")  # fmt: skip
    logger.info("%s: %s", sfm_dir, line)
    held.checks.insert(0, line)
    return kept


def _map_and_join(conf, options, out_dir, database_path, image_dir, n_images, num_threads) -> joining.Outcome:
    """Every model the mapper finds (written to `out_dir`), joined into clusters by `joining.main`."""
    pipeline_options = _pipeline_options(conf, options, n_images, num_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = list(_mapping(conf, pipeline_options, database_path, image_dir, out_dir).values())
    return _join(conf, models, database_path, pipeline_options, out_dir, n_images)


def _join(conf, models, database_path, pipeline_options, out_dir, n_images) -> joining.Outcome:
    """`joining.main` over the mapper's `models`, timed and logged in one line."""
    start = time.perf_counter()
    join = {**conf.get("scenes", {}), "keep": conf.get("keep", "one")}
    join["final_max_reproj_error"] = conf.get("final_max_reproj_error")
    if conf["mapper"] != "incremental":
        join["max_passes"] = 0  # the global mapper's options carry no incremental mapper settings
    outcome = joining.main(join, models, database_path, _incremental_options(pipeline_options))
    outcome.seconds, outcome.mapped_in = time.perf_counter() - start, out_dir.name
    logger.info(
        "%s: %d model(s) -> %d cluster(s), %d -> %d of %d photos registered (%d joined, %d added, %.1f s)",
        out_dir, outcome.models_before, len(outcome.clusters), outcome.registered_before, outcome.registered,
        n_images, outcome.joined, outcome.added, outcome.seconds,
    )  # fmt: skip
    for line in outcome.log:
        logger.debug("%s: %s", out_dir, line)
    for line in outcome.checks:  # each checked step's decision, with its numbers
        logger.info("%s: %s", out_dir, line)
    return outcome


def _pipeline_options(conf, options: dict, n_images: int, num_threads: int):
    """pycolmap's incremental or global pipeline options from `options` (a dict)."""
    kind = pycolmap.GlobalPipelineOptions if conf["mapper"] == "global" else pycolmap.IncrementalPipelineOptions
    pipeline_options = kind(options)
    pipeline_options.num_threads = num_threads
    pipeline_options.random_seed = conf.get("seed", -1)
    pipeline_options.min_model_size = min(pipeline_options.min_model_size, n_images)  # 2 photos: a model too
    return pipeline_options


def _incremental_options(pipeline_options) -> pycolmap.IncrementalPipelineOptions:
    """The incremental options the joining registers photos with (the mapping's own when incremental)."""
    if isinstance(pipeline_options, pycolmap.IncrementalPipelineOptions):
        return pipeline_options
    return pycolmap.IncrementalPipelineOptions(num_threads=pipeline_options.num_threads)


def _mapping(conf, pipeline_options, database_path, image_dir, out_dir) -> dict[int, pycolmap.Reconstruction]:
    """pycolmap's incremental or global mapping of the database."""
    mapping = pycolmap.global_mapping if conf["mapper"] == "global" else pycolmap.incremental_mapping
    return mapping(database_path, image_dir, out_dir, pipeline_options)


def fingerprint(conf: dict, image_names: list[str], pairs_path: Path, feature_path: Path, match_path: Path) -> str:
    """What a model depends on: every image's features, every pair's matches (their fingerprints
    carry the photos' contents and the earlier confs), the pairs and this conf."""
    pairs = io.read_pairs(pairs_path)
    with io.FeatureReader(feature_path) as features, _match_reader(match_path, pairs) as matches:
        feats = [features.fingerprint(n) for n in image_names]
        return io.digest("model", conf, image_names, feats, pairs, [matches.fingerprint(a, b) for a, b in pairs])


def _match_reader(match_path: Path, pairs: list) -> contextlib.AbstractContextManager:
    """The matches file's reader; nothing when there are no pairs (one photo: no matches file)."""
    return io.MatchReader(match_path) if pairs else contextlib.nullcontext()


def _no_model(sfm_dir: Path, why: str, made_from: str) -> None:
    """Record that a scene has no model, so a rerun with the same inputs does not map it again."""
    (sfm_dir / "model").mkdir(exist_ok=True)
    (sfm_dir / "EMPTY").write_text(why + "\n")
    io.stamp(sfm_dir, made_from)
    logger.warning("%s: no model: %s; every image of the scene gets a placeholder pose", sfm_dir, why)
    return None


def poses(reconstruction: pycolmap.Reconstruction | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """image name -> (R, t) world-to-camera of every registered image."""
    if reconstruction is None:
        return {}
    out = {}
    for image in reconstruction.images.values():
        if image.has_pose:
            pose = image.cam_from_world()
            out[image.name] = (pose.rotation.matrix(), np.asarray(pose.translation))
    return out
