"""The storage layer (imc_lib/io.py): readers that open a file once, fingerprints, and a photo
replaced under the same name recomputing exactly what depends on it."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import small_conf
from imc_lib import pipeline
from imc_lib.formats import submission
from imc_lib.stages import features, matching, pairs, reconstruction
from imc_lib.storage import io

ROOT = Path(__file__).resolve().parents[1]
SCENE = "herzjesu-p8"


@pytest.fixture
def opens(monkeypatch):
    """The files h5py opens during a test, in order."""
    seen = []
    real = h5py.File

    def spy(name, *args, **kwargs):
        seen.append(Path(name).name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(io.h5py, "File", spy)
    return seen


def _write_features(path: Path, names: list[str], fingerprint: str = "fp") -> None:
    rng = np.random.default_rng(0)
    for name in names:
        arrays = {
            "keypoints": rng.uniform(0, 100, (10, 2)).astype(np.float32),
            "descriptors": rng.normal(size=(10, 4)).astype(np.float32),
            "scores": np.ones(10, np.float32),
            "image_size": np.array([100, 100]),
        }
        io.write_group(path, name, arrays, {io.FINGERPRINT: f"{fingerprint}-{name}"})


def test_feature_reader_opens_once_and_keeps_the_last_few(tmp_path, opens):
    path = tmp_path / "f.h5"
    _write_features(path, ["a", "b", "c"])
    opens.clear()
    with io.FeatureReader(path, size=2) as reader:
        first = reader["a"]
        assert reader["a"] is first  # cached
        reader["b"], reader["c"]  # "a" is the least recently used: dropped
        assert list(reader.cache) == ["b", "c"]
        assert reader.fingerprint("b") == "fp-b" and reader.fingerprint("zzz") is None
        assert reader.attrs("c")[io.FINGERPRINT] == "fp-c"
        np.testing.assert_array_equal(reader["a"]["keypoints"], first["keypoints"])
        with pytest.raises(KeyError, match="no features for image 'zzz'"):
            reader["zzz"]
    assert opens == ["f.h5"]
    assert not reader.file.id.valid  # closed on leaving the block
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        io.FeatureReader(tmp_path / "none.h5")


def test_match_reader_opens_once_for_every_pair_in_either_order(tmp_path, opens):
    path = tmp_path / "m.h5"
    names = [f"{i}.jpg" for i in range(5)]
    for a, b in pairs.exhaustive_pairs(names):
        m = np.array([[0, 1], [2, 3]], np.int32)
        io.write_group(path, io.pair_key(a, b), {"matches": m, "scores": np.ones(2, np.float32)}, {"fingerprint": a})
    opens.clear()
    with io.MatchReader(path) as read:
        for a, b in pairs.exhaustive_pairs(names):
            np.testing.assert_array_equal(read(a, b)[0], [[0, 1], [2, 3]])
            np.testing.assert_array_equal(read(b, a)[0], [[1, 0], [3, 2]])
            assert read.fingerprint(b, a) == a
        with pytest.raises(KeyError, match="not matched"):
            read("0.jpg", "zzz.jpg")
    assert opens == ["m.h5"]


def test_database_reads_each_file_once(tmp_path, opens):
    # Building a COLMAP database reads every pair's matches: one open of the matches file, not one per pair.
    image_dir = ROOT / "data/train" / SCENE / "images"
    names = sorted(p.name for p in image_dir.iterdir())
    feature_path, match_path, pairs_path = tmp_path / "f.h5", tmp_path / "m.h5", tmp_path / "pairs.txt"
    _write_features(feature_path, names)
    io.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    for a, b in pairs.exhaustive_pairs(names):
        m = np.stack([np.arange(10), np.arange(10)], 1).astype(np.int32)
        io.write_group(match_path, io.pair_key(a, b), {"matches": m, "scores": np.ones(10, np.float32)})
    opens.clear()
    conf = reconstruction.confs["incremental"]
    n_images, n_pairs = reconstruction.create_database(
        conf, image_dir, names, pairs_path, feature_path, match_path, tmp_path / "db.db"
    )
    assert (n_images, n_pairs) == (8, 28)
    assert sorted(opens) == ["f.h5", "m.h5"]


def test_pending_recomputes_groups_whose_fingerprint_changed(tmp_path, caplog):
    path = tmp_path / "f.h5"
    _write_features(path, ["a", "b"])
    expected = {"a": "fp-a", "b": "other", "c": "fp-c"}
    with caplog.at_level(logging.INFO, logger="imc_lib.storage.io"):
        todo = io.pending(path, ["a", "b", "c"], ("keypoints",), False, "images", expected)
    assert todo == ["b", "c"]
    assert "reusing 1 of 3 images; 1 recomputed because their inputs changed, 1 new" in caplog.text
    assert io.pending(path, ["a"], ("keypoints",), True, "images", expected) == ["a"]  # overwrite


def test_fingerprints_follow_content_not_names(tmp_path):
    photo = tmp_path / "a.jpg"
    shutil.copy(ROOT / "data/train" / SCENE / "images/0000.jpg", photo)
    before = io.file_digest(photo)
    shutil.copy(ROOT / "data/train" / SCENE / "images/0001.jpg", photo)
    assert io.file_digest(photo) != before
    assert io.file_digest(tmp_path / "none.jpg") == "missing"
    assert io.digest({"a": 1, "b": [2]}) == io.digest({"b": [2], "a": 1})  # key order does not matter
    assert io.feature_fingerprint(before, 0, {"x": 1}) != io.feature_fingerprint(before, 1, {"x": 1})
    assert io.feature_fingerprint(before, 0, {"x": 1}) != io.feature_fingerprint(before, 0, {"x": 2})
    io.stamp(photo, "abc")
    assert io.is_current(photo, "abc") and not io.is_current(photo, "abd")
    assert not io.is_current(tmp_path / "none.jpg", "abc")


def test_a_changed_conf_under_the_same_name_recomputes(tmp_path, aliked, caplog):
    image_dir = ROOT / "data/train" / SCENE / "images"
    names = ["0000.jpg", "0001.jpg"]
    conf = small_conf(resize_to=384)
    path = features.main(conf, image_dir, names, tmp_path / "feats.h5", "cpu", network=aliked)
    before = {n: features.read_features(path, n)["keypoints"] for n in names}
    pairs_path = tmp_path / "pairs.txt"
    io.write_pairs([tuple(names)], pairs_path)
    mconf = matching.confs["mnn"]
    matches = matching.main(mconf, pairs_path, path, tmp_path / "m.h5", "aliked", "cpu")
    n_before = len(io.read_matches(matches, *names)[0])

    changed = {**conf, "resize_to": 320}  # same output name, other setting
    assert changed["output"] == conf["output"]
    with caplog.at_level(logging.INFO, logger="imc_lib.storage.io"):
        features.main(changed, image_dir, names, path, "cpu", network=aliked)
        matching.main(mconf, pairs_path, path, matches, "aliked", "cpu")  # its features changed
        stricter = {**mconf, "model": {**mconf["model"], "ratio": 0.7}}
        matching.main(stricter, pairs_path, path, matches, "aliked", "cpu")  # its conf changed
    assert "reusing 0 of 2 images; 2 recomputed because their inputs changed" in caplog.text
    assert caplog.text.count("reusing 0 of 1 pairs; 1 recomputed because their inputs changed") == 2
    for name in names:
        assert not np.array_equal(features.read_features(path, name)["keypoints"], before[name])
    assert len(io.read_matches(matches, *names)[0]) < n_before


def _turn_photo(path: Path) -> None:
    """The same photo re-exported turned a quarter turn counter-clockwise (as a photo app would)."""
    with Image.open(path) as im:
        turned = im.transpose(Image.Transpose.ROTATE_90)
    turned.save(path, quality=95)


def _rotation_angle(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def _groups(path: Path) -> dict[str, tuple[dict, dict]]:
    """Every group holding datasets ("0000.jpg", "0000.jpg/0001.jpg"): (attributes, arrays)."""
    out = {}

    def visit(key, obj):
        if isinstance(obj, h5py.Group) and any(isinstance(v, h5py.Dataset) for v in obj.values()):
            out[key] = (dict(obj.attrs), {k: v[()] for k, v in obj.items() if isinstance(v, h5py.Dataset)})

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _same(group0: tuple[dict, dict], group1: tuple[dict, dict]) -> bool:
    return (
        group0[0] == group1[0]
        and group0[1].keys() == group1[1].keys()
        and all(np.array_equal(group0[1][k], group1[1][k]) for k in group0[1])
    )


def _snapshot(scene_dir: Path) -> dict[str, dict]:
    """The features and matches groups of a run (the features file holds the photos at their final turns)."""
    [feature_path] = [p for p in scene_dir.glob("feats-*.h5") if "_matches-" not in p.name]
    [match_path] = scene_dir.glob("feats-*_matches-*.h5")
    return {"features": _groups(feature_path), "matches": _groups(match_path)}


def _roll(old: dict, new: dict, name: str, reference: str) -> np.ndarray:
    """How the camera of `name` turned between two models, taking `reference` (unchanged) as the
    link between their world frames: world-to-camera R_new = roll @ R_old @ Q.T, R_new(ref) = R_old(ref) @ Q.T."""
    return new[name] @ new[reference].T @ old[reference] @ old[name].T


@pytest.mark.slow  # two pipeline runs on the 8-photo sample (~1 min on 2 cores)
def test_a_photo_replaced_under_its_name_recomputes_exactly_what_depends_on_it(tmp_path, weights_dir, caplog):
    data_dir = tmp_path / "data"
    shutil.copytree(ROOT / "data", data_dir)
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    kwargs = {"scenes": [SCENE], "device": "cpu", "weights": weights_dir, "max_keypoints": 1024}
    pipeline.run(data_dir, out, work, **kwargs)
    first, before = submission.read_poses(out), _snapshot(work / SCENE)
    [sfm] = [p for p in (work / SCENE).iterdir() if p.is_dir() and p.name.startswith("sfm")]
    database_written = (sfm / "database.db").stat().st_mtime_ns

    changed = "0003.jpg"
    _turn_photo(data_dir / "train" / SCENE / "images" / changed)
    matched = []
    real = matching.match_with_retry
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imc_lib"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(matching, "match_with_retry", lambda *a, **k: matched.append(1) or real(*a, **k))
        pipeline.run(data_dir, out, work, **kwargs)
    second, after, log = submission.read_poses(out), _snapshot(work / SCENE), caplog.text

    # (a) features: that photo's group alone was recomputed; the others are the same, attributes and arrays.
    assert sorted(after["features"]) == sorted(before["features"]) == [f"{i:04d}.jpg" for i in range(8)]
    for name in before["features"]:
        assert _same(before["features"][name], after["features"][name]) == (name != changed), name
    assert after["features"][changed][0]["turns"] == 3  # turned back upright by the orientation stage
    assert re.search(r"feats-\S+\.h5: reusing 7 of 8 images; 1 recomputed because their inputs changed", log)
    # (b) matches: only the 7 pairs with that photo were matched again, the other 21 are untouched.
    assert len(matched) == 7
    assert re.search(r"_matches-\S+\.h5: reusing 21 of 28 pairs; 7 recomputed because their inputs changed", log)
    assert len(before["matches"]) == 28 and sorted(after["matches"]) == sorted(before["matches"])
    for key in before["matches"]:
        assert _same(before["matches"][key], after["matches"][key]) == (changed not in key), key
    assert "recomputing orientations, their inputs or conf changed" in log
    # (c) the model: database and model rebuilt; the turned photo's camera is its old one rolled by a
    # quarter turn about its optical axis, the others' are where they were.
    assert "reusing model" not in log and "recomputing model, their inputs or conf changed" in log
    assert (sfm / "database.db").stat().st_mtime_ns != database_written
    old, new = dict(zip(first["image_name"], first["R"])), dict(zip(second["image_name"], second["R"]))
    roll = _roll(old, new, changed, reference="0002.jpg")
    assert _rotation_angle(roll) == pytest.approx(90, abs=3)
    assert abs(roll[2, 2]) == pytest.approx(1, abs=0.01)  # about the optical axis
    assert _rotation_angle(_roll(old, new, "0006.jpg", reference="0002.jpg")) < 1

    # A third run with nothing changed reuses everything.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imc_lib"):
        pipeline.run(data_dir, out, work, **kwargs)
    assert "reusing model" in caplog.text and "recomputed because their inputs changed" in caplog.text
    assert not re.search(r"[1-9]\d* recomputed because their inputs changed", caplog.text)
    np.testing.assert_array_equal(np.stack(submission.read_poses(out)["R"]), np.stack(second["R"]))


def test_a_one_photo_scene_has_no_matches_file_and_gets_no_model_twice(tmp_path, caplog):
    image_dir = ROOT / "data/train" / SCENE / "images"
    feature_path, pairs_path, sfm = tmp_path / "f.h5", tmp_path / "pairs.txt", tmp_path / "sfm"
    _write_features(feature_path, ["0000.jpg"])
    io.write_pairs([], pairs_path)
    conf = reconstruction.confs["incremental"]
    args = (conf, image_dir, ["0000.jpg"], pairs_path, feature_path, tmp_path / "none.h5", sfm)
    assert reconstruction.main(*args) is None  # the matching stage wrote no file: nothing to read
    assert (sfm / "EMPTY").read_text().startswith("no image pair")
    with caplog.at_level(logging.INFO, logger="imc_lib.storage.io"):
        assert reconstruction.main(*args) is None
    assert "reusing model" in caplog.text
