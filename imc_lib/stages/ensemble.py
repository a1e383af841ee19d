"""Merge the features and matches of several extractors (e.g. ALIKED + DISK) -> one features file and
one matches file that reconstruction reads like any other.

Per image, keypoints of all sources are concatenated and one within `radius` pixels of an
earlier kept one (sources in the given order) is merged into it. Per pair,
matches of all sources are re-indexed into the merged keypoints; a match survives when it is the
best-scored one of both its keypoints, so repeats collapse, conflicts drop out, and matches stay
one-to-one. The merged features file holds keypoints, scores and image_size (no descriptors:
the sources' descriptors are not comparable).
Each merged group's `fingerprint` combines its sources' (so reconstruction sees what changed), and
the merged matches file is stamped with them all: any change re-merges both files (merging is cheap).

A partial conf is merged over the default (utils.full_conf).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
from scipy.spatial import cKDTree

from ..execution.progress import bar as progress_bar
from ..storage import io
from ..utils import full_conf

logger = logging.getLogger(__name__)

confs = {"merge": {"radius": 1.0}}

# A partial conf given to `main` is merged over the one entry of `confs`.
DEFAULT_BY = ()


def merge_keypoints(keypoint_sets: list[np.ndarray], radius: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """(merged (K, 2) keypoints, per source an index array into them).

    In source order, a keypoint within `radius` pixels of an already kept one is merged into it.
    """
    stacked = np.concatenate([np.asarray(k, np.float32).reshape(-1, 2) for k in keypoint_sets])
    neighbours = cKDTree(stacked).query_ball_point(stacked, r=radius, p=2) if len(stacked) else []
    target = np.arange(len(stacked))
    kept = np.zeros(len(stacked), bool)
    for i, near in enumerate(neighbours):
        earlier = [j for j in near if j < i and kept[j]]
        if earlier:
            target[i] = min(earlier)
        else:
            kept[i] = True
    new_index = np.cumsum(kept) - 1
    index = new_index[target]
    offsets = np.cumsum([0] + [len(k) for k in keypoint_sets])
    return stacked[kept], [index[offsets[i] : offsets[i + 1]] for i in range(len(keypoint_sets))]


def merge_matches(
    match_sets: list[tuple[np.ndarray, np.ndarray]], index0: list[np.ndarray], index1: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one (M, 2) matches and scores in merged indices from each source's matches."""
    pairs, scores = [], []
    for (m, s), i0, i1 in zip(match_sets, index0, index1):
        if len(m):
            pairs.append(np.stack([i0[m[:, 0]], i1[m[:, 1]]], axis=1))
            scores.append(s)
    if not pairs:
        return np.zeros((0, 2), np.int32), np.zeros((0,), np.float32)
    pairs, scores = np.concatenate(pairs), np.concatenate(scores).astype(np.float32)
    best_first = np.argsort(-scores, kind="stable")
    pairs, scores = pairs[best_first], scores[best_first]
    _, first0 = np.unique(pairs[:, 0], return_index=True)
    mask0 = np.zeros(len(pairs), bool)
    mask0[first0] = True
    _, first1 = np.unique(pairs[:, 1], return_index=True)
    mask1 = np.zeros(len(pairs), bool)
    mask1[first1] = True
    keep = mask0 & mask1
    return pairs[keep].astype(np.int32), scores[keep]


def main(
    conf: dict,
    image_names: list[str],
    pairs_path: Path,
    sources: list[tuple[Path, Path]],
    feature_path: Path,
    match_path: Path,
    overwrite: bool = False,
    progress=None,
) -> tuple[Path, Path]:
    """Merge `sources` [(features.h5, matches.h5), ...] into `feature_path` and `match_path`;
    `progress`: callback(done, total, desc) after each pair (default: a tqdm bar)."""
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    feature_path, match_path = Path(feature_path), Path(match_path)
    pairs = io.read_pairs(pairs_path)
    feature_readers = [io.FeatureReader(fp) for fp, _ in sources]
    match_readers = [io.MatchReader(mp) for _, mp in sources] if pairs else []  # no pairs: maybe no files
    try:
        made_from = {n: io.digest("merged", conf, [r.fingerprint(n) for r in feature_readers]) for n in image_names}
        made_from |= {p: io.digest("merged", conf, [r.fingerprint(*p) for r in match_readers]) for p in pairs}
        everything = io.digest(sorted(made_from.items(), key=str))
        if feature_path.exists() and io.reusable(match_path, everything, overwrite, "merged features and matches"):
            return feature_path, match_path
        tmp_features, indices = _merge_features(conf, image_names, feature_readers, feature_path, made_from)
        tmp_matches = match_path.with_suffix(".tmp.h5")
        with h5py.File(tmp_matches, "w") as f:
            for name0, name1 in progress_bar(pairs, desc="merging matches", callback=progress, unit="pair"):
                sets = [read(name0, name1) for read in match_readers]
                matches, scores = merge_matches(sets, indices[name0], indices[name1])
                group = f.create_group(io.pair_key(name0, name1))
                group.attrs[io.FINGERPRINT] = made_from[(name0, name1)]
                group.create_dataset("matches", data=matches)
                group.create_dataset("scores", data=scores)
    finally:
        for reader in [*feature_readers, *match_readers]:
            reader.close()
    tmp_features.replace(feature_path)
    tmp_matches.replace(match_path)
    io.stamp(match_path, everything)
    return feature_path, match_path


def _merge_features(conf, image_names, readers, feature_path, made_from) -> tuple[Path, dict]:
    """Merged keypoints of every image into a temporary file beside `feature_path`; (its path,
    name -> per-source index arrays into the merged keypoints)."""
    indices = {}
    tmp_features = feature_path.with_suffix(".tmp.h5")
    with h5py.File(tmp_features, "w") as f:
        for name in image_names:
            feats = [reader[name] for reader in readers]
            merged, index = merge_keypoints([x["keypoints"] for x in feats], conf["radius"])
            scores = np.zeros(len(merged), np.float32)
            for x, i in zip(reversed(feats), reversed(index)):
                scores[i] = x["scores"]  # the first source's score wins where keypoints merged
            group = f.create_group(name)
            group.attrs[io.FINGERPRINT] = made_from[name]
            group.create_dataset("keypoints", data=merged)
            group.create_dataset("scores", data=scores)
            group.create_dataset("image_size", data=feats[0]["image_size"])
            indices[name] = index
    return tmp_features, indices
