"""Orientation stage: real photos turned by 90/180/270 degrees are turned back, keypoints map back."""

from __future__ import annotations

import collections

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.cluster.hierarchy import DisjointSet

from conftest import small_conf
from imc_lib.stages import features, matching, orientation, pairs
from imc_lib.utils import full_conf


def test_rotate_keypoints_back_inverts_rot90():
    image = np.zeros((5, 8))
    points = [(1, 2), (7, 4), (0, 0), (3, 1)]
    for turns in range(4):
        for x, y in points:
            marked = np.zeros_like(image)
            marked[y, x] = 1
            yy, xx = np.argwhere(np.rot90(marked, turns))[0]
            back = features.rotate_keypoints_back(np.array([[xx, yy]], np.float32), turns, (8, 5))
            np.testing.assert_array_equal(back[0], [x, y])


def test_solve_chains_turns_and_keeps_the_majority_as_stored():
    # b is a turned by 1, c is b turned by 2 (a turned by 3); d unconnected; e upright like a.
    edges = {("a", "b"): (3, 200), ("b", "c"): (2, 150), ("a", "c"): (1, 40), ("a", "e"): (0, 300), ("c", "d"): (1, 5)}
    result = orientation.solve(["a", "b", "c", "d", "e"], edges, min_matches=25)
    assert {n: t for n, (t, _) in result.items()} == {"a": 0, "b": 3, "c": 1, "d": 0, "e": 0}
    assert result["b"][1] == 200 and result["d"][1] == 0


NAMES = ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"]
TURNED = {"0001.jpg": 1, "0002.jpg": 2, "0003.jpg": 3}


def _turned_photos(folder, imc_data_dir, turned):
    src = imc_data_dir / "train/herzjesu-p8/images"
    for name in NAMES:
        with Image.open(src / name) as im:
            im = im.resize((768, 512))
            array = np.rot90(np.asarray(im), turned.get(name, 0))
            Image.fromarray(np.ascontiguousarray(array)).save(folder / name)
    return NAMES


@pytest.mark.parametrize("turned", [TURNED])
def test_turned_photos_are_turned_back(tmp_path, imc_data_dir, weights_dir, turned):
    names = _turned_photos(tmp_path, imc_data_dir, turned)
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    conf = {**orientation.confs["upright"], "prefilter_min_matches": 40}
    out = orientation.main(conf, tmp_path, names, pairs_path, tmp_path / "orient.csv", "cpu", weights=weights_dir)
    got = orientation.read_orientations(out)
    # Turning a photo stored at k quarter turns by -k makes it upright again.
    assert got == {n: (-turned.get(n, 0)) % 4 for n in names}
    # Once turned, every pair of these overlapping views matches well at low resolution: the
    # prefilter keeps them all at a modest threshold and none at an absurd one.
    assert sorted(orientation.overlapping_pairs(out, 40)) == sorted(pairs.read_pairs(pairs_path))
    assert orientation.overlapping_pairs(out, 10**6) == []


def test_mnn_orientation_reads_stored_features_and_extracts_only_turned_tries(
    tmp_path, imc_data_dir, aliked, monkeypatch
):
    names = _turned_photos(tmp_path, imc_data_dir, TURNED)
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    fconf = small_conf(resize_to=640)
    feature_path = features.main(fconf, tmp_path, names, tmp_path / "feats.h5", "cpu", network=aliked)
    calls = []
    extract = features.extract
    monkeypatch.setattr(features, "extract", lambda *a, **k: calls.append(a[2].shape) or extract(*a, **k))
    out = orientation.main(
        orientation.confs["mnn"],
        tmp_path,
        names,
        pairs_path,
        tmp_path / "orient.csv",
        "cpu",
        extractor=aliked,
        feature_path=feature_path,
        features_conf=fconf,
    )
    assert orientation.read_orientations(out) == {n: (-TURNED.get(n, 0)) % 4 for n in names}
    # As-stored features come from the file; only photos outside the largest group (0000 + 0004)
    # are extracted again, at the turns tried: three photos, three turns each at most.
    assert 0 < len(calls) <= 9
    # The features stage extracts only turned photos whose final turn the orientation did not try:
    # it reuses the others from the orientation's own file, and the orientation wrote nothing else.
    turns = orientation.read_orientations(out)
    tried = len(calls)
    with h5py.File(feature_path, "r") as f:
        assert all(int(f[n].attrs.get("turns", 0)) == 0 for n in names)
    features.main(fconf, tmp_path, names, feature_path, "cpu", network=aliked, turns=turns,
                  reuse=orientation.turned_path(out))  # fmt: skip
    assert len(calls) - tried < sum(t != 0 for t in turns.values())
    with h5py.File(feature_path, "r") as f:
        assert {n: int(f[n].attrs["turns"]) for n in names} == turns
        # copied groups carry the fingerprint the features stage asks for: a rerun extracts nothing
        fingerprints = {n: f[n].attrs["fingerprint"] for n in names}
    assert fingerprints == features.fingerprints(fconf, tmp_path, names, turns)
    features.main(fconf, tmp_path, names, feature_path, "cpu", network=_must_not_load, turns=turns)
    # Saved on the stored pixel grid: keypoints inside the stored 768 x 512 photo (turned or not).
    for name in names:
        kpts = features.read_features(feature_path, name)["keypoints"]
        stored = (768, 512) if TURNED.get(name, 0) % 2 == 0 else (512, 768)
        assert len(kpts) > 100 and (kpts >= -0.5).all() and (kpts <= np.array(stored) - 0.5).all()
    # ... and exactly what the features stage would have extracted at that turn.
    fresh = tmp_path / "fresh.h5"
    features.main(fconf, tmp_path, ["0002.jpg"], fresh, "cpu", network=aliked, turns=turns)
    np.testing.assert_allclose(
        features.read_features(fresh, "0002.jpg")["keypoints"],
        features.read_features(feature_path, "0002.jpg")["keypoints"],
        atol=1e-3,
    )
    # Without the main features' config the stage cannot know what to extract.
    with pytest.raises(ValueError, match="features_conf"):
        orientation.main(orientation.confs["mnn"], tmp_path, names, pairs_path, tmp_path / "o2.csv", "cpu")


def test_matching_copies_the_orientation_s_matches_of_pairs_that_stay_upright(
    tmp_path, imc_data_dir, aliked, monkeypatch
):
    """The `mnn` orientation matches every pair as stored; where both photos end upright, with the same
    features and matcher, the matching stage copies those matches: the same arrays it would compute."""
    turned = {"0002.jpg": 2}
    names = _turned_photos(tmp_path, imc_data_dir, turned)
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    fconf = small_conf(resize_to=640)
    feature_path = features.main(fconf, tmp_path, names, tmp_path / "feats.h5", "cpu", network=aliked)
    out = orientation.main(orientation.confs["mnn"], tmp_path, names, pairs_path, tmp_path / "orient.csv", "cpu",
                           extractor=aliked, feature_path=feature_path, features_conf=fconf)  # fmt: skip
    turns = orientation.read_orientations(out)
    assert turns == {n: (-turned.get(n, 0)) % 4 for n in names}
    features.main(fconf, tmp_path, names, feature_path, "cpu", network=aliked, turns=turns,
                  reuse=orientation.turned_path(out))  # fmt: skip
    matched = []
    match_pair = matching.match_pair
    monkeypatch.setattr(matching, "match_pair", lambda m, f0, f1, d: matched.append(1) or match_pair(m, f0, f1, d))

    def run(conf, path, reuse):
        matched.clear()
        matching.main(conf, pairs_path, feature_path, path, "aliked", "cpu", reuse=reuse)
        with h5py.File(path) as f:
            stored = {k: (f[k]["matches"][()], f[k]["scores"][()], f[k].attrs["fingerprint"]) for k in _keys(f)}
        return stored, len(matched)

    mnn = matching.confs["mnn"]
    fresh, _ = run(mnn, tmp_path / "fresh.h5", None)
    copied, calls = run(mnn, tmp_path / "copied.h5", orientation.matches_path(out))
    # 10 pairs; the 4 with the turned photo are matched again (its features changed), the 6 others copied.
    assert calls == sum(bool(turns[a] or turns[b]) for a, b in pairs.read_pairs(pairs_path)) == 4
    assert copied.keys() == fresh.keys() and len(fresh) == 10
    for key, (m, s, fingerprint) in fresh.items():
        np.testing.assert_array_equal(copied[key][0], m, err_msg=key)
        np.testing.assert_array_equal(copied[key][1], s, err_msg=key)
        assert copied[key][2] == fingerprint  # a rerun finds them done
    assert sum(len(m) > 0 for m, _, _ in fresh.values()) >= 6
    # Another matcher conf copies nothing: its matches differ.
    stricter = {**mnn, "model": {**mnn["model"], "ratio": 0.8}}
    strict, calls = run(stricter, tmp_path / "strict.h5", orientation.matches_path(out))
    assert calls == 10 and any(len(strict[k][0]) != len(fresh[k][0]) for k in fresh)


def _keys(f: h5py.File) -> list[str]:
    return [f"{a}/{b}" for a in f for b in f[a]]


def test_partial_conf_is_merged_over_the_named_default(tmp_path):
    mnn = {"matching": {"model": {"name": "mnn"}}, "features": None}
    assert full_conf(orientation.confs, {**mnn, "min_matches": 10}, orientation.DEFAULT_BY) == {
        **orientation.confs["mnn"],
        "min_matches": 10,
    }
    upright = full_conf(orientation.confs, {"features": {"resize_to": 256}}, orientation.DEFAULT_BY)
    assert upright["features"] == {**orientation.confs["upright"]["features"], "resize_to": 256}
    assert {k: v for k, v in upright.items() if k != "features"} == {
        k: v for k, v in orientation.confs["upright"].items() if k != "features"
    }
    # main runs with the merged conf: its error names the default's output, which `mnn` lacks.
    with pytest.raises(ValueError, match="orientation config 'orient-mnn' uses the main features"):
        orientation.main(mnn, tmp_path, ["a.jpg"], tmp_path / "pairs.txt", tmp_path / "o.csv", "cpu")


def _must_not_load():
    raise AssertionError("the extractor was loaded although every photo's features are current")


def test_a_pair_of_groups_is_tried_from_the_smaller_side():
    """Photos are matched turned only with neighbours in groups at least as large as their own."""
    group = DisjointSet(["a1", "a2", "a3", "b1", "b2", "c1", "d1"])
    for x, y in [("a1", "a2"), ("a2", "a3"), ("b1", "b2")]:
        group.merge(x, y)
    sizes = collections.Counter(group[n] for n in ["a1", "a2", "a3", "b1", "b2", "c1", "d1"])
    everyone = {"a1": 0, "a2": 0, "a3": 0, "b1": 0, "b2": 0, "c1": 0, "d1": 0}
    assert orientation._across("a1", everyone, group, sizes) == []  # the largest group: none
    assert orientation._across("b1", everyone, group, sizes) == ["a1", "a2", "a3"]
    assert orientation._across("c1", everyone, group, sizes) == ["a1", "a2", "a3", "b1", "b2", "d1"]  # ties: both


def test_a_group_of_another_scene_is_tried_turned_only_up_to_the_cap(tmp_path, imc_data_dir, weights_dir):
    """A mixed folder: herzjesu photos (three stored turned) beside temple photos, which match nothing of
    herzjesu at any turn. With max_tries_per_group the temple photos stop being tried after that many
    failures. (Which turn herzjesu's photos get next to unrelated photos is not asserted: weak turned
    edges to temple photos can chain them, with or without the cap; see the README.)"""
    names = _turned_photos(tmp_path, imc_data_dir, TURNED)
    for photo in sorted((imc_data_dir / "train/temple/images").iterdir())[:4]:
        Image.open(photo).save(tmp_path / f"temple-{photo.stem}.png")
        names.append(f"temple-{photo.stem}.png")
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    tried, turns = {}, {}
    for cap in (None, 1):
        calls: list = []
        out = orientation.main(
            {**orientation.confs["upright"], "max_tries_per_group": cap},
            tmp_path,
            names,
            pairs_path,
            tmp_path / f"orient-{cap}.csv",
            "cpu",
            weights=weights_dir,
            progress=lambda done, total, desc=None, seen=calls: seen.append((desc, done)),
        )
        turns[cap] = orientation.read_orientations(out)
        tried[cap] = len({done for desc, done in calls if desc == "orientation, photos tried turned"})
    assert tried[1] < tried[None], tried  # measured: 4 photos tried turned against 10
    assert set(turns[1]) == set(names)
