"""The networks' weight loading: every official file loads whole into its kornia net; a missing, unreadable or wrong
file stops with an error naming it and the fix; features without LightGlue say which matcher to use."""

from __future__ import annotations

import shutil

import kornia.feature as KF
import pytest
import torch

from imc_lib import cli, networks, pipeline, plan, utils
from imc_lib.formats import metric
from imc_lib.networks import aliked, disk, lightglue, xfeat
from imc_lib.stages import features, matching


def load_xfeat(top_k=4096, threshold=0.05, directory=None):
    return xfeat.load({"max_num_keypoints": top_k, "detection_threshold": threshold}, directory)


def load_aliked(name, top_k=4096, directory=None):
    return aliked.load({"model_name": name, "max_num_keypoints": top_k, "detection_threshold": 0.01}, directory)


def _same_tensors(module: torch.nn.Module, state: dict) -> None:
    """Every tensor of `state` is in `module`, unchanged: the file was loaded whole."""
    own = module.state_dict()
    assert set(state) <= set(own)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_xfeat_loads_the_whole_official_file(weights_dir):
    model = load_xfeat(1000, 0.05, directory=weights_dir)
    assert isinstance(model, KF.XFeat) and not model.training
    assert (model.top_k, model.detection_threshold) == (1000, 0.05)
    state = torch.load(weights_dir / "xfeat.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(model.net.state_dict())  # strict: nothing missing, nothing left over
    _same_tensors(model.net, state)


def test_lighterglue_loads_the_matcher_half_of_its_file(weights_dir):
    model = lightglue.load_lightglue("xfeat", weights_dir)
    assert not model.training
    # kornia's settings for XFeat's LightGlue, whatever the conf asked (as kornia's own loader does).
    conf = lightglue.load_lightglue("xfeat", weights_dir, depth_confidence=0.95).conf
    assert (conf.input_dim, conf.descriptor_dim, conf.n_layers, conf.num_heads) == (64, 96, 6, 1)
    assert conf.depth_confidence == -1
    state = torch.load(weights_dir / "xfeat-lighterglue.pt", map_location="cpu", weights_only=True)
    matcher = {k.removeprefix("matcher."): v for k, v in state.items() if k.startswith("matcher.")}
    assert len(state) - len(matcher) == 122  # the rest: a copy of XFeat under `extractor.`
    _same_tensors(model, matcher)
    assert set(model.state_dict()) - set(matcher) == {"confidence_thresholds"}  # derived, not in the file


def test_aliked_t16_loads_with_64_d_descriptors(weights_dir, imc_data_dir):
    """The official file loads whole (every tensor of it, unchanged; every learned parameter from it), and a
    real photo gets 64-d unit descriptors. Buffers kornia derives (a grid, persistent or not by release)
    are not the file's business."""
    model = load_aliked("aliked-t16", 512, directory=weights_dir)
    state = torch.load(weights_dir / "aliked-t16.pth", map_location="cpu", weights_only=True)
    _same_tensors(model, state)
    assert {k for k, _ in model.named_parameters()} <= set(state)  # nothing learned left at its random start
    image = utils.read_image(imc_data_dir / "train/entry/images/0001.jpg", 512)
    tensor = features.prepare(image, 512, torch.device("cpu"), aliked.SIDE_MULTIPLE)
    with torch.inference_mode():
        keypoints, descriptors, _ = aliked.detect(model, {}, tensor)
    assert 100 < keypoints.shape[-2] <= 512 and descriptors.shape[-1] == 64
    assert torch.allclose(descriptors.norm(dim=-1), torch.ones(1), atol=1e-3)


def test_a_missing_file_is_named_with_the_fix(tmp_path):
    (tmp_path / "w").mkdir()
    with pytest.raises(networks.WeightsError, match=r"w/xfeat\.pt: weights file missing.*IMC_WEIGHTS_DIR"):
        load_xfeat(directory=tmp_path / "w")
    with pytest.raises(networks.WeightsError, match=r"w/xfeat-lighterglue\.pt: weights file missing"):
        lightglue.load_lightglue("xfeat", tmp_path / "w")
    with pytest.raises(networks.WeightsError, match=r"w/aliked-t16\.pth: weights file missing"):
        load_aliked("aliked-t16", directory=tmp_path / "w")


@pytest.mark.parametrize(
    "load, file, wrong",
    [
        (lambda d: load_xfeat(directory=d), "xfeat.pt", "aliked-t16.pth"),
        (lambda d: load_xfeat(directory=d), "xfeat.pt", "xfeat-lighterglue.pt"),  # holds XFeat, prefixed
        (lambda d: lightglue.load_lightglue("xfeat", d), "xfeat-lighterglue.pt", "xfeat.pt"),
        (lambda d: lightglue.load_lightglue("xfeat", d), "xfeat-lighterglue.pt", "aliked_lightglue.pth"),  # 9 layers
        (lambda d: load_aliked("aliked-t16", directory=d), "aliked-t16.pth", "aliked-n16.pth"),  # 128-d
        (lambda d: disk.load({}, d), "disk-depth-save.pth", "xfeat.pt"),
    ],
)
def test_a_wrong_checkpoint_is_refused_naming_the_file(tmp_path, weights_dir, load, file, wrong):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(weights_dir / wrong, folder / file)
    with pytest.raises(networks.WeightsError, match=rf"{folder}/{file}: not an official .* checkpoint.*replace it"):
        load(folder)


def test_an_unreadable_file_is_named_with_the_fix(tmp_path, weights_dir):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "xfeat.pt").write_bytes((weights_dir / "xfeat.pt").read_bytes()[:5000])  # cut short
    with pytest.raises(networks.WeightsError, match=rf"{folder}/xfeat\.pt: cannot be read as weights.*official xfeat"):
        load_xfeat(directory=folder)


def test_offline_without_a_folder_names_the_file_to_fetch(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("IMC_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(KF.XFeat, "from_pretrained", offline)
    with pytest.raises(networks.WeightsError, match=r"official XFeat weights .*holding xfeat\.pt"):
        load_xfeat()


def test_lightglue_for_aliked_t16_does_not_exist_and_says_which_matcher_to_use(weights_dir):
    with pytest.raises(networks.WeightsError, match=r"no LightGlue weights for aliked-t16.*64-d.*--matcher mnn"):
        networks.load_matcher("aliked-t16", matching.confs["lightglue"], weights_dir)


def test_a_toy_extractor_plugs_in_by_one_module_and_one_registry_entry(tmp_path, imc_data_dir, monkeypatch):
    """tests/toy_extractor.py (kornia's SIFT) and `EXTRACTORS["toy"]`: the features, matching and pipeline
    confs find it, and it reconstructs herzjesu-p8."""
    monkeypatch.setitem(networks.EXTRACTORS, "toy", "toy_extractor")
    assert "toy" in plan.confs and "toy" in features.confs and "toy" in networks.NO_LIGHTGLUE
    out = tmp_path / "submission.csv"
    result = pipeline.run(imc_data_dir, out, tmp_path / "work", scenes=["herzjesu-p8"], features="toy", device="cpu",
                          max_keypoints=1024, resize_to=640, orientation="none")  # fmt: skip
    assert result["confs"]["features"]["output"] == "feats-toy-1024-r640"
    assert (tmp_path / "work" / "herzjesu-p8" / "feats-toy-1024-r640.h5").is_file()
    scores = metric.score(imc_data_dir / "train" / "train_labels.csv", out)
    row = scores[scores["scene"] == "herzjesu-p8"].iloc[0]
    assert row["registered"] == 8 and row["mAA"] > 0.9
    with pytest.raises(networks.WeightsError, match="no LightGlue weights for toy features .*--matcher mnn"):
        plan.stage_confs(features="toy", pairs="exhaustive", matcher="lightglue")


def test_a_toy_matcher_plugs_in_by_one_module_and_one_registry_entry(tmp_path, imc_data_dir, weights_dir, capsys):
    """tests/toy_matcher.py (nearest neighbours and a ratio test, by hand) and `MATCHERS["toy"]`: the matching
    confs, the CLI's --matcher and the explorer's labels find it, and it reconstructs herzjesu-p8 from the CLI."""
    networks.register(networks.MATCHERS, "toy", "toy_matcher")
    try:
        assert "toy" in matching.confs and networks.MATCHER_LABELS["toy"] == "toy nearest neighbours"
        out, work = tmp_path / "submission.csv", tmp_path / "work"
        argv = ["run", str(imc_data_dir), "--scenes", "herzjesu-p8", "--out", str(out), "--work", str(work),
                "--weights", str(weights_dir), "--matcher", "toy", "--device", "cpu", "--max-keypoints", "1024",
                "--resize-to", "640"]  # fmt: skip
        assert cli.main(argv) == 0, capsys.readouterr().err[-2000:]
    finally:
        del networks.MATCHERS["toy"]
    assert sorted(p.name for p in (work / "herzjesu-p8").glob("*matches-toy*.h5")), list(
        (work / "herzjesu-p8").iterdir()
    )
    scores = metric.score(imc_data_dir / "train" / "train_labels.csv", out)
    row = scores[scores["scene"] == "herzjesu-p8"].iloc[0]
    assert row["registered"] == 8 and row["mAA"] > 0.9


def test_a_network_module_without_a_part_fails_when_registered_naming_it(tmp_path, monkeypatch):
    (tmp_path / "half_matcher.py").write_text('confs = {"half": {"output": "m", "model": {"name": "half"}}}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match=r"half_matcher .*needs `LABELS`"):
        networks.register(networks.MATCHERS, "half", "half_matcher")
    assert "half" not in networks.MATCHERS
    (tmp_path / "half_extractor.py").write_text("confs = {}\nSIDE_MULTIPLE = 1\nHALF = False\n")
    with pytest.raises(ImportError, match=r"half_extractor .*needs `lightglue`"):
        networks.register(networks.EXTRACTORS, "half", "half_extractor")
