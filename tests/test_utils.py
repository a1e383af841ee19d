"""Conf merging (utils.merge_conf, named_default, full_conf): a partial conf over the named default;
reading photos of any size (utils.read_image, image_size, colmap_image_dir)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

from imc_lib import utils
from imc_lib.stages import features, reconstruction
from imc_lib.utils import full_conf, merge_conf, named_default

DEFAULT = {"output": "d", "model": {"name": "a", "k": 1, "deep": {"x": 1, "y": 2}}, "tags": [1, 2], "none": None}


def test_merge_conf_merges_nested_dicts_key_by_key():
    merged = merge_conf(DEFAULT, {"model": {"k": 5, "deep": {"y": 3}}, "extra": 7})
    assert merged == {
        "output": "d",
        "model": {"name": "a", "k": 5, "deep": {"x": 1, "y": 3}},
        "tags": [1, 2],
        "none": None,
        "extra": 7,  # keys the default lacks are kept, as LightGlue's {**default_conf, **conf}
    }


def test_merge_conf_replaces_what_is_not_a_dict_on_both_sides():
    assert merge_conf(DEFAULT, {"none": {"a": 1}})["none"] == {"a": 1}  # a dict over None
    assert merge_conf(DEFAULT, {"model": None})["model"] is None  # None over a dict
    assert merge_conf(DEFAULT, {"tags": [3]})["tags"] == [3]  # lists are values, not merged
    assert merge_conf(DEFAULT, None) == merge_conf(DEFAULT, {}) == DEFAULT


def test_merge_conf_changes_neither_argument_and_shares_nothing():
    before, conf = copy.deepcopy(DEFAULT), {"model": {"deep": {"x": 9}}, "list": [1]}
    merged = merge_conf(DEFAULT, conf)
    merged["model"]["deep"]["y"] = 100
    merged["tags"].append(3)
    merged["list"].append(2)
    assert DEFAULT == before and conf == {"model": {"deep": {"x": 9}}, "list": [1]}


def test_named_default_is_the_entry_the_conf_names_else_the_first():
    confs = features.confs
    keys = features.DEFAULT_BY
    assert named_default(confs, {}, keys) is confs["aliked-n16"]
    assert named_default(confs, None, keys) is confs["aliked-n16"]
    assert named_default(confs, {"model": {"name": "disk"}}, keys) is confs["disk"]
    assert named_default(confs, {"model": {"model_name": "aliked-n16rot"}}, keys) is confs["aliked-n16rot"]
    assert named_default(confs, {"output": "feats-disk", "resize_to": 640}, keys) is confs["disk"]
    # A name no entry has: the first entry agreeing on the other keys (here the model name).
    assert named_default(confs, {"output": "mine", "model": {"name": "disk"}}, keys) is confs["disk"]
    assert named_default(confs, {"output": "mine"}, keys) is confs["aliked-n16"]


def test_full_conf_of_the_global_mapper_merges_its_own_options():
    conf = full_conf(reconstruction.confs, {"mapper": "global", "options": {"max_num_models": 2}}, ("mapper",))
    assert conf == {**reconstruction.confs["global"], "options": {"min_model_size": 3, "max_num_models": 2}}


@pytest.fixture
def small_limits(monkeypatch):
    """PIL's bomb limit and the decoded-size bound scaled down 40000 times, so 400x400 stands for 80000x80000."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)  # PIL refuses photos over 3200 pixels
    monkeypatch.setattr(utils, "MAX_DECODED_PIXELS", 100 * 100)


def _photo(path, side: int, **save) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **save)


def test_a_photo_over_pil_s_bomb_limit_is_read_reduced_or_refused_by_the_decoded_bound(tmp_path, small_limits):
    _photo(tmp_path / "big.jpg", 400)
    _photo(tmp_path / "big.png", 400)
    _photo(tmp_path / "middle.png", 90)  # over PIL's limit, within ours
    assert utils.image_size(tmp_path / "big.jpg") == utils.image_size(tmp_path / "big.png") == (400, 400)
    assert utils.read_image(tmp_path / "big.jpg").shape == (100, 100, 3)  # 1/4: the least reduction that fits
    assert utils.read_image(tmp_path / "big.jpg", max_side=30).shape == (50, 50, 3)  # 1/8: as far as JPEG goes
    assert utils.read_image(tmp_path / "middle.png").shape == (90, 90, 3)
    with pytest.raises(utils.PhotoTooLarge, match=r"big\.png: a 400x400 PNG photo is over the 0\.01 megapixels"):
        utils.read_image(tmp_path / "big.png")
    assert issubclass(utils.PhotoTooLarge, utils.ImageError)  # every stage skips it like an unreadable photo
    assert Image.MAX_IMAGE_PIXELS == 40 * 40  # PIL's limit is lifted for our reads only


def test_colmap_reads_photos_over_the_bound_as_reduced_copies(tmp_path, small_limits):
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "Maker"  # Make: COLMAP's focal guess reads the EXIF of the copy
    _photo(photos / "big.jpg", 400, exif=exif)
    _photo(photos / "small.jpg", 60)
    assert utils.colmap_image_dir(photos, ["small.jpg"], tmp_path / "view") == (photos, {})
    assert not (tmp_path / "view").exists()  # nothing too large: COLMAP reads the photos themselves

    folder, scales = utils.colmap_image_dir(photos, ["big.jpg", "small.jpg"], tmp_path / "view")
    assert folder == tmp_path / "view" and list(scales) == ["big.jpg"]
    np.testing.assert_allclose(scales["big.jpg"], [1 / 8, 1 / 8])
    with utils.open_image(folder / "big.jpg") as copy_:
        assert copy_.size == (50, 50) and copy_.getexif()[0x010F] == "Maker"
    assert (folder / "small.jpg").resolve() == (photos / "small.jpg").resolve()
