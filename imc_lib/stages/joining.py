"""The mapper's models -> the photo set's clusters: one rule for "these two models are one scene".

COLMAP's incremental mapper can end with several models. Some are parts of one scene (it stalled and
started again: dino-full 350 + 13 photos); others are different scenes (an IMC 2025 folder) or a few
unrelated photos that happen to match each other. One rule tells them apart, for both paths:

    a smaller model joins a larger one when its photos register into the larger one by their own
    verified matches (PnP against the larger model's 3D points, pycolmap's `register_next_image`),
    at least `join_share` of them (photos both models hold count as registered), and there keep
    the shape they have in their own model, up to a similarity (`max_disagreement`).

Geometry decides, never names: two scenes shot in one place that share views become one model, as
they are. After the joins, each cluster (largest first) tries the photos left out of every model,
and is bundle-adjusted once more with a tighter reprojection filter when `final_max_reproj_error`
is set (as the reconstruction stage sets it). Each of these steps (a join, the photos added, the
final refinement) is refined and kept only when `checks.judge` finds its result no worse than what
it started from; its decision is logged and kept in `Outcome.checks`. `keep="one"` (IMC 2024:
a folder is one scene) also lets the largest cluster take photos of the clusters that did not join
it, and keeps it alone; `keep="all"` (IMC 2025) keeps every cluster of `min_cluster_size`+ photos,
and a photo in two models stays with the larger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap

from ..formats import metric
from . import checks

logger = logging.getLogger(__name__)

confs = {
    "join": {
        # A model whose photos register into a larger one at this share or more is the same scene.
        "join_share": 0.5,
        # ... and where they then sit as in their own model, up to a similarity: the median camera
        # centre off by at most this share of the photos' spread (`_agrees`).
        "max_disagreement": 0.1,
        # Registration passes over the photos still out: a photo may need its neighbours in first.
        "max_passes": 3,
        # "one": the largest cluster only (IMC 2024); "all": every cluster of min_cluster_size+ photos.
        "keep": "one",
        "min_cluster_size": 3,
        # Every kept cluster is refined once more (tracks completed and merged, bundle adjustment,
        # filtering) keeping only observations within this many pixels; None: not refined again.
        "final_max_reproj_error": None,
        # Each step above is kept only when checks.judge approves its result (over checks.confs["check"]).
        "check": {},
    },
}


@dataclass
class Outcome:
    """What `main` did: the clusters (largest first) and the counts its log line reports."""

    clusters: list[pycolmap.Reconstruction]
    models_before: int
    registered_before: int
    joined: int = 0
    added: int = 0
    seconds: float = 0.0
    mapped_in: str = ""  # the folder of mapper models the clusters came from
    log: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # each checked step's decision, with its numbers

    @property
    def registered(self) -> int:
        """Photos in the kept clusters (the first one alone for keep="one")."""
        return sum(c.num_reg_images() for c in self.clusters)

    def summary(self) -> dict:
        return {
            "models_before": self.models_before,
            "models_after": len(self.clusters),
            "registered_before": self.registered_before,
            "registered_after": self.registered,
            "joined": self.joined,
            "added": self.added,
            "seconds": round(self.seconds, 2),
            "mapped_in": self.mapped_in,
            "checks": self.checks,
        }


def main(
    conf: dict,
    models: list[pycolmap.Reconstruction],
    database_path: Path,
    options: pycolmap.IncrementalPipelineOptions,
) -> Outcome:
    """Join the models of one scene, register left-out photos, keep what `conf["keep"]` asks for.

    `options`: the mapping's own options (its mapper, triangulation and bundle adjustment settings,
    distortion held or not), so the photos added here are treated as the mapper treated the others.
    """
    conf = {**confs["join"], **conf}
    ordered = sorted(models, key=_size, reverse=True)
    # photos the mapper placed: in its largest model (keep="one"), in any of them ("all"; models may share photos)
    placed = set().union(*map(_ids, ordered))
    before = ordered[0].num_reg_images() if conf["keep"] == "one" and ordered else len(placed)
    outcome = Outcome([], len(ordered), before)
    if not ordered:
        return outcome
    with pycolmap.Database.open(database_path) as db:
        cache = pycolmap.DatabaseCache.create(
            db, pycolmap.DatabaseCacheOptions(min_num_matches=options.min_num_matches)
        )
    session = _Session(cache, options, conf["max_passes"])
    clusters: list[_Cluster] = []
    for model in ordered:
        if not _join_any(session, clusters, model, conf, outcome):
            clusters.append(_Cluster(pycolmap.Reconstruction(model)))
    clusters = _share_out(clusters)
    if conf["keep"] == "one":
        clusters = clusters[:1]
    for cluster in clusters:  # largest first: a left-out photo goes to the first that takes it
        taken = set().union(*(c.image_ids() for c in clusters))
        trial = pycolmap.Reconstruction(cluster.model)
        added = session.extend(trial, _all_images(cache) - taken)
        if added and _keep("re-registration", cluster, session.refine(trial), conf["check"], outcome):
            outcome.added += added
        if conf["final_max_reproj_error"] is not None:
            trial = session.refine(pycolmap.Reconstruction(cluster.model), conf["final_max_reproj_error"])
            _keep("final refinement", cluster, trial, conf["check"], outcome, refine_only=True)
    kept = [c.model for c in clusters if c.model.num_reg_images() >= min(conf["min_cluster_size"], _size(ordered[0]))]
    outcome.clusters = sorted(kept, key=_size, reverse=True)
    return outcome


def _size(model: pycolmap.Reconstruction) -> int:
    return model.num_reg_images()


def _ids(model: pycolmap.Reconstruction) -> set[int]:
    """The ids of the photos `model` registers (the database's image ids: every model of one
    database shares them)."""
    return {int(i) for i in model.reg_image_ids()}


def _all_images(cache: pycolmap.DatabaseCache) -> set[int]:
    return {int(i) for i in cache.images}


@dataclass
class _Cluster:
    model: pycolmap.Reconstruction

    def image_ids(self) -> set[int]:
        return _ids(self.model)


def _join_any(session, clusters: list[_Cluster], model, conf: dict, outcome: Outcome) -> bool:
    """Join `model` into the first (largest) cluster its photos register into where they keep the
    model's own shape (`_agrees`) and the joined model, refined, passes the check; True when one took it."""
    join_share, max_disagreement, check = conf["join_share"], conf["max_disagreement"], conf["check"]
    own = _ids(model)
    for cluster in clusters:
        shared = own & cluster.image_ids()
        reachable = session.reachable(own - shared, cluster.image_ids())
        if len(shared) + len(reachable) < join_share * len(own):
            outcome.log.append(f"model of {len(own)}: {len(shared)} shared, {len(reachable)} tied by verified "
                               f"matches to one of {len(cluster.image_ids())}; apart, not tried")  # fmt: skip
            continue
        trial = pycolmap.Reconstruction(cluster.model)
        added = session.extend(trial, reachable)
        share = (len(shared) + added) / len(own)
        agrees = share >= join_share and _agrees(model, trial, own, max_disagreement)
        size = len(cluster.image_ids())
        joined = agrees and _keep("joining", cluster, session.refine(trial), check, outcome)
        said = "joined" if joined else "apart (the check refused)" if agrees else "apart"
        outcome.log.append(f"model of {len(own)}: {len(shared)} shared, {added} registered into one of {size} "
                           f"({share:.0%}); {said}")  # fmt: skip
        if joined:
            outcome.joined += 1
            return True
    return False


def _keep(
    step: str,
    cluster: _Cluster,
    trial: pycolmap.Reconstruction,
    check: dict,
    outcome: Outcome,
    refine_only: bool = False,
) -> bool:
    """Whether `trial`, a step's result from `cluster`'s model, passes checks.judge (logged with its
    numbers); when it does, it becomes the cluster's model."""
    verdict = checks.judge(step, checks.stats(cluster.model), checks.stats(trial), check, refine_only)
    outcome.checks.append(f"model of {cluster.model.num_reg_images()} photos: {verdict.line()}")
    if verdict.kept:
        cluster.model = trial
    return verdict.kept


def _agrees(model: pycolmap.Reconstruction, joined: pycolmap.Reconstruction, own: set[int], most: float) -> bool:
    """Whether `model`'s photos sit in `joined` as in `model` itself, up to a similarity: the median
    distance of their camera centres after the best fit is at most `most` of their mean distance
    from their centroid. Photos registered one by one into the wrong place do not keep a shape
    (dino-full: a 13-photo model, each photo within 2 mm of the truth, registered 0.2-2.7 m off)."""
    ids = [i for i in own if joined.exists_image(i) and joined.image(i).has_pose]
    if len(ids) < 3:
        return False  # no shape to compare
    src = np.array([model.image(i).projection_center() for i in ids])
    dst = np.array([joined.image(i).projection_center() for i in ids])
    scale, rotation, shift = metric.horn_similarity(src, dst)
    residual = np.linalg.norm((scale * (rotation @ src.T)).T + shift - dst, axis=1)
    spread = np.linalg.norm(dst - dst.mean(axis=0), axis=1).mean()
    return bool(np.median(residual) <= most * spread)


def _share_out(clusters: list[_Cluster]) -> list[_Cluster]:
    """A photo in several clusters stays in the largest (the first) and leaves the others; the clusters
    that still hold a photo (one whose photos all sit in larger ones is none: nothing registers into it)."""
    seen: set[int] = set()
    for cluster in clusters:
        for image_id in cluster.image_ids() & seen:
            cluster.model.deregister_frame(cluster.model.image(image_id).frame_id)
        seen |= cluster.image_ids()
    return [c for c in clusters if c.model.num_reg_images()]


class _Session:
    """pycolmap's incremental mapper over the database, used to add photos to an existing model."""

    def __init__(self, cache: pycolmap.DatabaseCache, options: pycolmap.IncrementalPipelineOptions, passes: int):
        self.cache, self.passes = cache, passes
        self.mapper_options = options.get_mapper()
        self.triangulation = options.get_triangulation()
        self.bundle = options.get_global_bundle_adjustment()
        self.options = options
        self.links: dict[int, set[int]] = {}
        for pair_id in cache.correspondence_graph.num_matches_between_all_images():
            a, b = pycolmap.pair_id_to_image_pair(pair_id)
            self.links.setdefault(int(a), set()).add(int(b))
            self.links.setdefault(int(b), set()).add(int(a))

    def reachable(self, candidates: set[int], registered: set[int]) -> set[int]:
        """The candidates a chain of verified pairs ties to `registered` through other candidates: only
        they can register (each needs 2D-3D matches to photos already in), so a model with too few of
        them is not tried (dino-full's first mapping: 50 models, most tied to nothing larger)."""
        found: set[int] = set()
        frontier = set(registered)
        while frontier:
            frontier = set().union(*(self.links.get(i, set()) for i in frontier)) & (candidates - found)
            found |= frontier
        return found

    def extend(self, model: pycolmap.Reconstruction, candidates: set[int]) -> int:
        """Register what of `candidates` registers into `model` (triangulating each); the number added. A
        model without a registered photo takes none (pycolmap's mapper needs one to register against)."""
        if not candidates or not model.num_reg_images():
            return 0
        candidates = set(candidates)
        mapper = pycolmap.IncrementalMapper(self.cache)
        mapper.begin_reconstruction(model)
        added = 0
        for _ in range(self.passes):
            before = added
            for image_id in sorted(candidates):
                if mapper.register_next_image(self.mapper_options, image_id):
                    mapper.triangulate_image(self.triangulation, image_id)
                    candidates.discard(image_id)
                    added += 1
            if added == before or not candidates:
                break
        mapper.end_reconstruction(False)
        return added

    def refine(self, model: pycolmap.Reconstruction, max_reproj_error: float | None = None) -> pycolmap.Reconstruction:
        """Tracks completed and merged, then global bundle adjustment and filtering, as the mapper ends a
        model; observations over `max_reproj_error` pixels are dropped (default: the mapper's filter).
        Returns `model`, refined in place."""
        mapper_options = self.options.get_mapper()
        if max_reproj_error is not None:
            mapper_options.filter_max_reproj_error = max_reproj_error
        mapper = pycolmap.IncrementalMapper(self.cache)
        mapper.begin_reconstruction(model)
        mapper.iterative_global_refinement(
            self.options.ba_global_max_refinements,
            self.options.ba_global_max_refinement_change,
            mapper_options,
            self.bundle,
            self.triangulation,
            False,
        )
        mapper.end_reconstruction(False)
        return model
