"""The IMC scores. 2024: mean average accuracy (mAA) of camera centres after the best similarity
registration of the submitted cameras onto the ground truth, scene by scene. 2025 (`score_2025`):
the same registration per ground-truth scene inside the cluster matched to it, and how pure the
matched clusters are (clusterness), per dataset of mixed photos.

Registration follows the competition's `register_by_Horn`: a similarity fit to every triplet of
registered cameras (a fixed-seed sample of `MAX_TRIPLETS` when there are more; the competition
takes all), refitted on its inliers (|aligned - gt| < threshold) at each threshold where they
number more than 2; per threshold, the refit with the most inliers wins (ties: smaller sum of
squared errors). Accuracy subtracts the 3 cameras any triplet aligns trivially:

    mAA = sum_k max(inliers_k - 3, 0) / (n_thresholds * (n_images - 3))

with n_images the scene's ground-truth images; images absent from the submission are never
inliers but still count. A scene of 3 or fewer images has nothing to measure beyond the trivial
alignment (the formula divides by zero): it scores 1.0 if all its images are registered, else 0.0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .data import load_categories, read_table, table_format
from .submission import OUTLIERS, parse_values, read_poses

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.025, 0.05, 0.1, 0.2, 0.5, 1.0)  # scene units (metres for buildings)
OBJECT_SCALE = 0.1  # scenes whose categories include "object" use thresholds ten times smaller
MAX_TRIPLETS = 10000
SEED = 0
_CHUNK_POINTS = 500_000  # triplets x cameras evaluated at once, to bound memory
KEY = ["dataset", "scene", "image_name"]
SCORE_COLUMNS = ["dataset", "scene", "images", "registered", "mAA"]


def _horn_batch(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """`horn_similarity` for a batch (B, N, d) of point sets, over the points of weight 1.

    s is NaN where the source points coincide.
    """
    w = np.ones(src.shape[:2]) if weights is None else weights.astype(float)
    total = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu_s = (w[..., None] * src).sum(axis=1) / total[:, None]
        mu_d = (w[..., None] * dst).sum(axis=1) / total[:, None]
    x, y = (src - mu_s[:, None]) * w[..., None], (dst - mu_d[:, None]) * w[..., None]
    cov = y.transpose(0, 2, 1) @ x
    cov[~np.isfinite(cov)] = 0
    u, _, vt = np.linalg.svd(cov)
    signs = np.ones(u.shape[:2])
    signs[:, -1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    R = (u * signs[:, None, :]) @ vt
    var_s, var_d = (x**2).sum(axis=(1, 2)), (y**2).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(var_s > 0, np.sqrt(var_d / var_s), np.nan)
    t = mu_d - s[:, None] * (R @ mu_s[:, :, None])[:, :, 0]
    return s, R, t


def horn_similarity(src, dst) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) with dst ≈ s R src + t for (N, d) point sets, as the competition's
    `register_by_Horn` fits it (so the metric registers cameras exactly as Kaggle's does).

    R is the least-squares rotation (SVD of the cross-covariance, no reflections), but s is Horn's
    symmetric scale, the ratio of RMS deviations from the centroids, not Umeyama's least-squares
    scale: the fit of dst onto src is the exact inverse of this one. On noise-free data the two agree.
    """
    src, dst = np.asarray(src, dtype=float), np.asarray(dst, dtype=float)
    if src.ndim != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (N, d) point sets with N >= 2, got {src.shape} and {dst.shape}")
    s, R, t = _horn_batch(src[None], dst[None])
    if not np.isfinite(s[0]):
        raise ValueError("source points coincide: no similarity transform is defined")
    return float(s[0]), R[0], t[0]


def _errors(s, R, t, est: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B, N) distances |s R est + t - gt| for B transforms; inf for undefined transforms."""
    aligned = s[:, None, None] * (est @ R.transpose(0, 2, 1)) + t[:, None, :]
    err = np.linalg.norm(aligned - gt, axis=-1)
    err[~np.isfinite(err)] = np.inf
    return err


def _triplets(n: int, max_triplets: int, seed: int) -> np.ndarray:
    """(T, 3) index triplets i < j < k: all of them, or a fixed-seed sample of `max_triplets`.

    Triplets are drawn by rank and unranked in the combinatorial number system, so a sample never
    enumerates all C(n, 3) triplets.
    """
    total = math.comb(n, 3)
    if total <= max_triplets:
        ranks = np.arange(total)
    else:
        rng = np.random.default_rng(seed)
        ranks = np.sort(rng.choice(total, size=max_triplets, replace=False))
    comb3 = np.array([math.comb(m, 3) for m in range(n)], dtype=np.int64)
    comb2 = np.array([math.comb(m, 2) for m in range(n)], dtype=np.int64)
    k = np.searchsorted(comb3, ranks, side="right") - 1
    rest = ranks - comb3[k]
    j = np.searchsorted(comb2, rest, side="right") - 1
    i = rest - comb2[j]
    return np.stack([i, j, k], axis=1)


def _register(gt: np.ndarray, est: np.ndarray, thresholds: np.ndarray, max_triplets: int, seed: int):
    """Inliers of the best registration of `est` onto `gt` (both (N, 3), all finite), per threshold.

    As the competition's `register_by_Horn` (inl_cf=0, strict_cf=-1): every triplet fit whose
    inliers at some threshold number more than 2 is refitted on those inliers; each refit is a
    candidate for every threshold, the best having the most inliers, then the smallest sum of
    squared errors over all cameras, then the earliest. Returns (inlier counts (K,), the winning
    transforms as a list of (s, R, t) or None).
    """
    n, n_th = len(gt), len(thresholds)
    best_cnt = np.zeros(n_th, dtype=int)
    best_fit: list[tuple | None] = [None] * n_th
    if n < 3:
        return best_cnt, best_fit
    best_err = np.full(n_th, np.inf)
    triplets = _triplets(n, max_triplets, seed)
    chunk = max(1, _CHUNK_POINTS // (n * n_th))
    for start in range(0, len(triplets), chunk):
        idx = triplets[start : start + chunk]
        inl = _errors(*_horn_batch(est[idx], gt[idx]), est, gt)[:, :, None] < thresholds  # (B, N, K)
        keep = inl.sum(axis=1) > 2
        # one refit per distinct inlier set of a triplet, in (triplet, threshold) order
        same_as_lower = np.zeros_like(keep)
        for k in range(1, n_th):
            same_as_lower[:, k] = (inl[:, :, k : k + 1] == inl[:, :, :k]).all(axis=1).any(axis=1)
        b, k = np.nonzero(keep & ~same_as_lower)
        if len(b) == 0:
            continue
        masks = inl[b, :, k]  # (C, N)
        s, R, t = _horn_batch(np.broadcast_to(est, (len(b), n, 3)), np.broadcast_to(gt, (len(b), n, 3)), masks)
        err = _errors(s, R, t, est, gt)  # (C, N)
        cnt = (err[:, :, None] < thresholds).sum(axis=1)  # (C, K)
        sse = np.where(np.isfinite(err), err**2, np.inf).sum(axis=1)
        for kk in range(n_th):
            order = np.lexsort((sse, -cnt[:, kk]))  # stable: earliest candidate first on full ties
            c = order[0]
            if cnt[c, kk] > best_cnt[kk] or (cnt[c, kk] == best_cnt[kk] and sse[c] < best_err[kk]):
                best_cnt[kk], best_err[kk], best_fit[kk] = cnt[c, kk], sse[c], (s[c], R[c], t[c])
    return best_cnt, best_fit


def mean_average_accuracy(
    gt_centres,
    est_centres,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    max_triplets: int = MAX_TRIPLETS,
    seed: int = SEED,
) -> float:
    """IMC 2024 mAA of one scene from (N, 3) camera centres; NaN rows of `est_centres` are unregistered."""
    gt = np.asarray(gt_centres, dtype=float)
    est = np.asarray(est_centres, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    if gt.ndim != 2 or gt.shape[1] != 3 or est.shape != gt.shape:
        raise ValueError(f"need gt and est centres of the same shape (N, 3), got {gt.shape} and {est.shape}")
    if not np.all(np.isfinite(gt)):
        raise ValueError("ground-truth centres must be finite")
    if thresholds.ndim != 1 or len(thresholds) == 0 or np.any(thresholds <= 0):
        raise ValueError(f"thresholds must be a non-empty sequence of positive numbers, got {thresholds}")
    registered = np.all(np.isfinite(est), axis=1)
    n = len(gt)
    if n <= 3:
        return float(registered.all())
    counts, _ = _register(gt[registered], est[registered], thresholds, max_triplets, seed)
    return float(np.maximum(counts - 3, 0).sum() / (len(thresholds) * (n - 3)))


def camera_errors(
    gt_centres, est_centres, threshold: float, max_triplets: int = MAX_TRIPLETS, seed: int = SEED
) -> np.ndarray:
    """(N,) distance of each submitted camera centre from its ground truth after the registration
    the metric picks at `threshold` (what a viewer colours cameras by); inf where unregistered or
    when no registration has 3 inliers."""
    gt, est = np.asarray(gt_centres, dtype=float), np.asarray(est_centres, dtype=float)
    registered = np.all(np.isfinite(est), axis=1)
    errors = np.full(len(gt), np.inf)
    _, (fit,) = _register(gt[registered], est[registered], np.array([threshold]), max_triplets, seed)
    if fit is not None:
        s, R, t = fit
        errors[registered] = np.linalg.norm(s * est[registered] @ R.T + t - gt[registered], axis=1)
    return errors


def camera_centres(poses: pd.DataFrame) -> np.ndarray:
    """(N, 3) camera centres -R^T t of a poses table from `submission.read_poses`."""
    if len(poses) == 0:
        return np.zeros((0, 3))
    R, t = np.stack(list(poses["R"])), np.stack(list(poses["t"]))
    return -np.einsum("nji,nj->ni", R, t)


def scene_thresholds(scene: str, categories: Mapping[str, Sequence[str]], overrides: Mapping | None = None):
    """Thresholds of one scene: an override, else the defaults, ten times smaller for objects."""
    if overrides and scene in overrides:
        return tuple(overrides[scene])
    scale = OBJECT_SCALE if "object" in categories.get(scene, ()) else 1.0
    return tuple(th * scale for th in DEFAULT_THRESHOLDS)


def _poses(table, kind: str, key: list[str] = KEY) -> pd.DataFrame:
    """A poses table from a path or an already-read DataFrame; rows repeating `key` raise ValueError."""
    poses = table if isinstance(table, pd.DataFrame) else read_poses(table, kind)
    source = "" if isinstance(table, pd.DataFrame) else f"{table}: "
    dup = poses.duplicated(key, keep=False)
    if dup.any():
        first = poses[dup].iloc[0]
        raise ValueError(
            f"{source}{kind} has {int(dup.sum())} rows for repeated images, e.g. "
            f"{'/'.join(str(first[k]) for k in key)}; keep one row per image"
        )
    return poses


def score(labels, submission, categories=None, thresholds: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """Per-scene IMC 2024 scores: columns dataset, scene, images, registered, mAA.

    `labels` / `submission`: paths or DataFrames from `submission.read_poses`; rows match on
    (dataset, scene, image_name). `categories`: a categories.csv path or a scene -> categories
    mapping; by default the `categories.csv` beside a labels file, when present. `thresholds`:
    per-scene overrides. Submission rows for images not in the labels are ignored (logged).
    """
    if categories is None:
        categories = {} if isinstance(labels, pd.DataFrame) else Path(labels).parent / "categories.csv"
    elif not isinstance(categories, Mapping) and not Path(categories).is_file():
        raise FileNotFoundError(f"{categories}: categories file not found")
    if not isinstance(categories, Mapping):
        categories = load_categories(categories)
    gt = _poses(labels, "labels")
    est = _poses(submission, "submission")
    est_keys = list(map(tuple, est[KEY].to_numpy()))
    est_centres = dict(zip(est_keys, camera_centres(est)))
    # Placeholder rows (identity R, zero t: what writers put for unregistered images) still take
    # part in the registration, as in the competition, but are not counted as registered.
    placeholder = {k for k, R, t in zip(est_keys, est["R"], est["t"]) if np.array_equal(R, np.eye(3)) and not t.any()}
    skewed = [k for k, R in zip(est_keys, est["R"]) if not np.allclose(R @ R.T, np.eye(3), atol=1e-3)]
    if skewed:
        logger.warning(
            "%d submission rows have a rotation_matrix that is not orthonormal (e.g. %s); "
            "scored as given, through the camera centre -R^T t",
            len(skewed),
            "/".join(skewed[0]),
        )
    extra = set(est_centres) - set(map(tuple, gt[KEY].to_numpy()))
    if extra:
        logger.warning(
            "%d submission rows are not in the labels and are ignored, e.g. %s",
            len(extra),
            "/".join(sorted(extra)[0]),
        )
    if thresholds:
        unknown = sorted(set(thresholds) - set(gt["scene"]))
        if unknown:
            logger.warning("threshold overrides for scenes not in the labels: %s", unknown)
    missing = np.full(3, np.nan)
    rows = []
    for (dataset, scene), group in gt.groupby(["dataset", "scene"], sort=True):
        est_scene = np.array([est_centres.get(key, missing) for key in map(tuple, group[KEY].to_numpy())])
        rows.append(
            {
                "dataset": dataset,
                "scene": scene,
                "images": len(group),
                "registered": sum(k in est_centres and k not in placeholder for k in map(tuple, group[KEY].to_numpy())),
                "mAA": mean_average_accuracy(
                    camera_centres(group), est_scene, scene_thresholds(scene, categories, thresholds)
                ),
            }
        )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def format_table(df: pd.DataFrame) -> str:
    """Plain-text score table of `score`'s result: one line per scene, then the mean of the scene mAAs."""
    table = pd.DataFrame(
        {
            "dataset": df["dataset"],
            "scene": df["scene"],
            "registered": [f"{r.registered}/{r.images}" for r in df.itertuples(index=False)],
            "mAA": [f"{v:.3f}" for v in df["mAA"]],
        }
    )
    mean = pd.DataFrame([{"dataset": "mean", "scene": "", "registered": "", "mAA": f"{df['mAA'].mean():.3f}"}])
    return pd.concat([table, mean], ignore_index=True).to_string(index=False)


def main(labels, submission, categories=None) -> pd.DataFrame:
    """Score a submission against labels (what `imc-lib score` runs; it prints `format_table`)."""
    return score(labels, submission, categories)


# IMC 2025: datasets of several scenes and outliers, submitted as clusters.

SCORED_THRESHOLDS = 4  # mAA counts the four largest of a scene's six thresholds (all six take part in the fits)
KEY_2025 = ["dataset", "image_name"]
DATASET_COLUMNS = [
    "dataset", "images", "scenes", "clusters", "score", "mAA", "clusterness", "outliers", "outliers_found",
    "labelled_outliers",
]  # fmt: skip
SCENE_COLUMNS_2025 = ["dataset", "scene", "images", "cluster", "shared", "cluster_size", "registered", "mAA"]


def read_thresholds(path: Path) -> dict[tuple[str, str], tuple[float, ...]]:
    """{(dataset, scene): thresholds} of `train_thresholds.csv` (six `;`-joined values, metres)."""
    table = read_table(path, ["dataset", "scene", "thresholds"])
    return {
        (d, s): tuple(parse_values(text, 6, f"{path} row {i + 2}, thresholds"))
        for i, (d, s, text) in enumerate(zip(table["dataset"], table["scene"], table["thresholds"]))
    }


def score_2025(
    labels, submission, thresholds=None, max_triplets: int = MAX_TRIPLETS, seed: int = SEED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IMC 2025 scores: (one row per dataset, DATASET_COLUMNS; one per ground-truth scene, SCENE_COLUMNS_2025).

    Per dataset: each scene is matched to the cluster sharing the most photos with it (ties: the
    higher mAA, then the first cluster by name; a cluster may serve several scenes, a scene sharing
    no photo has none); mAA = a / b with a = the sum over scenes and the four largest thresholds of
    max(0, inliers - 3), inliers counted among the photos in both after the IMC 2024 registration
    (`_register`), and b = 4 * sum over scenes of max(0, size - 3); clusterness = sum |S ∩ C(S)| /
    sum |C(S)|; score = their harmonic mean. The final score is the mean of `score`.
    `outliers_found`: true outliers labelled `outliers`, of `outliers`.

    `labels` / `submission`: paths or `submission.read_poses_2025` tables; rows match on (dataset,
    image). `thresholds`: a train_thresholds.csv path or {(dataset, scene): thresholds}; by default
    the file beside a labels path. A photo of the labels with no row in a dataset the submission
    holds is an error (Kaggle takes every photo or none); a dataset it lacks scores 0 (logged).
    """
    thresholds = _thresholds(labels, thresholds)
    gt, est = _poses(labels, "2025", KEY_2025), _poses(submission, "2025", KEY_2025)
    est = _checked_rows_2025(gt, est)
    datasets, scenes = [], []
    for dataset, truth in gt.groupby("dataset", sort=True):
        theirs = est[est["dataset"] == dataset]
        scene_rows = [
            _match_scene(group, theirs, _scene_thresholds(thresholds, dataset, scene), max_triplets, seed)
            for scene, group in truth.groupby("scene", sort=True)
            if scene != OUTLIERS
        ]
        datasets.append(_dataset_row(truth, theirs, scene_rows))
        scenes += scene_rows
    return pd.DataFrame(datasets, columns=DATASET_COLUMNS), pd.DataFrame(scenes, columns=SCENE_COLUMNS_2025)


def _thresholds(labels, thresholds) -> Mapping:
    """The thresholds mapping: given, read from a path, or from train_thresholds.csv beside `labels`."""
    if isinstance(thresholds, Mapping):
        return thresholds
    if thresholds is None:
        if isinstance(labels, pd.DataFrame):
            raise ValueError("labels given as a table: pass thresholds (train_thresholds.csv or a mapping)")
        thresholds = Path(labels).parent / "train_thresholds.csv"
        if not thresholds.is_file():
            raise FileNotFoundError(f"{thresholds}: file not found; the IMC 2025 metric needs each scene's "
                                    "thresholds (imc-lib score ... --thresholds FILE)")  # fmt: skip
    return read_thresholds(thresholds)


def _scene_thresholds(thresholds: Mapping, dataset: str, scene: str) -> np.ndarray:
    if (dataset, scene) not in thresholds:
        raise ValueError(f"no thresholds for scene {dataset}/{scene}; add a row to train_thresholds.csv")
    return np.sort(np.asarray(thresholds[(dataset, scene)], dtype=float))


def _checked_rows_2025(gt: pd.DataFrame, est: pd.DataFrame) -> pd.DataFrame:
    """`est` without rows for photos not in the labels (logged); ValueError for label photos of a
    scene without a pose and for photos the submission dropped; datasets it lacks are logged."""
    unposed = [f"{d}/{n}" for d, s, n, R in gt[["dataset", "scene", "image_name", "R"]].itertuples(index=False)
               if s != OUTLIERS and not np.isfinite(R).all()]  # fmt: skip
    if unposed:
        raise ValueError(f"labels: {len(unposed)} photo(s) of a scene have nan poses, e.g. {unposed[0]}")
    gt_keys, est_keys = set(map(tuple, gt[KEY_2025].to_numpy())), set(map(tuple, est[KEY_2025].to_numpy()))
    present = set(est["dataset"])
    dropped = sorted(k for k in gt_keys - est_keys if k[0] in present)
    if dropped:
        raise ValueError(
            f"submission: no row for {len(dropped)} photo(s) of the labels, e.g. {'/'.join(dropped[0])}; every "
            f"photo needs one ({OUTLIERS}, with nan values, for a photo in no cluster)"
        )
    absent = sorted(set(gt["dataset"]) - present)
    if absent:
        logger.warning("dataset(s) %s have no rows in the submission: scored 0", absent)
    extra = est_keys - gt_keys
    if extra:
        logger.warning("%d submission rows not in the labels are ignored, e.g. %s", len(extra), "/".join(min(extra)))
    return est[[k not in extra for k in map(tuple, est[KEY_2025].to_numpy())]]


def _match_scene(truth: pd.DataFrame, est: pd.DataFrame, thresholds: np.ndarray, max_triplets: int, seed: int):
    """The row of one ground-truth scene: its cluster (the one sharing most photos; ties: more hits,
    then the name) and `hits`, its part of the dataset's mAA numerator."""
    names = list(truth["image_name"])
    gt_centres = dict(zip(names, camera_centres(truth)))
    est_centres = dict(zip(est["image_name"], camera_centres(est)))
    clusters = {c: list(g["image_name"]) for c, g in est.groupby("scene", sort=True) if c != OUTLIERS}
    shared = {c: [n for n in members if n in gt_centres] for c, members in clusters.items()}
    most = max(map(len, shared.values()), default=0)
    best = {"cluster": "", "shared": 0, "cluster_size": 0, "registered": 0, "hits": 0}
    for cluster in [c for c, common in shared.items() if most and len(common) == most]:
        gt = np.array([gt_centres[n] for n in shared[cluster]])
        ours = np.array([est_centres[n] for n in shared[cluster]])
        hits = _hits(gt, ours, thresholds, max_triplets, seed)
        if not best["cluster"] or hits > best["hits"]:
            registered = int(np.isfinite(ours).all(axis=1).sum())
            best = {"cluster": cluster, "shared": most, "cluster_size": len(clusters[cluster]),
                    "registered": registered, "hits": hits}  # fmt: skip
    n = len(names)
    scene_maa = best["hits"] / (SCORED_THRESHOLDS * (n - 3)) if n > 3 else float(best["registered"] == n)
    return {"dataset": truth["dataset"].iloc[0], "scene": truth["scene"].iloc[0], "images": n, **best, "mAA": scene_maa}


def _hits(gt: np.ndarray, est: np.ndarray, thresholds: np.ndarray, max_triplets: int, seed: int) -> int:
    """Sum over the four largest thresholds of max(0, inliers - 3) after registering `est` onto `gt`
    (NaN rows of `est`, photos without a pose, are never inliers)."""
    ok = np.isfinite(est).all(axis=1)
    counts, _ = _register(gt[ok], est[ok], thresholds, max_triplets, seed)
    return int(np.maximum(counts[-SCORED_THRESHOLDS:] - 3, 0).sum())


def _dataset_row(truth: pd.DataFrame, est: pd.DataFrame, scenes: list[dict]) -> dict:
    """One dataset's mAA, clusterness, harmonic-mean score and outlier counts from its scene rows."""
    possible = SCORED_THRESHOLDS * sum(max(s["images"] - 3, 0) for s in scenes)
    # scenes of 3 photos or fewer have nothing to measure past the trivial alignment (as in 2024)
    maa = sum(s["hits"] for s in scenes) / possible if possible else float(all(s["mAA"] == 1 for s in scenes))
    size = sum(s["cluster_size"] for s in scenes)
    clusterness = sum(s["shared"] for s in scenes) / size if size else 0.0
    true_outliers = set(truth.loc[truth["scene"] == OUTLIERS, "image_name"])
    labelled = set(est.loc[est["scene"] == OUTLIERS, "image_name"])
    return {
        "dataset": truth["dataset"].iloc[0],
        "images": len(truth),
        "scenes": len(scenes),
        "clusters": est.loc[est["scene"] != OUTLIERS, "scene"].nunique(),
        "score": 2 * maa * clusterness / (maa + clusterness) if maa + clusterness else 0.0,
        "mAA": maa,
        "clusterness": clusterness,
        "outliers": len(true_outliers),
        "outliers_found": len(true_outliers & labelled),
        "labelled_outliers": len(labelled),
    }


def format_table_2025(datasets: pd.DataFrame, scenes: pd.DataFrame) -> str:
    """Plain text of `score_2025`: per dataset score, mAA, clusterness, outliers found, then the
    mean (the final score); below, each scene's matched cluster, shared photos and mAA."""
    top = pd.DataFrame(
        {
            "dataset": [*datasets["dataset"], "mean"],
            **{k: [f"{v:.3f}" for v in [*datasets[k], datasets[k].mean()]] for k in ("score", "mAA", "clusterness")},
            "outliers found": [f"{f}/{n}" for f, n in zip(datasets["outliers_found"], datasets["outliers"])] + [""],
        }
    )
    bottom = pd.DataFrame(
        {
            "dataset": scenes["dataset"],
            "scene": scenes["scene"],
            "cluster": [c or "-" for c in scenes["cluster"]],
            "in cluster": [f"{s}/{n}" for s, n in zip(scenes["shared"], scenes["images"])],
            "cluster size": scenes["cluster_size"],
            "mAA": [f"{v:.3f}" for v in scenes["mAA"]],
        }
    )
    return top.to_string(index=False) + "\n\n" + bottom.to_string(index=False)


def report(labels, submission, categories=None, thresholds=None) -> str:
    """What `imc-lib score` prints, the year told by the columns of both files (2024: `format_table`
    of `main`; 2025: `format_table_2025` of `score_2025`)."""
    year = table_format(labels)
    if table_format(submission) != year:
        raise ValueError(f"{labels} is an IMC {year} table, {submission} is not; score against labels of its year")
    if year == "2025":
        if categories is not None:
            raise ValueError("--categories is for IMC 2024 labels; IMC 2025 takes train_thresholds.csv (--thresholds)")
        return format_table_2025(*score_2025(labels, submission, thresholds))
    if thresholds is not None:
        raise ValueError("--thresholds is for IMC 2025 labels; IMC 2024 thresholds follow categories.csv")
    return format_table(main(labels, submission, categories))
