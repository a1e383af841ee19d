"""Pairs stage: selection rules on hand-made descriptors, and the file plumbing with a tiny random DINOv2."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from imc_lib import networks
from imc_lib.stages import pairs
from imc_lib.utils import full_conf

DATA_DIR = Path(os.environ.get("IMC_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data/imc-mini"))
SCENE_IMAGES = DATA_DIR / "train" / "herzjesu-p8" / "images"


# --- selection rules ------------------------------------------------------------------------------


def _circle(degrees):
    """Unit vectors in the xy-plane at the given angles; chord distance grows with the angle between them."""
    a = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([a.cos(), a.sin(), torch.zeros_like(a)], dim=1)


# Three tight clusters of two (10 degrees apart, chord 0.174), clusters >= 90 degrees apart (chord >= 1.41).
CLUSTERS = _circle([0, 10, 100, 110, 220, 230])


def test_threshold_only_keeps_cluster_pairs():
    assert pairs.pairs_from_descriptors(CLUSTERS, 0.3, min_pairs=0) == [(0, 1), (2, 3), (4, 5)]


def test_min_pairs_adds_nearest_neighbours():
    # Second-nearest neighbours by angle: 0->2 (100), 1->2 (90), 2->1 (90), 3->1 (100 < 110 to 4),
    # 4->3 (110 < 140 to 0), 5->3 (120 < 130 to 0).
    expected = [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (3, 4), (3, 5), (4, 5)]
    assert pairs.pairs_from_descriptors(CLUSTERS, 0.3, min_pairs=2) == expected
    # Nearest neighbours only: the threshold alone would give nothing.
    assert pairs.pairs_from_descriptors(CLUSTERS, 0.0, min_pairs=1) == [(0, 1), (2, 3), (4, 5)]


def test_larger_scenes_keep_a_share_of_their_photos_as_neighbours():
    conf = pairs.confs["vlad"]
    assert [pairs.neighbours(conf, n) for n in (20, 119, 245, 246, 300, 363, 1117)] == [20, 20, 20, 20, 25, 30, 30]
    assert pairs.neighbours({"min_pairs": 20}, 363) == 20  # no share: min_pairs alone (dinov2)


def test_min_pairs_is_capped_at_all_other_images():
    result = pairs.pairs_from_descriptors(CLUSTERS, 0.0, min_pairs=100)
    assert result == [(i, j) for i in range(6) for j in range(i + 1, 6)]


@pytest.mark.parametrize(
    "p, expected",
    [
        (1, [(0, 1)]),
        (2.0, [(0, 1), (2, 3)]),
        (math.inf, [(0, 1), (2, 3), (4, 5)]),
        ("inf", [(0, 1), (2, 3), (4, 5)]),
    ],
)
def test_distance_norm(p, expected):
    # Far-apart pairs whose offsets are (1.1, 0), (0.8, 0.8), (1, 1):
    # L1 = 1.1, 1.6, 2; L2 = 1.1, 1.13, 1.41; Linf = 1.1, 0.8, 1; threshold 1.2.
    desc = torch.tensor([[0, 0], [1.1, 0], [10, 0], [10.8, 0.8], [20, 0], [21, 1]])
    assert pairs.pairs_from_descriptors(desc, 1.2, min_pairs=0, p=p) == expected


@pytest.mark.parametrize("p", [3, 0.5, 0, "euclid", None])
def test_invalid_p_raises(p):
    with pytest.raises(ValueError, match="p must be"):
        pairs.pairs_from_descriptors(CLUSTERS, 0.3, min_pairs=0, p=p)


def test_pairs_are_ordered_and_unique():
    desc = torch.nn.functional.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    result = pairs.pairs_from_descriptors(desc, 0.9, min_pairs=5)
    assert result == sorted(set(result))
    assert all(0 <= i < j < 30 for i, j in result)
    degree = np.bincount(np.array(result).ravel(), minlength=30)
    assert degree.min() >= 5


def test_tiny_inputs():
    assert pairs.pairs_from_descriptors(torch.zeros(0, 4), 1.0, 5) == []
    assert pairs.pairs_from_descriptors(torch.zeros(1, 4), 1.0, 5) == []
    assert pairs.pairs_from_descriptors(torch.zeros(2, 4), 1.0, 5) == [(0, 1)]


def test_exhaustive_pairs_follow_name_order():
    assert pairs.exhaustive_pairs(["c", "a", "b"]) == [("c", "a"), ("c", "b"), ("a", "b")]
    assert pairs.exhaustive_pairs(["a"]) == []


def test_read_pairs_missing_file_says_what_to_do(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="pairs stage") as err:
        pairs.read_pairs(path)
    assert str(path) in str(err.value)


def test_read_pairs_rejects_malformed_lines(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("a b\n\nc\n")
    with pytest.raises(ValueError, match=":3:"):
        pairs.read_pairs(path)


# --- plumbing with a tiny random DINOv2 -------------------------------------------------------------


def _tiny_dinov2():
    """A random-weight (processor, Dinov2Model) shaped like facebook/dinov2-base's, but tiny."""
    from transformers import Dinov2Config, Dinov2Model

    try:  # transformers >= 5 without torchvision: the PIL backend AutoImageProcessor falls back to
        from transformers import BitImageProcessorPil as Processor
    except ImportError:
        from transformers import BitImageProcessor as Processor
    # dinov2-base: resize shortest edge 256 (bicubic), centre crop 224, ImageNet mean/std.
    processor = Processor(
        size={"shortest_edge": 64},
        crop_size={"height": 56, "width": 56},
        resample=3,
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=56, patch_size=14
    )
    return processor, Dinov2Model(config).eval()


class CallCounter:
    """Counts forward passes of a module while installed."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(lambda *args: setattr(self, "calls", self.calls + 1))


class Unusable(torch.nn.Module):
    """Stands in for a model that must not be touched."""

    def forward(self, *args, **kwargs):
        raise AssertionError("the DINOv2 model was called")

    def to(self, *args, **kwargs):
        raise AssertionError("the DINOv2 model was used")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """herzjesu-p8 downscaled to 96 px wide, to keep the test fast."""
    sources = sorted(SCENE_IMAGES.glob("*.jpg"))
    if not sources:
        pytest.skip(f"{SCENE_IMAGES}: no images; set IMC_DATA_DIR to the imc-mini data folder")
    image_dir = tmp_path_factory.mktemp("images")
    for src in sources:
        with Image.open(src) as im:
            im.convert("RGB").resize((96, 64), Image.BILINEAR).save(image_dir / src.name)
    return image_dir, [p.name for p in sources]


@pytest.fixture(scope="module")
def tiny_model():
    return _tiny_dinov2()


def _retrieval_conf(**kw):
    return {**pairs.confs["dinov2"], "exhaustive_if_less": 2, **kw}


def _check_pairs_file(path, names, min_pairs):
    lines = path.read_text().splitlines()
    result = pairs.read_pairs(path)
    assert len(lines) == len(result) == len(set(result))
    order = {n: i for i, n in enumerate(names)}
    assert all(a in order and b in order and order[a] < order[b] for a, b in result)
    for name in names:
        assert sum(name in pair for pair in result) >= min_pairs
    return result


def test_retrieval_writes_descriptors_and_pairs(scene, tiny_model, tmp_path):
    image_dir, names = scene
    pairs_path, desc_path = tmp_path / "pairs.txt", tmp_path / "global.h5"
    # Threshold 0: pairs come from the nearest-neighbour rule alone.
    conf = _retrieval_conf(max_distance=0.0, min_pairs=3)
    out = pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", network=tiny_model)
    assert out == pairs_path
    with h5py.File(desc_path, "r") as f:
        assert sorted(f.keys()) == sorted(names)
        desc = np.stack([f[n]["global_descriptor"][()] for n in names])
    assert desc.shape == (len(names), 32)
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    result = _check_pairs_file(pairs_path, names, min_pairs=3)
    assert len(result) < len(names) * (len(names) - 1) // 2
    expected = pairs.pairs_from_descriptors(torch.from_numpy(desc), 0.0, 3)
    assert result == [(names[i], names[j]) for i, j in expected]
    assert not list(tmp_path.glob("*.tmp"))


def test_small_scene_is_exhaustive_without_dinov2(scene, tmp_path, monkeypatch, caplog):
    image_dir, names = scene

    def no_load(*args, **kwargs):
        raise AssertionError("DINOv2 was loaded")

    monkeypatch.setattr(networks, "load_dinov2", no_load)
    conf = _retrieval_conf(exhaustive_if_less=len(names) + 1)
    with caplog.at_level(logging.INFO, logger="imc_lib.stages.pairs"):
        pairs.main(conf, image_dir, names, tmp_path / "a.txt", tmp_path / "a.h5")
        pairs.main(conf, image_dir, names, tmp_path / "b.txt", tmp_path / "b.h5", network=(None, Unusable()))
    assert "exhaustive" in caplog.text
    for name in ("a", "b"):
        assert pairs.read_pairs(tmp_path / f"{name}.txt") == pairs.exhaustive_pairs(names)
        assert len(pairs.read_pairs(tmp_path / f"{name}.txt")) == len(names) * (len(names) - 1) // 2
        assert not (tmp_path / f"{name}.h5").exists()


def test_exhaustive_method(scene, tmp_path):
    image_dir, names = scene
    path = pairs.main(pairs.confs["exhaustive"], image_dir, names, tmp_path / "pairs.txt")
    assert pairs.read_pairs(path) == pairs.exhaustive_pairs(names)


def test_rerun_reuses_and_overwrite_recomputes(scene, tmp_path, caplog):
    image_dir, names = scene
    tiny_model = _tiny_dinov2()  # its own, so the forward hook stays local to this test
    counter = CallCounter(tiny_model[1])
    pairs_path, desc_path = tmp_path / "pairs.txt", tmp_path / "global.h5"
    conf = _retrieval_conf(min_pairs=2)
    pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", network=tiny_model)
    assert counter.calls == len(names)
    first = pairs_path.read_text()

    # Existing pairs file: reused without touching the model.
    os.utime(pairs_path, ns=(1_000_000_000, 1_000_000_000))
    with caplog.at_level(logging.INFO, logger="imc_lib.storage.io"):
        pairs.main(conf, image_dir, names, pairs_path, desc_path, network=(None, Unusable()))
    assert "reusing pairs" in caplog.text
    assert pairs_path.stat().st_mtime_ns == 1_000_000_000

    # Missing pairs file, descriptors for all but one image cached: only that one is computed.
    pairs_path.unlink()
    with h5py.File(desc_path, "a") as f:
        del f[names[3]]
    pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", network=tiny_model)
    assert counter.calls == len(names) + 1
    assert pairs_path.read_text() == first

    # All descriptors cached: the model is not even needed.
    pairs_path.unlink()
    pairs.main(conf, image_dir, names, pairs_path, desc_path, network=(None, Unusable()))
    assert pairs_path.read_text() == first

    # overwrite: everything recomputed and rewritten.
    pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", overwrite=True, network=tiny_model)
    assert counter.calls == 2 * len(names) + 1
    assert pairs_path.stat().st_mtime_ns != 1_000_000_000
    assert pairs_path.read_text() == first


def test_a_photo_replaced_under_its_name_gets_a_new_descriptor_and_new_pairs(scene, tmp_path):
    image_dir, names = scene
    image_dir = Path(shutil.copytree(image_dir, tmp_path / "images"))
    tiny_model = _tiny_dinov2()
    counter = CallCounter(tiny_model[1])
    pairs_path, desc_path = tmp_path / "pairs.txt", tmp_path / "global.h5"
    conf = _retrieval_conf(max_distance=0.0, min_pairs=2)
    pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", network=tiny_model)
    with h5py.File(desc_path, "r") as f:
        before = {n: f[n]["global_descriptor"][()] for n in names}
    first = pairs_path.read_text()

    Image.new("RGB", (96, 64), (200, 30, 30)).save(image_dir / names[5])  # a different photo, same name
    pairs.main(conf, image_dir, names, pairs_path, desc_path, device="cpu", network=tiny_model)
    assert counter.calls == len(names) + 1  # that photo's descriptor alone
    with h5py.File(desc_path, "r") as f:
        after = {n: f[n]["global_descriptor"][()] for n in names}
    assert [n for n in names if not np.array_equal(before[n], after[n])] == [names[5]]
    assert pairs_path.read_text() != first  # a plain red photo has other nearest neighbours

    # A changed conf under the same output name: the pairs are selected again, descriptors reused.
    pairs.main({**conf, "min_pairs": 7}, image_dir, names, pairs_path, desc_path, network=(None, Unusable()))
    assert len(pairs.read_pairs(pairs_path)) == len(names) * (len(names) - 1) // 2


def test_model_loaded_from_local_directory(scene, tiny_model, tmp_path, monkeypatch):
    """conf['model'] as a saved directory goes through networks.load_dinov2, offline."""
    image_dir, names = scene
    processor, model = tiny_model
    weights = tmp_path / "dinov2"
    processor.save_pretrained(weights)
    model.save_pretrained(weights)
    calls = []
    real_load = networks.load_dinov2
    monkeypatch.setattr(networks, "load_dinov2", lambda source=None: calls.append(source) or real_load(source))
    conf = _retrieval_conf(model=str(weights), min_pairs=1)
    pairs.main(conf, image_dir, names, tmp_path / "pairs.txt", tmp_path / "global.h5", device="cpu")
    assert calls == [str(weights)]
    _check_pairs_file(tmp_path / "pairs.txt", names, min_pairs=1)


def test_missing_dinov2_directory_names_the_path(scene, tmp_path):
    image_dir, names = scene
    missing = tmp_path / "no-dinov2-here"
    with pytest.raises(FileNotFoundError) as err:
        pairs.main(
            _retrieval_conf(model=str(missing)),
            image_dir,
            names,
            tmp_path / "pairs.txt",
            tmp_path / "global.h5",
            device="cpu",
        )
    assert str(missing) in str(err.value)
    assert not (tmp_path / "pairs.txt").exists()


def test_bad_conf_fails_early(scene, tmp_path):
    image_dir, names = scene
    with pytest.raises(ValueError, match="p must be"):
        pairs.main(_retrieval_conf(p=3), image_dir, names, tmp_path / "p.txt", network=(None, Unusable()))
    with pytest.raises(ValueError, match="unknown pairs method"):
        pairs.main({"method": "bogus"}, image_dir, names, tmp_path / "p.txt")
    with pytest.raises(ValueError, match="duplicate"):
        pairs.main(pairs.confs["exhaustive"], image_dir, names + names[:1], tmp_path / "p.txt")


# --- weight-free retrieval: VLAD over the scene's own features ---------------------------------------


def test_kmeans_plusplus_draws_scipy_s_seeds():
    """The vocabulary's seeding is scipy's k-means++ (same draws, same centres), only faster."""
    from scipy.cluster.vq import kmeans2

    rng = np.random.default_rng(3)
    for n, d, k in [(500, 16, 8), (2000, 128, 64), (40, 8, 40)]:
        data = rng.standard_normal((n, d)).astype(np.float32)
        expected, _ = kmeans2(data, k, iter=5, minit="++", seed=0)
        got, _ = kmeans2(data, pairs.kmeans_plusplus(data, k, 0), iter=5, minit="matrix")
        np.testing.assert_array_equal(got, expected)
        assert len(np.unique(pairs.kmeans_plusplus(data, k, 0), axis=0)) == k  # distinct seeds


def test_vlad_is_unit_length_and_zero_for_no_descriptors():
    rng = np.random.default_rng(0)
    centres = pairs.vlad_vocabulary(rng.normal(size=(500, 8)), clusters=4)
    assert centres.shape == (4, 8)
    v = pairs.vlad(rng.normal(size=(50, 8)), centres)
    assert v.shape == (32,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    assert not pairs.vlad(np.zeros((0, 8)), centres).any()


def _covisible(data_dir, scene, names, degrees=30.0):
    """Pairs whose ground-truth optical axes differ by less than `degrees` (the pairs that matter)."""
    from imc_lib.formats import submission

    labels = submission.read_poses(data_dir / "train" / "train_labels.csv", "labels")
    labels = labels[labels["scene"] == scene].set_index("image_name")
    axes = np.stack([labels.loc[n, "R"][2] for n in names])
    close = axes @ axes.T > np.cos(np.radians(degrees))
    return {(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names)) if close[i, j]}


# Upright scenes: VLAD of photos stored upside down relative to each other misses some of their pairs
# (temple: 13 of 16), which the pipeline selects again once the orientation stage turned them
# (tests/test_pipeline.py::test_vlad_pairs_after_turning_recover_the_pairs_across_turned_photos).
@pytest.mark.parametrize("scene_name", ["fountain", "entry"])
def test_vlad_pairs_recall_the_covisible_pairs_of_a_real_scene(scene_name, imc_data_dir, weights_dir, aliked, tmp_path):
    from conftest import small_conf
    from imc_lib.stages import features

    image_dir = imc_data_dir / "train" / scene_name / "images"
    names = sorted(p.name for p in image_dir.iterdir())
    feature_path = tmp_path / "feats.h5"
    features.main(small_conf(resize_to=512), image_dir, names, feature_path, "cpu", network=aliked)
    conf = {**pairs.confs["vlad"], "min_pairs": 4}
    out = pairs.main(conf, image_dir, names, tmp_path / "pairs-vlad.txt", feature_path=feature_path)
    chosen = {tuple(p) for p in pairs.read_pairs(out)}
    wanted = _covisible(imc_data_dir, scene_name, names)
    assert len(chosen) < len(names) * (len(names) - 1) // 2  # it selects (about half of the pairs here)
    # Half the pairs drawn at random would hold about half of those that matter; VLAD holds 80%+
    # (entry 18/21 or 19/21 as the k-means vocabulary varies, fountain 21/21) ...
    assert wanted and len(chosen & wanted) / len(wanted) >= 0.8, sorted(wanted - chosen)
    for name in names:
        assert sum(name in p for p in chosen) >= 4
        # ... and every photo keeps a partner it truly shares a view with, so mapping can reach it.
        assert any(name in p for p in chosen & wanted), name


def test_vlad_needs_the_features_file(scene, tmp_path):
    image_dir, names = scene
    with pytest.raises(ValueError, match="feature_path"):
        pairs.main(pairs.confs["vlad"], image_dir, names, tmp_path / "p.txt")


def test_partial_conf_is_merged_over_the_method_s_conf(scene, tmp_path):
    image_dir, names = scene
    for method, name in (("retrieval", "dinov2"), ("vlad", "vlad"), ("exhaustive", "exhaustive")):
        assert full_conf(pairs.confs, {"method": method, "min_pairs": 3}, pairs.DEFAULT_BY) == {
            **pairs.confs[name],
            "min_pairs": 3,
        }
    assert full_conf(pairs.confs, {"output": "pairs-mine"}, pairs.DEFAULT_BY) == {
        **pairs.confs["exhaustive"],
        "output": "pairs-mine",
    }
    # One key: DINOv2's exhaustive_if_less (20) applies, so 8 photos get every pair and no model runs.
    path = pairs.main({"method": "retrieval"}, image_dir, names, tmp_path / "p.txt", network=(None, Unusable()))
    assert pairs.read_pairs(path) == pairs.exhaustive_pairs(names)
