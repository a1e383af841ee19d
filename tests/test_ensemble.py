"""Ensemble merge: no duplicate keypoints, valid one-to-one indices, matches carried over."""

from __future__ import annotations

import logging

import h5py
import numpy as np

from imc_lib.stages import ensemble, features, matching, pairs
from imc_lib.storage.io import pair_key


def test_merge_keypoints_dedups_within_radius_and_keeps_the_first_source():
    a = np.array([[10.2, 10.3], [50.0, 50.0], [99.5, 5.5]], np.float32)
    b = np.array([[10.4, 10.6], [70.0, 70.0], [99.7, 5.2], [0.0, 0.0]], np.float32)
    merged, (ia, ib) = ensemble.merge_keypoints([a, b], radius=1.0)
    assert len(merged) == 5
    gaps = np.linalg.norm(merged[:, None] - merged[None], axis=-1) + np.eye(len(merged)) * 1e9
    assert gaps.min() >= 1.0  # no two kept keypoints within the radius
    np.testing.assert_array_equal(merged[ia], a)  # the first source keeps its coordinates
    assert ib[0] == ia[0] and ib[2] == ia[2]  # duplicates point at the kept keypoint
    np.testing.assert_array_equal(merged[ib[[1, 3]]], b[[1, 3]])


def test_merge_matches_is_one_to_one_and_prefers_higher_scores():
    i0 = [np.array([0, 1, 2]), np.array([0, 3, 4])]
    i1 = [np.array([0, 1, 2]), np.array([0, 1, 3])]
    m_a = (np.array([[0, 0], [1, 1], [2, 2]]), np.array([0.9, 0.5, 0.8], np.float32))
    # b repeats (0,0), and claims keypoint 1 of image1 for keypoint 3 of image0 with a higher score.
    m_b = (np.array([[0, 0], [1, 1], [2, 2]]), np.array([0.7, 0.95, 0.6], np.float32))
    matches, scores = ensemble.merge_matches([m_a, m_b], i0, i1)
    assert {tuple(m) for m in matches} == {(0, 0), (3, 1), (2, 2), (4, 3)}
    assert len(np.unique(matches[:, 0])) == len(matches) == len(np.unique(matches[:, 1]))
    assert scores[list(map(tuple, matches)).index((0, 0))] == np.float32(0.9)


def _write_source(folder, tag, kpts, pair_matches):
    fpath, mpath = folder / f"f-{tag}.h5", folder / f"m-{tag}.h5"
    with h5py.File(fpath, "w") as f:
        for name, k in kpts.items():
            g = f.create_group(name)
            g["keypoints"], g["scores"] = k, np.ones(len(k), np.float32)
            g["descriptors"], g["image_size"] = np.zeros((len(k), 4), np.float32), np.array([100, 100])
    with h5py.File(mpath, "w") as f:
        for (a, b), m in pair_matches.items():
            g = f.create_group(pair_key(a, b))
            g["matches"], g["scores"] = np.array(m, np.int32).reshape(-1, 2), np.full(len(m), 0.5, np.float32)
    return fpath, mpath


def test_main_writes_files_reconstruction_can_read(tmp_path):
    rng = np.random.default_rng(0)
    kx = {n: rng.uniform(0, 100, (20, 2)).astype(np.float32) for n in ("x.jpg", "y.jpg")}
    ky = {n: np.concatenate([k[:5] + 0.1, rng.uniform(0, 100, (10, 2))]).astype(np.float32) for n, k in kx.items()}
    src_a = _write_source(tmp_path, "a", kx, {("x.jpg", "y.jpg"): [[i, i] for i in range(20)]})
    src_b = _write_source(tmp_path, "b", ky, {("x.jpg", "y.jpg"): [[i, i] for i in range(15)]})
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("x.jpg", "y.jpg")], pairs_path)
    fpath, mpath = ensemble.main(
        {},  # a partial conf (here empty) runs with the default radius, 1 px
        ["x.jpg", "y.jpg"],
        pairs_path,
        [src_a, src_b],
        tmp_path / "merged.h5",
        tmp_path / "merged-m.h5",
    )
    feats = {n: features.read_features(fpath, n) for n in ("x.jpg", "y.jpg")}
    assert all(len(f["keypoints"]) == 30 for f in feats.values())  # 20 + 15 - 5 duplicates
    m, s = matching.read_matches(mpath, "x.jpg", "y.jpg")
    assert len(m) == 30 and (m >= 0).all() and (m < 30).all()
    assert len(np.unique(m[:, 0])) == len(m) == len(np.unique(m[:, 1]))


def test_merged_files_are_redone_when_a_source_changes(tmp_path, caplog):
    rng = np.random.default_rng(1)
    kpts = {n: rng.uniform(0, 100, (20, 2)).astype(np.float32) for n in ("x.jpg", "y.jpg")}
    sources = [_write_source(tmp_path, t, kpts, {("x.jpg", "y.jpg"): [[i, i] for i in range(20)]}) for t in "ab"]
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("x.jpg", "y.jpg")], pairs_path)
    args = (ensemble.confs["merge"], ["x.jpg", "y.jpg"], pairs_path, sources, tmp_path / "f.h5", tmp_path / "m.h5")
    fpath, mpath = ensemble.main(*args)
    with h5py.File(fpath) as f:
        merged = f["x.jpg"].attrs["fingerprint"]
    written = mpath.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="imc_lib.storage.io"):
        ensemble.main(*args)
    assert "reusing merged features and matches" in caplog.text and mpath.stat().st_mtime_ns == written

    # Source b's features of x.jpg were extracted again (another photo): both files are merged again.
    with h5py.File(sources[1][0], "a") as f:
        f["x.jpg"].attrs["fingerprint"] = "another photo"
    ensemble.main(*args)
    assert mpath.stat().st_mtime_ns != written
    with h5py.File(fpath) as f, h5py.File(mpath) as m:
        assert f["x.jpg"].attrs["fingerprint"] != merged
        assert m[pair_key("x.jpg", "y.jpg")].attrs["fingerprint"]  # carried for reconstruction's fingerprint
