"""End to end on a real scene with real weights: CLI run -> submission.csv -> score, rerun, failures."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imc_lib import cli, networks, pipeline, plan, runner, utils
from imc_lib.formats import data, metric, report, submission
from imc_lib.stages import features, matching, orientation, pairs, reconstruction
from imc_lib.storage import lock

ROOT = Path(__file__).resolve().parents[1]
SCENE = "herzjesu-p8"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, imc_data_dir, weights_dir):
    """One real run of herzjesu-p8 (8 photos, all 28 pairs) at 1024 keypoints."""
    work = tmp_path_factory.mktemp("run")
    argv = [
        "run",
        str(imc_data_dir),
        "--scenes",
        SCENE,
        "--max-keypoints",
        "1024",
        "--work",
        str(work / "work"),
        "--out",
        str(work / "submission.csv"),
        "--weights",
        str(weights_dir),
        "--device",
        "cpu",
    ]
    assert cli.main(argv) == 0
    return work, argv


def test_end_to_end_scores_at_least_sift(run_dir, imc_data_dir):
    work, _ = run_dir
    table = metric.score(imc_data_dir / "train/train_labels.csv", work / "submission.csv")
    row = table[table["scene"] == SCENE].iloc[0]
    assert row["registered"] == 8
    assert row["mAA"] >= 1.0  # plain COLMAP SIFT gets 1.000 here (shared/data/README.md)


def test_cpu_run_uses_the_speed_settings_it_was_not_told_otherwise(run_dir):
    # --max-keypoints 1024 given; the rest are plan.CPU_DEFAULTS: each photo at its own size within
    # 640-1024 px, mnn matching, and the orientation from the main features (not the upright config's
    # own low-resolution pass).
    work, _ = run_dir
    files = sorted(p.name for p in (work / "work").rglob("*") if p.is_file())
    assert any(f.startswith("orient-mnn_") and f.endswith(".csv") for f in files), files
    assert "feats-aliked-n16-1024-r640-1024-orient-mnn.h5" in files, files
    assert any(f.startswith("feats-aliked-n16-1024-r640-1024-orient-mnn_matches-mnn_") for f in files), files
    assert not any(f.startswith(orientation.confs["upright"]["output"]) for f in files), files


def test_submission_has_valid_poses_for_every_image(run_dir):
    work, _ = run_dir
    poses = submission.read_poses(work / "submission.csv")
    assert sorted(poses["image_name"]) == [f"{i:04d}.jpg" for i in range(8)]
    for R in poses["R"]:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-6)
    raw = pd.read_csv(work / "submission.csv")
    assert list(raw.columns) == ["image_path", "dataset", "scene", "rotation_matrix", "translation_vector"]
    assert raw["image_path"].iloc[0] == f"train/{SCENE}/images/0000.jpg"


def test_run_record_names_each_scene_and_times_no_export_it_did_not_do(run_dir):
    work, _ = run_dir
    record = json.loads((work / "work" / report.RUN_RECORD).read_text())
    (scene,) = record["scenes"]
    assert (scene["key"], len(scene["photos"]), scene["registered"]) == (SCENE, 8, 8)
    assert Path(scene["sfm"]).is_dir() and record["export"] is None and "export" not in record["times"]
    assert record["submission"] == str((work / "submission.csv").resolve())


def test_rerun_recomputes_nothing(run_dir, monkeypatch):
    work, argv = run_dir
    before = (work / "submission.csv").read_text()

    def no_model(*args, **kwargs):
        raise AssertionError("a network was loaded on a rerun")

    def stage_files():  # every stage output, with when it was last written (the lock and the record are the run's own)
        own = (lock.LOCK_NAME, report.RUN_RECORD)
        return {p: p.stat().st_mtime_ns for p in (work / "work").rglob("*") if p.is_file() and p.name not in own}

    monkeypatch.setattr(networks, "load_extractor", no_model)
    monkeypatch.setattr(networks, "load_matcher", no_model)
    files = stage_files()
    assert cli.main(argv) == 0
    assert stage_files() == files  # nothing written again
    assert (work / "submission.csv").read_text() == before


def test_score_command_prints_the_table(run_dir, imc_data_dir):
    work, _ = run_dir
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "imc_lib.cli",
            "score",
            str(imc_data_dir / "train/train_labels.csv"),
            str(work / "submission.csv"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines[SCENE][-2:] == ["8/8", "1.000"]
    # Scenes absent from the submission count as unregistered: 0 for the other three.
    assert lines["temple"][-2:] == ["0/16", "0.000"]
    assert lines["mean"][-1] == "0.250"


def test_scene_of_unreadable_images_still_gets_rows(tmp_path, weights_dir, caplog):
    images = tmp_path / "train/broken/images"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (images / name).write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "submission.csv"
    with caplog.at_level(logging.WARNING):
        code = cli.main(
            [
                "run",
                str(tmp_path),
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
                "--weights",
                str(weights_dir),
                "--device",
                "cpu",
            ]
        )
    assert code == 0
    rows = submission.read_poses(out)
    assert sorted(rows["image_name"]) == ["a.jpg", "b.jpg", "c.jpg"]
    for R, t in zip(rows["R"], rows["t"]):
        np.testing.assert_array_equal(R, np.eye(3))
        np.testing.assert_array_equal(t, np.zeros(3))
    assert "a.jpg: cannot read image" in caplog.text
    assert "3 image(s) without a pose" in caplog.text


def test_a_scene_that_fails_makes_run_exit_1_after_writing_every_row(tmp_path, weights_dir, capsys):
    # "broken": unreadable photos, unregistered but no error; "blocked": its work folder is a file, an error.
    for scene in ("blocked", "broken"):
        images = tmp_path / f"train/{scene}/images"
        images.mkdir(parents=True)
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            (images / name).write_bytes(b"\xff\xd8 not a jpeg")
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    work.mkdir()
    (work / "blocked").write_text("a file where the scene's work folder belongs")
    code = cli.main(
        ["run", str(tmp_path), "--work", str(work), "--out", str(out), "--weights", str(weights_dir), "--device", "cpu"]
    )
    assert code == 1
    rows = submission.read_poses(out)
    assert sorted(zip(rows["scene"], rows["image_name"])) == [
        (s, n) for s in ("blocked", "broken") for n in ("a.jpg", "b.jpg", "c.jpg")
    ]
    captured = capsys.readouterr()
    assert "imc-lib: error: 1 scene(s) failed: blocked;" in captured.err and str(out) in captured.err
    assert "broken" in captured.out and "blocked" in captured.out  # the scene table lists both


def test_unusable_input_exits_nonzero_naming_the_path(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "nowhere"), "--split", "test", "--out", str(tmp_path / "s.csv")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_shipped_sample_matches_its_labels():
    (scene,) = data.load_scenes(ROOT / "data", "train")
    assert scene.scene == SCENE and len(scene.image_names) == 8
    assert all((scene.image_dir / n).is_file() for n in scene.image_names)
    table = metric.score(
        ROOT / "data/train/train_labels.csv", submission.read_poses(ROOT / "data/train/train_labels.csv", "labels")
    )
    assert table["mAA"].tolist() == [1.0]


def test_missing_weights_stop_the_run_with_the_fix(tmp_path, imc_data_dir, capsys, monkeypatch):
    empty = tmp_path / "weights"
    empty.mkdir()
    argv = [
        "run",
        str(imc_data_dir),
        "--scenes",
        SCENE,
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "s.csv"),
        "--device",
        "cpu",
        "--orientation",
        "none",
    ]
    assert cli.main([*argv, "--weights", str(empty)]) == 2
    assert f"{empty}/aliked-n16.pth: weights file missing" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()

    import kornia.feature as KF

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("IMC_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(KF.ALIKED, "from_pretrained", offline)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "could not download the official aliked-n16 weights" in err and "IMC_WEIGHTS_DIR" in err


def test_networks_loaded_by_one_run_serve_the_next(tmp_path, imc_data_dir, weights_dir, monkeypatch):
    """The notebook runs scene by scene: a second run given the same dict loads nothing again."""
    cache = {}
    kwargs = {
        "split": "train",
        "scenes": [SCENE],
        "device": "cpu",
        "weights": weights_dir,
        "max_keypoints": 256,
        "resize_to": 320,
        "networks": cache,
    }
    first = pipeline.run(imc_data_dir, tmp_path / "a.csv", tmp_path / "work", **kwargs)
    assert first["scenes"][next(iter(first["scenes"]))].registered >= 6 and cache

    def no_model(*args, **kw):
        raise AssertionError("a network was loaded again")

    monkeypatch.setattr(networks, "load_extractor", no_model)
    monkeypatch.setattr(networks, "load_matcher", no_model)
    again = pipeline.run(imc_data_dir, tmp_path / "b.csv", tmp_path / "work", overwrite=True, **kwargs)
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()
    assert again["scenes"].keys() == first["scenes"].keys()


def _scenes(*sizes):
    return [
        data.Scene(
            dataset=f"s{n}",
            scene=f"s{n}",
            image_dir=Path("."),
            image_names=[f"{i}.jpg" for i in range(n)],
            image_paths=[f"{i}.jpg" for i in range(n)],
        )
        for n in sizes
    ]


def test_auto_pairs_without_a_local_dinov2_use_vlad_in_one_line(monkeypatch, caplog):
    monkeypatch.delenv("IMC_DINOV2", raising=False)

    def no_hub(*args, **kwargs):
        raise AssertionError("auto must not try the hub")

    monkeypatch.setattr(plan, "load_dinov2", no_hub)
    with caplog.at_level(logging.WARNING):
        assert plan.choose_pairs("auto", _scenes(8, 25, 40)) == "vlad"
        assert plan.choose_pairs(None, _scenes(8)) == "vlad"  # nothing to retrieve: no message
    lines = [r.getMessage() for r in caplog.records if "DINOv2" in r.getMessage()]
    assert len(lines) == 1 and "--pairs vlad" in lines[0] and "--dinov2" in lines[0]


def test_auto_pairs_take_a_local_dinov2_once(tmp_path, monkeypatch):
    from test_pairs import _tiny_dinov2

    processor, model = _tiny_dinov2()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    monkeypatch.setenv("IMC_DINOV2", str(tmp_path))
    networks = {}
    assert plan.choose_pairs("auto", _scenes(25), networks=networks) == "dinov2"
    assert [k[0] for k in networks] == ["pairs"]


def test_explicit_dinov2_that_cannot_load_stops_the_run_once(tmp_path, monkeypatch):
    monkeypatch.delenv("IMC_DINOV2", raising=False)
    with pytest.raises(pipeline.WeightsError, match="--pairs vlad"):
        plan.choose_pairs("dinov2", _scenes(25), dinov2=tmp_path / "missing")


def test_pairs_file_is_named_by_the_method_that_made_it(tmp_path):
    sconfs = plan.resolve(device="cpu", pairs="vlad")
    small, large = _scenes(8, 25)
    assert plan.plan_scene(small, sconfs, tmp_path).paths.pairs.name == "pairs-exhaustive.txt"
    assert plan.plan_scene(large, sconfs, tmp_path).paths.pairs.name == "pairs-vlad.txt"


def test_stage_confs_are_the_named_ones_with_the_overrides_and_share_nothing_with_them():
    sconfs = plan.stage_confs(features="aliked", max_keypoints=512, pairs="vlad", resize_to=320, prefilter=40)
    default = features.confs["aliked-n16"]
    assert sconfs["features"] == {
        **default,
        "output": "feats-aliked-n16-512-r320-orient-aliked-512",
        "model": {**default["model"], "max_num_keypoints": 512},
        "resize_to": 320,
    }
    assert sconfs["orientation"] == {**orientation.confs["upright"], "prefilter_min_matches": 40}
    # Deep copies: changing a nested value of a run's conf leaves the module's named conf as it was.
    sconfs["features"]["model"]["max_num_keypoints"] = 1
    sconfs["orientation"]["features"]["resize_to"] = 1
    sconfs["reconstruction"]["verification"]["ransac"]["max_num_trials"] = 1
    assert default["model"]["max_num_keypoints"] == 4096
    assert orientation.confs["upright"]["features"]["resize_to"] == 512
    assert reconstruction.confs["incremental"]["verification"]["ransac"]["max_num_trials"] == 20000


def test_time_limit_too_short_still_writes_every_row_in_time(tmp_path, imc_data_dir, weights_dir):
    limit = 20.0
    start = time.monotonic()
    argv = [
        "run",
        str(imc_data_dir),
        "--scenes",
        "temple",
        SCENE,
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "s.csv"),
        "--weights",
        str(weights_dir),
        "--device",
        "cpu",
        "--time-limit",
        "20s",
    ]
    cli.main(argv)
    elapsed = time.monotonic() - start
    poses = submission.read_poses(tmp_path / "s.csv")
    assert len(poses) == 16 + 8  # every image of both scenes has a row
    assert elapsed < limit, f"the run took {elapsed:.0f} s against a {limit:.0f} s limit"


def test_time_limit_rewrites_a_complete_submission_after_every_scene(tmp_path, imc_data_dir, weights_dir, monkeypatch):
    """A run killed in its second scene leaves the first scene's poses and a row for every image."""
    real, ran = pipeline.run_scene, []

    def killed_in_second(scene_plan, *args, **kwargs):
        if ran:
            raise KeyboardInterrupt  # stands in for the kernel being killed
        ran.append(scene_plan.scene.scene)
        return real(scene_plan, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_scene", killed_in_second)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(
            imc_data_dir,
            tmp_path / "s.csv",
            tmp_path / "work",
            scenes=[SCENE, "temple"],
            device="cpu",
            weights=weights_dir,
            max_keypoints=512,
            resize_to=320,
            time_limit=3600,
        )
    poses = submission.read_poses(tmp_path / "s.csv")
    assert len(poses) == 8 + 16
    first = poses[poses["scene"] == ran[0]]
    assert (first["t"].map(lambda t: np.abs(t).sum()) > 0).sum() >= 6  # real poses, not placeholders


def test_stages_stop_at_the_deadline(tmp_path, imc_data_dir, weights_dir):
    from imc_lib.execution import budget

    image_dir = imc_data_dir / "train" / SCENE / "images"
    names = sorted(p.name for p in image_dir.iterdir())
    conf = plan.resolve(device="cpu", pairs="exhaustive")["features"]
    with pytest.raises(budget.OutOfTime, match="feature extraction"):
        features.main(
            conf, image_dir, names, tmp_path / "f.h5", "cpu", weights=weights_dir, deadline=time.monotonic() - 1
        )
    assert not (tmp_path / "f.h5").exists()
    features.main(conf, image_dir, names[:2], tmp_path / "f.h5", "cpu", weights=weights_dir)
    pairs_path = tmp_path / "pairs.txt"
    pairs_path.write_text(f"{names[0]} {names[1]}\n")
    with pytest.raises(budget.OutOfTime, match="matching"):
        matching.main(
            matching.confs["mnn"],
            pairs_path,
            tmp_path / "f.h5",
            tmp_path / "m.h5",
            "aliked",
            "cpu",
            deadline=time.monotonic() - 1,
        )


def test_categories_csv_reaches_the_scene_and_sets_its_pairs(tmp_path):
    train = tmp_path / "train"
    for scene in ("glass", "church"):
        (train / scene / "images").mkdir(parents=True)
    rows = [f"{s},{s},{i}.jpg,1;0;0;0;1;0;0;0;1,0;0;0" for s in ("glass", "church") for i in range(25)]
    (train / "train_labels.csv").write_text(
        "dataset,scene,image_name,rotation_matrix,translation_vector\n" + "\n".join(rows) + "\n"
    )
    (train / "categories.csv").write_text("scene,categories\nglass,transparent;object\nchurch,historical\n")
    glass, church = sorted(data.load_scenes(tmp_path, "train"), key=lambda s: s.scene, reverse=True)
    assert glass.categories == ("transparent", "object") and church.categories == ("historical",)
    sconfs = plan.resolve(device="cpu", pairs="vlad")
    assert plan.scene_confs(sconfs, glass)["pairs"]["output"] == "pairs-exhaustive"
    assert plan.scene_confs(sconfs, church)["pairs"]["output"] == "pairs-vlad"


@pytest.mark.slow
def test_vlad_pairs_after_turning_recover_the_pairs_across_turned_photos(tmp_path, imc_data_dir, weights_dir):
    """temple: 5 of 16 photos are rolled 180 degrees; VLAD over the photos as stored misses pairs
    across the roll, VLAD over the turned photos finds them, and the scene registers."""
    from test_pairs import _covisible

    (scene,) = data.load_scenes(imc_data_dir, "train", ["temple"])
    sconfs = plan.resolve(device="cpu", pairs="vlad")
    sconfs["pairs"].update(exhaustive_if_less=2, min_pairs=5)  # retrieval even in a 16-photo scene
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    out = runner.run_scene(plan.plan_scene(scene, sconfs, tmp_path), nets)
    wanted = _covisible(imc_data_dir, "temple", list(scene.image_names))

    def recall(path):
        return len({tuple(p) for p in pairs.read_pairs(path)} & wanted) / len(wanted)

    assert out.paths.candidates.name == "pairs-vlad-as-stored.txt"
    assert recall(out.paths.pairs) == 1.0 > recall(out.paths.candidates)
    assert len(out.poses) >= 15


def _submission(tmp_path, scene, poses):
    path = tmp_path / "s.csv"
    submission.write_submission(submission.scene_rows(scene, poses), path)
    return path


def test_vlad_pairs_of_upright_photos_are_the_as_stored_ones(tmp_path, imc_data_dir, weights_dir):
    """Nothing turned: the pairs to match are the orientation's candidates, not selected twice."""
    (scene,) = data.load_scenes(imc_data_dir, "train", [SCENE])
    sconfs = plan.resolve(device="cpu", pairs="vlad", max_keypoints=1024)
    sconfs["pairs"].update(exhaustive_if_less=2, min_pairs=3)
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    out = runner.run_scene(plan.plan_scene(scene, sconfs, tmp_path), nets)
    assert orientation.read_orientations(out.paths.orientation) == {n: 0 for n in scene.image_names}
    chosen = pairs.read_pairs(out.paths.pairs)
    assert chosen == pairs.read_pairs(out.paths.candidates)
    assert len(chosen) < 28 and len(out.poses) == 8


def test_run_scene_reports_each_stage_and_stops_where_asked(tmp_path, weights_dir):
    """The 8-photo sample with the CPU defaults (mnn orientation and matcher): the callback hears
    every stage that works, with its totals, in the stages' order; a rerun reuses every file and
    hears nothing; `until` stops after the named stage."""
    (scene,) = data.load_scenes(ROOT / "data", "train", [SCENE])
    sconfs = plan.resolve(device="cpu", pairs="exhaustive", max_keypoints=512, resize_to=512)
    assert sconfs["orientation"]["output"] == orientation.confs["mnn"]["output"]
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    heard = []
    out = runner.run_scene(plan.plan_scene(scene, sconfs, tmp_path), nets, progress=lambda *event: heard.append(event))
    assert out.paths.pairs.name == "pairs-exhaustive.txt" and len(out.poses) == 8
    totals = {}
    for stage, done, total in heard:
        assert total is None or 0 <= done <= total, (stage, done, total)
        totals.setdefault(stage, []).append((done, total))
    # mnn orientation reads the main features as stored, so they come first.
    assert list(totals) == ["features", "pairs", "orientation", "matching", "reconstruction"]
    assert totals["features"][0] == (0, 8) and totals["features"][-1] == (8, 8)
    assert totals["pairs"] == [(1, 1)]
    assert (0, 28) in totals["orientation"] and (28, 28) in totals["orientation"]
    assert totals["matching"][0] == (0, 28) and totals["matching"][-1] == (28, 28)
    assert totals["reconstruction"] == [(k, 3) for k in range(4)]

    heard.clear()
    scene_plan = plan.plan_scene(scene, sconfs, tmp_path)
    again = runner.run_scene(scene_plan, nets, progress=lambda *event: heard.append(event))
    assert heard == [] and set(again.poses) == set(out.poses)

    heard.clear()
    part = runner.run_scene(
        plan.plan_scene(scene, sconfs, tmp_path / "part"),
        nets,
        progress=lambda *event: heard.append(event),
        until="pairs",
    )
    assert part.poses == {} and part.model is None
    assert part.paths.pairs.is_file() and not part.paths.orientation.exists()
    assert {stage for stage, _, _ in heard} == {"features", "pairs"}
    with pytest.raises(ValueError, match="not a stage"):
        runner.run_scene(plan.plan_scene(scene, sconfs, tmp_path), nets, until="keypoints")


def test_fast_extractors_come_with_their_matchers():
    xfeat = plan.stage_confs(features="xfeat", max_keypoints=1024, pairs="exhaustive", resize_to=640, orientation="mnn")
    assert xfeat["features"]["output"] == "feats-xfeat-1024-r640-orient-mnn"
    assert xfeat["features"]["model"]["name"] == "xfeat" and xfeat["matching"]["output"] == "matches-lightglue"
    assert networks.lightglue_key(xfeat["features"]) == "xfeat"  # LighterGlue
    # No LightGlue exists for ALIKED-t16: nearest neighbours on every device, unless told otherwise.
    assert plan.stage_confs(features="aliked-t16", pairs="vlad")["matching"] == matching.confs["mnn"]
    ensemble = plan.stage_confs(features="aliked+xfeat", pairs="vlad", orientation="none")
    assert [f["output"] for f in [ensemble["features"], *ensemble["also"]]] == ["feats-aliked-n16", "feats-xfeat"]


def test_lightglue_asked_for_aliked_t16_stops_the_run_naming_the_matcher(tmp_path, imc_data_dir, weights_dir, capsys):
    argv = ["run", str(imc_data_dir), "--scenes", SCENE, "--features", "aliked-t16", "--matcher", "lightglue",
            "--max-keypoints", "256", "--resize-to", "256", "--orientation", "none", "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "s.csv"), "--weights", str(weights_dir), "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "no LightGlue weights for aliked-t16 features" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("conf", ["xfeat", "aliked-t16"])
def test_a_fast_extractor_reconstructs_the_scene(tmp_path, imc_data_dir, weights_dir, conf):
    """`--features xfeat` / `aliked-t16` with the CPU defaults (640-1024 px, mutual nearest neighbours)."""
    argv = ["run", str(imc_data_dir), "--scenes", SCENE, "--features", conf, "--work", str(tmp_path / "w"),
            "--out", str(tmp_path / "s.csv"), "--weights", str(weights_dir), "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    assert (tmp_path / "w" / SCENE / f"feats-{conf}-2048-r640-1024-orient-mnn.h5").is_file()
    row = metric.score(imc_data_dir / "train/train_labels.csv", tmp_path / "s.csv").set_index("scene").loc[SCENE]
    assert row["registered"] == 8 and row["mAA"] >= 0.9


def _huge_jpeg(src: Path, path: Path, side: int = 20000) -> None:
    """A side x side JPEG (6 MB on disk): the centre square of `src` scaled up, so its pose is
    `src`'s. Grey and nearest-neighbour keep writing it to ~3 s."""
    with Image.open(src) as im:
        w, h = im.size
        s = min(w, h)
        square = im.convert("L").crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    square.resize((side, side), Image.NEAREST).save(path, quality=50)


def _huge_png(path: Path, side: int = 20000) -> None:
    """A valid side x side one-bit black PNG of 50 kB, written chunk by chunk (PIL's encoder takes
    seconds to compress it)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row, deflate = bytes(1 + side // 8), zlib.compressobj(9)
    pixels = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_very_large_photo_costs_at_most_itself(tmp_path, weights_dir, caplog):
    """Two 20000x20000 photos (400 megapixels, over PIL's 179-megapixel bomb limit) among five of the
    sample: the JPEG decodes at 1/8 (COLMAP reads such a copy too) and registers at its true pose;
    the PNG, over the decoded-size bound, is skipped alone with one warning; the rest reconstruct."""
    sample = ROOT / "data/train" / SCENE / "images"
    images = tmp_path / "data"
    images.mkdir()
    names = ["0000.jpg", "0001.jpg", "0002.jpg", "0004.jpg", "0005.jpg"]
    for name in names:
        shutil.copy(sample / name, images / name)
    _huge_jpeg(sample / "0003.jpg", images / "huge.jpg")
    _huge_png(images / "huge.png")
    names += ["huge.jpg", "huge.png"]
    scene = data.Scene("large", "large", images, tuple(names), tuple(names))
    sconfs = plan.resolve(device="cpu", pairs="exhaustive", max_keypoints=512, resize_to=512)
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    with caplog.at_level(logging.INFO):
        out = runner.run_scene(plan.plan_scene(scene, sconfs, tmp_path / "work"), nets)

    assert sorted(out.poses) == sorted(n for n in names if n != "huge.png")
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in warned] == [str(images / "huge.png")], caplog.text
    assert "20000x20000 PNG" in warned[0].getMessage() and "megapixels" in warned[0].getMessage()
    assert (
        "orientation, photos tried turned" not in caplog.text
    )  # no photo is tried turned against the PNG's empty features
    # The JPEG's features sit on its stored 20000 px grid; COLMAP's camera describes the 2500 px copy it read.
    feats = features.read_features(out.paths.features, "huge.jpg")
    assert tuple(feats["image_size"]) == (20000, 20000) and feats["keypoints"].max() > 10000
    image = next(i for i in out.model.images.values() if i.name == "huge.jpg")
    assert (out.model.cameras[image.camera_id].width, out.model.cameras[image.camera_id].height) == (2500, 2500)
    # Its pose is 0003.jpg's: the rotation relative to 0000.jpg as in the labels.
    labels = submission.read_poses(ROOT / "data/train/train_labels.csv", "labels").set_index("image_name")
    R = {n: out.poses[n][0] for n in ("0000.jpg", "huge.jpg")}
    relative, truth = R["huge.jpg"] @ R["0000.jpg"].T, labels.loc["0003.jpg", "R"] @ labels.loc["0000.jpg", "R"].T
    angle = np.degrees(np.arccos(np.clip((np.trace(relative @ truth.T) - 1) / 2, -1, 1)))
    assert angle < 1.0, angle


def test_auto_resize_extracts_each_photo_at_its_own_size_within_the_bounds(tmp_path, aliked, caplog):
    """resize_to "auto" (the CPU default): a large photo at 1024, a mid-sized one at its own size, a
    small one at twice its size; the features' file is named by the bounds; the log says what each got."""

    sconfs = plan.resolve(device="cpu", pairs="vlad")
    fconf = sconfs["features"]
    assert fconf["resize_to"] == [640, 1024] and fconf["output"] == "feats-aliked-n16-2048-r640-1024-orient-mnn"
    rng = np.random.default_rng(0)
    sizes = {"large.jpg": (1536, 1024), "mid.jpg": (540, 800), "small.jpg": (480, 270), "tiny.jpg": (200, 150)}
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / name)
    seen = []
    extract = features.extract

    def spy(model, conf, image, device, turns=0, stored_size=None):
        seen.append(max(features.prepare(image, conf["resize_to"], device).shape[-2:]))
        return extract(model, conf, image, device, turns, stored_size)

    with caplog.at_level("INFO", logger="imc_lib.stages.features"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(features, "extract", spy)
        path = features.main(fconf, tmp_path, list(sizes), tmp_path / "feats.h5", "cpu", network=aliked)
    assert seen == [1024, 800, 960, 640]
    assert "1 at 640 px, 1 at 800 px, 1 at 960 px, 1 at 1024 px" in caplog.text
    kpts = features.read_features(path, "large.jpg")["keypoints"]
    assert kpts[:, 0].max() > 1024  # keypoints on the stored 1536 px grid
