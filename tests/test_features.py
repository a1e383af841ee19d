"""Features stage on real photos: shapes, keypoints on the original pixel grid, resumability."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree

from conftest import small_conf
from imc_lib import networks
from imc_lib.stages import features
from imc_lib.utils import full_conf


@pytest.fixture(scope="module")
def scene_dir(imc_data_dir):
    return imc_data_dir / "train" / "herzjesu-p8" / "images"


def _check(feats, width, height, dim=128):
    kpts = feats["keypoints"]
    assert kpts.dtype == np.float32 and kpts.ndim == 2 and kpts.shape[1] == 2
    assert len(kpts) > 200
    assert (kpts >= -0.5).all() and (kpts[:, 0] <= width - 0.5).all() and (kpts[:, 1] <= height - 0.5).all()
    assert feats["descriptors"].shape == (len(kpts), dim)
    assert feats["scores"].shape == (len(kpts),)
    assert tuple(feats["image_size"]) == (width, height)


def test_aliked_features_on_original_grid(tmp_path, scene_dir, aliked):
    # The same photo at full and half size is resized to the same 512 px input, so keypoints of the
    # half-size copy, scaled by 2, must land on those of the original.
    with Image.open(scene_dir / "0000.jpg") as im:
        width, height = im.size
        im.resize((width // 2, height // 2), Image.LANCZOS).save(tmp_path / "half.png")
    conf = small_conf()
    path = features.main(conf, scene_dir, ["0000.jpg"], tmp_path / "full.h5", "cpu", network=aliked)
    features.main(conf, tmp_path, ["half.png"], tmp_path / "half.h5", "cpu", network=aliked)
    full = features.read_features(path, "0000.jpg")
    half = features.read_features(tmp_path / "half.h5", "half.png")
    _check(full, width, height)
    _check(half, width // 2, height // 2)
    dist, _ = cKDTree(full["keypoints"]).query((half["keypoints"] + 0.5) * 2 - 0.5)
    assert np.median(dist) < 1.5


def test_grayscale_and_rgba_inputs(tmp_path, scene_dir, aliked):
    with Image.open(scene_dir / "0001.jpg") as im:
        small = im.resize((384, 256))
        small.convert("L").save(tmp_path / "gray.png")
        small.convert("RGBA").save(tmp_path / "rgba.png")
    path = features.main(small_conf(), tmp_path, ["gray.png", "rgba.png"], tmp_path / "f.h5", "cpu", network=aliked)
    for name in ("gray.png", "rgba.png"):
        _check(features.read_features(path, name), 384, 256)


def test_rerun_extracts_only_new_images(tmp_path, scene_dir, aliked):
    conf = small_conf()
    path = features.main(conf, scene_dir, ["0000.jpg"], tmp_path / "f.h5", "cpu", network=aliked)
    with h5py.File(path) as f:
        before = f["0000.jpg/keypoints"][()]

    def must_not_load():
        raise AssertionError("model loaded although every image was extracted")

    features.main(conf, scene_dir, ["0000.jpg"], path, "cpu", network=must_not_load)
    seen = []

    class Spy:
        def __call__(self):
            seen.append(1)
            return aliked

    features.main(conf, scene_dir, ["0000.jpg", "0002.jpg"], path, "cpu", network=Spy())
    with h5py.File(path) as f:
        assert sorted(f) == ["0000.jpg", "0002.jpg"]
        np.testing.assert_array_equal(f["0000.jpg/keypoints"][()], before)
    assert seen == [1]


def test_disk_features(tmp_path, scene_dir, weights_dir):
    conf = small_conf("disk", resize_to=400, max_keypoints=512)
    model = networks.load_extractor(conf, weights_dir, "cpu")
    path = features.main(conf, scene_dir, ["0003.jpg"], tmp_path / "d.h5", "cpu", network=model)
    feats = features.read_features(path, "0003.jpg")
    _check(feats, 1536, 1024)
    assert len(feats["keypoints"]) <= 512


def test_missing_features_file_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        features.read_features(tmp_path / "none.h5", "a.jpg")


def test_unreadable_images_are_skipped_with_their_reason(tmp_path, scene_dir, aliked, caplog):
    import shutil

    shutil.copy(scene_dir / "0000.jpg", tmp_path / "good.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not an image")
    names = ["good.jpg", "empty.jpg", "notes.jpg", "missing.jpg"]
    path = features.main(small_conf(), tmp_path, names, tmp_path / "f.h5", "cpu", network=aliked)
    assert len(features.read_features(path, "good.jpg")["keypoints"]) > 200
    failed = features.failed_images(path)
    assert sorted(failed) == ["empty.jpg", "missing.jpg", "notes.jpg"]
    assert "missing.jpg: image not found" in failed["missing.jpg"]
    assert "notes.jpg: cannot read image" in failed["notes.jpg"] and "remove or replace" in failed["notes.jpg"]
    assert all(len(features.read_features(path, n)["keypoints"]) == 0 for n in failed)
    assert "empty.jpg: cannot read image" in caplog.text


def test_out_of_memory_retries_at_lower_resolution(tmp_path, scene_dir, aliked, monkeypatch, caplog):
    real = features.extract
    sizes = []

    def flaky(model, conf, *args, **kwargs):
        sizes.append(conf["resize_to"])
        if len(sizes) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, conf, *args, **kwargs)

    monkeypatch.setattr(features, "extract", flaky)
    path = features.main(small_conf(resize_to=640), scene_dir, ["0000.jpg"], tmp_path / "f.h5", "cpu", network=aliked)
    assert sizes == [640, 448]
    assert "out of memory extracting at 640 px; retrying at 448 px" in caplog.text
    _check(features.read_features(path, "0000.jpg"), 1536, 1024)


def test_partial_conf_runs_with_the_default_s_other_keys(tmp_path, scene_dir, weights_dir):
    partial = {"output": "feats-small", "model": {"max_num_keypoints": 300}, "resize_to": 512}
    merged = full_conf(features.confs, partial, features.DEFAULT_BY)
    default = features.confs["aliked-n16"]
    assert merged == {**default, **partial, "model": {**default["model"], "max_num_keypoints": 300}}
    # main loads the extractor of the merged conf (ALIKED-n16 at the default threshold), capped at 300.
    path = features.main(partial, scene_dir, ["0000.jpg"], tmp_path / "f.h5", "cpu", weights=weights_dir)
    feats = features.read_features(path, "0000.jpg")
    assert feats["keypoints"].shape == (300, 2) and feats["descriptors"].shape == (300, 128)
    _check(feats, 1536, 1024)
    assert partial == {"output": "feats-small", "model": {"max_num_keypoints": 300}, "resize_to": 512}  # untouched


def test_a_photo_replaced_under_its_name_is_extracted_again_alone(tmp_path, scene_dir, aliked, monkeypatch):
    import shutil

    for name in ("a.jpg", "b.jpg"):
        shutil.copy(scene_dir / "0000.jpg", tmp_path / name)
    (tmp_path / "c.jpg").write_text("not an image yet")
    names = ["a.jpg", "b.jpg", "c.jpg"]
    conf = small_conf()
    path = features.main(conf, tmp_path, names, tmp_path / "f.h5", "cpu", network=aliked)
    assert sorted(features.failed_images(path)) == ["c.jpg"]
    with h5py.File(path) as f:
        before = {n: (dict(f[n].attrs), f[n]["keypoints"][()]) for n in names}

    shutil.copy(scene_dir / "0002.jpg", tmp_path / "b.jpg")  # another photo under the same name
    shutil.copy(scene_dir / "0003.jpg", tmp_path / "c.jpg")  # the unreadable file, replaced by a photo
    extracted = []
    real = features.extract_with_retry
    monkeypatch.setattr(features, "extract_with_retry", lambda *a: extracted.append(a[3]) or real(*a))
    features.main(conf, tmp_path, names, path, "cpu", network=aliked)
    assert len(extracted) == 2
    with h5py.File(path) as f:
        after = {n: (dict(f[n].attrs), f[n]["keypoints"][()]) for n in names}
    assert after["a.jpg"][0] == before["a.jpg"][0]
    np.testing.assert_array_equal(after["a.jpg"][1], before["a.jpg"][1])
    assert after["b.jpg"][0]["fingerprint"] != before["b.jpg"][0]["fingerprint"]
    fresh = features.main(conf, scene_dir, ["0002.jpg"], tmp_path / "fresh.h5", "cpu", network=aliked)
    np.testing.assert_array_equal(after["b.jpg"][1], features.read_features(fresh, "0002.jpg")["keypoints"])
    assert features.failed_images(path) == {} and len(after["c.jpg"][1]) > 200


def test_prepare_rounds_sides_down_to_the_extractor_s_multiple():
    image = np.zeros((1024, 1536, 3), np.uint8)
    assert features.prepare(image, 640, torch.device("cpu")).shape == (1, 3, 427, 640)
    assert features.prepare(image, 640, torch.device("cpu"), multiple=32).shape == (1, 3, 416, 640)
    assert features.prepare(image[:20, :40], None, torch.device("cpu"), multiple=32).shape == (1, 3, 32, 32)


def test_xfeat_features_on_original_grid(tmp_path, scene_dir, weights_dir):
    # At 640 px XFeat sees the 1536x1024 photo as 640x416 (sides rounded down to multiples of 32), so
    # its x and y scales differ. The photo squashed to 640x416 beforehand is extracted unresized: its
    # keypoints, scaled by those two factors, must land on the photo's (a single scale misses by ~10 px).
    with Image.open(scene_dir / "0000.jpg") as im:
        im.resize((640, 416), Image.LANCZOS).save(tmp_path / "squashed.png")
    conf = small_conf("xfeat", resize_to=640)
    model = networks.load_extractor(conf, weights_dir, "cpu")
    path = features.main(conf, scene_dir, ["0000.jpg"], tmp_path / "full.h5", "cpu", network=model)
    features.main(conf, tmp_path, ["squashed.png"], tmp_path / "squashed.h5", "cpu", network=model)
    full = features.read_features(path, "0000.jpg")
    squashed = features.read_features(tmp_path / "squashed.h5", "squashed.png")
    _check(full, 1536, 1024, dim=64)
    _check(squashed, 640, 416, dim=64)
    assert len(full["keypoints"]) == 1024  # max_num_keypoints of small_conf, found on a facade
    np.testing.assert_allclose(np.linalg.norm(full["descriptors"], axis=1), 1, atol=1e-4)
    assert (np.diff(full["scores"]) <= 0).all() and (full["scores"] > 0).all()
    dist, _ = cKDTree(full["keypoints"]).query((squashed["keypoints"] + 0.5) * [1536 / 640, 1024 / 416] - 0.5)
    assert np.median(dist) < 1.5 and (dist < 1.5).mean() > 0.5


def test_aliked_t16_features(tmp_path, scene_dir, weights_dir):
    conf = small_conf("aliked-t16", resize_to=400, max_keypoints=512)
    model = networks.load_extractor(conf, weights_dir, "cpu")
    path = features.main(conf, scene_dir, ["0003.jpg"], tmp_path / "t.h5", "cpu", network=model)
    feats = features.read_features(path, "0003.jpg")
    _check(feats, 1536, 1024, dim=64)
    assert len(feats["keypoints"]) == 512


def test_matcher_names_fit_the_lightglue_weights():
    assert {name: networks.lightglue_key(c) for name, c in features.confs.items()} == {
        "aliked-n16": "aliked",
        "aliked-n16rot": "aliked",
        "disk": "disk",
        "aliked-t16": "aliked-t16",  # none exists: loading LightGlue for it says so (tests/test_networks.py)
        "xfeat": "xfeat",
    }


def test_a_photo_without_keypoints_is_stored_empty(tmp_path, weights_dir):
    # A blank photo (and a 16 px one) has no keypoint above XFeat's threshold: an empty (0, 64) set, not an error.
    Image.new("RGB", (640, 480), (128, 128, 128)).save(tmp_path / "blank.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    conf = small_conf("xfeat")
    path = features.main(conf, tmp_path, ["blank.png", "tiny.png"], tmp_path / "f.h5", "cpu", weights=weights_dir)
    for name, size in (("blank.png", (640, 480)), ("tiny.png", (16, 16))):
        feats = features.read_features(path, name)
        assert feats["keypoints"].shape == (0, 2) and feats["descriptors"].shape == (0, 64)
        assert tuple(feats["image_size"]) == size
    assert features.failed_images(path) == {}
