"""Conf merging (utils.merge_conf, named_default, full_conf): a partial conf over the named default."""

from __future__ import annotations

import copy

from imc_lib import features, reconstruction
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
