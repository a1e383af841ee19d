"""Matching stage on real photos: overlapping pairs match, unrelated ones are dropped, indices valid."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from conftest import small_conf
from imc_lib import networks
from imc_lib.stages import features, matching, pairs
from imc_lib.utils import full_conf


@pytest.fixture(scope="module")
def feats(tmp_path_factory, imc_data_dir, aliked):
    """Features of two overlapping facade photos and one unrelated temple photo, in one folder."""
    folder = tmp_path_factory.mktemp("images")
    shutil.copy(imc_data_dir / "train/herzjesu-p8/images/0000.jpg", folder / "a.jpg")
    shutil.copy(imc_data_dir / "train/herzjesu-p8/images/0001.jpg", folder / "b.jpg")
    shutil.copy(imc_data_dir / "train/temple/images/templeSR0001.png", folder / "t.png")
    path = folder / "feats.h5"
    features.main(small_conf(), folder, ["a.jpg", "b.jpg", "t.png"], path, "cpu", network=aliked)
    return path


def test_overlapping_pair_matches_and_unrelated_pair_is_dropped(tmp_path, feats, lightglue_aliked):
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg"), ("a.jpg", "t.png")], pairs_path)
    # LightGlue finds a few dozen chance matches between unrelated photos; a stricter
    # min_matches than the default 15 shows the drop (geometric verification rejects the rest).
    conf = {**matching.confs["lightglue"], "min_matches": 60}
    path = matching.main(conf, pairs_path, feats, tmp_path / "m.h5", "aliked", "cpu", network=lightglue_aliked)

    m, s = matching.read_matches(path, "a.jpg", "b.jpg")
    n0 = len(features.read_features(feats, "a.jpg")["keypoints"])
    n1 = len(features.read_features(feats, "b.jpg")["keypoints"])
    assert m.dtype == np.int32 and m.shape[1] == 2 and len(m) > 100
    assert (m[:, 0] < n0).all() and (m[:, 1] < n1).all() and (m >= 0).all()
    assert len(np.unique(m[:, 0])) == len(m) and len(np.unique(m[:, 1])) == len(m)  # one-to-one
    assert s.shape == (len(m),) and (s > conf["model"]["filter_threshold"]).all() and (s <= 1).all()
    # The reverse order reads the same matches with columns swapped.
    m_rev, _ = matching.read_matches(path, "b.jpg", "a.jpg")
    np.testing.assert_array_equal(m_rev, m[:, ::-1])
    # Facade vs. temple: fewer than min_matches, stored empty so a rerun does not redo it.
    m_bad, _ = matching.read_matches(path, "a.jpg", "t.png")
    assert m_bad.shape == (0, 2)


def test_rerun_matches_only_new_pairs(tmp_path, feats, lightglue_aliked):
    conf = matching.confs["lightglue"]
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg")], pairs_path)
    path = matching.main(conf, pairs_path, feats, tmp_path / "m.h5", "aliked", "cpu", network=lightglue_aliked)

    def must_not_load():
        raise AssertionError("matcher loaded although every pair was matched")

    matching.main(conf, pairs_path, feats, path, "aliked", "cpu", network=must_not_load)
    pairs.write_pairs([("a.jpg", "b.jpg"), ("b.jpg", "t.png")], pairs_path)
    matching.main(conf, pairs_path, feats, path, "aliked", "cpu", network=lightglue_aliked)
    with h5py.File(path) as f:
        assert sorted(f) == ["a.jpg", "b.jpg"] and "t.png" in f["b.jpg"]


def test_missing_inputs_name_the_stage_to_run(tmp_path, feats):
    with pytest.raises(FileNotFoundError, match="run the matching stage"):
        matching.read_matches(tmp_path / "none.h5", "a.jpg", "b.jpg")
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "zzz.jpg")], pairs_path)
    with pytest.raises(KeyError, match="run the features stage"):
        matching.main(
            matching.confs["lightglue"],
            pairs_path,
            feats,
            tmp_path / "m.h5",
            "aliked",
            "cpu",
            network=lambda: lambda data: None,
        )


def test_out_of_memory_retries_with_the_strongest_keypoints(tmp_path, feats, lightglue_aliked, monkeypatch, caplog):
    real = matching.match_pair
    seen = []

    def flaky(model, f0, f1, device):
        seen.append((len(f0["keypoints"]), len(f1["keypoints"])))
        if len(seen) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, f0, f1, device)

    monkeypatch.setattr(matching, "match_pair", flaky)
    f0, f1 = features.read_features(feats, "a.jpg"), features.read_features(feats, "b.jpg")
    m, s = matching.match_with_retry(lightglue_aliked, f0, f1, "cpu")
    half = max(len(f0["keypoints"]), len(f1["keypoints"])) // 2
    assert seen[1] == (min(half, len(f0["keypoints"])), min(half, len(f1["keypoints"])))
    assert "out of memory matching" in caplog.text
    # Indices refer to the full keypoint lists, and only to the strongest half of them.
    strongest0 = set(np.argsort(-f0["scores"])[:half])
    assert len(m) > 50 and set(m[:, 0]) <= strongest0 and (m[:, 1] < len(f1["keypoints"])).all()


def test_partial_conf_takes_the_named_matcher_s_defaults(tmp_path, feats):
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg")], pairs_path)
    partial = {"model": {"name": "mnn"}}
    assert full_conf(matching.confs, partial, matching.DEFAULT_BY) == matching.confs["mnn"]
    assert full_conf(matching.confs, {"min_matches": 60}, matching.DEFAULT_BY) == {
        **matching.confs["lightglue"],
        "min_matches": 60,
    }
    # mnn needs no weights: main loads it from the merged conf (ratio 0.9, min_matches 15).
    path = matching.main(partial, pairs_path, feats, tmp_path / "m.h5", "aliked", "cpu")
    full = matching.main(matching.confs["mnn"], pairs_path, feats, tmp_path / "full.h5", "aliked", "cpu")
    m, _ = matching.read_matches(path, "a.jpg", "b.jpg")
    assert len(m) > 15
    np.testing.assert_array_equal(m, matching.read_matches(full, "a.jpg", "b.jpg")[0])


@pytest.fixture(scope="module")
def fast_feats(tmp_path_factory, imc_data_dir, weights_dir):
    """extractor name -> its features (small_conf: 1024 keypoints at 512 px) of two overlapping facade
    photos and one unrelated temple photo, extracted once per module."""
    folder = tmp_path_factory.mktemp("pair")
    shutil.copy(imc_data_dir / "train/herzjesu-p8/images/0000.jpg", folder / "a.jpg")
    shutil.copy(imc_data_dir / "train/herzjesu-p8/images/0001.jpg", folder / "b.jpg")
    shutil.copy(imc_data_dir / "train/temple/images/templeSR0001.png", folder / "t.png")
    done = {}

    def get(extractor: str):
        if extractor not in done:
            done[extractor] = features.main(small_conf(extractor), folder, ["a.jpg", "b.jpg", "t.png"],
                                            folder / f"{extractor}.h5", "cpu", weights=weights_dir)  # fmt: skip
        return done[extractor]

    return get


def _fundamental_inliers(feats_path, match_path, name0, name1) -> int:
    """Inliers of a fundamental matrix fitted (LO-RANSAC, 2 px) to the stored matches of a pair."""
    import pycolmap

    m, _ = matching.read_matches(match_path, name0, name1)
    p0 = features.read_features(feats_path, name0)["keypoints"][m[:, 0]].astype(np.float64)
    p1 = features.read_features(feats_path, name1)["keypoints"][m[:, 1]].astype(np.float64)
    options = pycolmap.RANSACOptions()
    options.max_error = 2.0
    return pycolmap.estimate_fundamental_matrix(p0, p1, options)["num_inliers"]


@pytest.mark.parametrize(
    "extractor, matcher, at_least",  # inliers measured: 262, 139, 416 (of 1024 keypoints at 512 px)
    [("xfeat", "lightglue", 150), ("xfeat", "mnn", 80), ("aliked-t16", "mnn", 250)],
)
def test_fast_extractors_match_a_real_pair(tmp_path, fast_feats, weights_dir, extractor, matcher, at_least):
    feats_path = fast_feats(extractor)
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg"), ("a.jpg", "t.png")], pairs_path)
    name = networks.lightglue_key(small_conf(extractor))  # LighterGlue for XFeat
    path = matching.main(matching.confs[matcher], pairs_path, feats_path, tmp_path / "m.h5", name, "cpu",
                         weights=weights_dir)  # fmt: skip
    m, s = matching.read_matches(path, "a.jpg", "b.jpg")
    assert len(m) > at_least and len(np.unique(m[:, 0])) == len(m) and len(np.unique(m[:, 1])) == len(m)
    assert (m[:, 0] < 1024).all() and (m[:, 1] < 1024).all() and ((s > 0) & (s <= 1)).all()
    assert _fundamental_inliers(feats_path, path, "a.jpg", "b.jpg") > at_least
    assert matching.read_matches(path, "a.jpg", "t.png")[0].shape == (0, 2)  # facade vs. temple: dropped


def test_lightglue_with_aliked_t16_stops_naming_the_matcher_to_use(tmp_path, fast_feats, weights_dir):
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg")], pairs_path)
    name = networks.lightglue_key(small_conf("aliked-t16"))
    with pytest.raises(networks.WeightsError, match="no LightGlue weights for aliked-t16 .*--matcher mnn"):
        matching.main(matching.confs["lightglue"], pairs_path, fast_feats("aliked-t16"), tmp_path / "m.h5", name,
                      "cpu", weights=weights_dir)  # fmt: skip
    assert not (tmp_path / "m.h5").exists()


def test_weak_pairs_are_those_of_weakly_tied_photos():
    """A photo with fewer than min_strong_pairs strong pairs is weakly tied; only its weak pairs are rescued."""
    counts = {("a", "b"): 200, ("a", "c"): 150, ("b", "c"): 120, ("c", "d"): 20, ("a", "d"): 0, ("b", "e"): 10}
    assert matching.weak_pairs(counts, strong=50, min_strong_pairs=2) == [("c", "d"), ("a", "d"), ("b", "e")]
    assert matching.weak_pairs(counts, strong=50, min_strong_pairs=0) == []
    assert matching.weak_pairs({("a", "b"): 200}, strong=50, min_strong_pairs=3) == []  # weak photo, strong pair


def test_rescue_matches_weak_pairs_again_with_lightglue_and_keeps_the_more(tmp_path, feats, lightglue_aliked):
    """mnn+lightglue: nearest neighbours first; every pair weak here (strong set above any count), so
    LightGlue matches each again and a pair keeps whichever found more; a rerun matches nothing."""
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs([("a.jpg", "b.jpg"), ("a.jpg", "t.png")], pairs_path)
    mnn = {**matching.confs["mnn+lightglue"], "rescue": None}
    plain = matching.main(mnn, pairs_path, feats, tmp_path / "mnn.h5", "aliked", "cpu")
    before = len(matching.read_matches(plain, "a.jpg", "b.jpg")[0])
    conf = {**matching.confs["mnn+lightglue"], "rescue": {**matching.confs["mnn+lightglue"]["rescue"], "strong": 10**6}}
    path = matching.main(conf, pairs_path, feats, tmp_path / "m.h5", "aliked", "cpu")
    assert len(matching.read_matches(path, "a.jpg", "b.jpg")[0]) == before  # nearest neighbours' alone, so far
    assert matching.rescue(conf, pairs_path, feats, path, "aliked", "cpu", network=lightglue_aliked) >= 1
    rescued = len(matching.read_matches(path, "a.jpg", "b.jpg")[0])
    a, b = (features.read_features(feats, n) for n in ("a.jpg", "b.jpg"))
    lightglue = len(matching.match_pair(lightglue_aliked, a, b, torch.device("cpu"))[0])
    assert rescued == max(before, lightglue) and lightglue > before
    with h5py.File(path) as f:
        assert f["a.jpg"]["b.jpg"].attrs["rescued"] and f["a.jpg"]["t.png"].attrs["rescued"]

    def must_not_load():
        raise AssertionError("LightGlue loaded although every weak pair was rescued")

    assert matching.rescue(conf, pairs_path, feats, path, "aliked", "cpu", network=must_not_load) == 0
    matching.main(conf, pairs_path, feats, path, "aliked", "cpu", network=must_not_load)  # main keeps them too
