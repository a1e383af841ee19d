import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imc_lib.formats.data import Scene, load_scenes
from imc_lib.formats.submission import (
    LABEL_COLUMNS,
    POSE_COLUMNS,
    SUBMISSION_COLUMNS,
    SUBMISSION_COLUMNS_2025,
    format_pose,
    parse_values,
    read_poses,
    scene_rows,
    write_submission,
)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def pose_rows(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image_path": f"test/church/images/{i:04d}.png",
            "dataset": "church",
            "scene": "church",
            "R": random_rotation(rng),
            "t": rng.normal(size=3) * 10,
        }
        for i in range(n)
    ]


def test_format_pose_row_major_semicolons():
    R = np.arange(9, dtype=float).reshape(3, 3) / 7
    r_text, t_text = format_pose(R, [1.5, -2.0, 1e-12])
    assert r_text.split(";")[1] == "%.9g" % (1 / 7)
    np.testing.assert_allclose(np.array(r_text.split(";"), float).reshape(3, 3), R, atol=1e-9)
    assert t_text == "1.5;-2;1e-12"


@pytest.mark.parametrize(
    "R, t", [(np.eye(2), np.zeros(3)), (np.eye(3), np.zeros(2)), (np.full((3, 3), np.nan), np.zeros(3))]
)
def test_format_pose_rejects_bad_shapes_and_nan(R, t):
    with pytest.raises(ValueError):
        format_pose(R, t)


def test_parse_values():
    np.testing.assert_array_equal(parse_values(" 1;2.5;-3e-2 ", 3, "x"), [1, 2.5, -0.03])
    with pytest.raises(ValueError, match=r"^f\.csv row 12, rotation_matrix: expected 9 values, got 8"):
        parse_values(";".join(["0"] * 8), 9, "f.csv row 12, rotation_matrix")
    with pytest.raises(ValueError, match="expected 3 values, got 0"):
        parse_values("", 3, "where")
    with pytest.raises(ValueError, match="^where: not a number"):
        parse_values("1;a;3", 3, "where")
    with pytest.raises(ValueError, match="^where: non-finite"):
        parse_values("1;nan;3", 3, "where")
    with pytest.raises(ValueError, match="^where: non-finite"):
        parse_values("1;inf;3", 3, "where")


def test_write_read_round_trip(tmp_path):
    rows = pose_rows()
    out = write_submission(rows, tmp_path / "submission.csv")
    assert out == tmp_path / "submission.csv"
    assert list(pd.read_csv(out).columns) == SUBMISSION_COLUMNS
    poses = read_poses(out, "submission")
    assert list(poses.columns) == POSE_COLUMNS
    assert list(poses["image_name"]) == [f"{i:04d}.png" for i in range(5)]
    assert set(poses["dataset"]) == set(poses["scene"]) == {"church"}
    for row, R, t in zip(rows, poses["R"], poses["t"]):
        assert R.shape == (3, 3) and t.shape == (3,)
        np.testing.assert_allclose(R, row["R"], atol=1e-6)
        np.testing.assert_allclose(t, row["t"], atol=1e-6)


def test_unregistered_rows_become_identity_and_warn(tmp_path, caplog):
    rows = pose_rows(3)
    rows[1]["R"] = rows[1]["t"] = None
    with caplog.at_level(logging.WARNING, logger="imc_lib.formats.submission"):
        write_submission(rows, tmp_path / "submission.csv")
    assert "1 of 3 rows have no pose" in caplog.text
    raw = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert raw.loc[1, "rotation_matrix"] == "1;0;0;0;1;0;0;0;1"
    assert raw.loc[1, "translation_vector"] == "0;0;0"
    poses = read_poses(tmp_path / "submission.csv")
    np.testing.assert_array_equal(poses["R"][1], np.eye(3))
    np.testing.assert_array_equal(poses["t"][1], np.zeros(3))
    np.testing.assert_allclose(poses["R"][0], rows[0]["R"], atol=1e-6)


def test_write_is_atomic(tmp_path):
    path = tmp_path / "sub" / "submission.csv"
    write_submission(pose_rows(2), path)
    write_submission(pose_rows(3, seed=1), path)  # replaces the old file
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]
    assert len(read_poses(path)) == 3
    before = path.read_bytes()
    bad = pose_rows(2) + [{"image_path": "a/b.png", "dataset": "a", "scene": "a", "R": np.eye(2), "t": np.zeros(3)}]
    with pytest.raises(ValueError, match="a/b.png"):
        write_submission(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]


def test_read_poses_errors_name_file_and_row(tmp_path):
    path = write_submission(pose_rows(4), tmp_path / "submission.csv")
    table = pd.read_csv(path, dtype=str)
    table.loc[1, "rotation_matrix"] = ";".join(["0"] * 8)
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} row 3, rotation_matrix: expected 9 values, got 8"):
        read_poses(path)
    table.loc[1, "rotation_matrix"] = "1;0;0;0;1;0;0;0;1"
    table.loc[3, "translation_vector"] = "1;x;2"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} row 5, translation_vector: not a number"):
        read_poses(path)


def test_read_poses_kinds(tmp_path):
    path = write_submission(pose_rows(2), tmp_path / "submission.csv")
    with pytest.raises(ValueError, match="missing column"):
        read_poses(path, "labels")
    with pytest.raises(ValueError, match="kind must be"):
        read_poses(path, "other")
    with pytest.raises(FileNotFoundError):
        read_poses(tmp_path / "absent.csv")


def test_read_real_labels(imc_data_dir):
    labels = imc_data_dir / "train" / "train_labels.csv"
    poses = read_poses(labels, "labels")
    raw = pd.read_csv(labels, dtype=str)
    assert list(raw.columns) == LABEL_COLUMNS
    assert len(poses) == len(raw) == 45
    assert poses.groupby("scene").size().to_dict() == {"entry": 10, "fountain": 11, "herzjesu-p8": 8, "temple": 16}
    assert poses["image_name"][0] == "0000.jpg"
    for R in poses["R"]:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)


# IMC 2025: clusters and outliers of a mixed folder.


def mixed_scene(n=6, ids=()):
    names = tuple(f"image_{i}.jpg" for i in range(n))
    return Scene("trip", "trip", Path("/nowhere"), names, tuple(f"train/trip/{m}" for m in names), mixed=True,
                 image_ids=tuple(ids))  # fmt: skip


def test_mixed_rows_name_clusters_and_outliers(tmp_path):
    rng = np.random.default_rng(0)
    pose = [(random_rotation(rng), rng.normal(size=3)) for _ in range(6)]
    scene = mixed_scene()
    clusters = [{"image_3.jpg": pose[3], "image_0.jpg": pose[0], "image_5.jpg": pose[5]}, {}, {"image_1.jpg": pose[1]}]
    rows = scene_rows(scene, {}, clusters)
    assert [r["image"] for r in rows] == list(scene.image_names)  # one row per photo, in the scene's order
    assert [r["scene"] for r in rows] == ["cluster0", "cluster1", "outliers", "cluster0", "outliers", "cluster0"]
    assert rows[0]["image_id"] == "trip_image_0.jpg_public"
    out = write_submission(rows, tmp_path / "submission.csv")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(raw.columns) == SUBMISSION_COLUMNS_2025
    assert raw.loc[2, "rotation_matrix"] == "nan;nan;nan;nan;nan;nan;nan;nan;nan"
    assert raw.loc[4, "translation_vector"] == "nan;nan;nan"
    poses = read_poses(out, "2025")
    assert list(poses.columns) == POSE_COLUMNS and list(poses["image_name"]) == list(scene.image_names)
    np.testing.assert_allclose(poses["R"][3], pose[3][0], atol=1e-6)
    np.testing.assert_allclose(poses["t"][1], pose[1][1], atol=1e-6)
    assert np.isnan(poses["R"][2]).all() and np.isnan(poses["t"][4]).all()


def test_mixed_rows_without_clusters_read_found_as_one(tmp_path):
    scene = mixed_scene(3, ids=["a", "b", "c"])
    rows = scene_rows(scene, {"image_1.jpg": (np.eye(3), np.ones(3))})
    assert [(r["image_id"], r["scene"]) for r in rows] == [("a", "outliers"), ("b", "cluster0"), ("c", "outliers")]
    assert {r["scene"] for r in scene_rows(scene, {})} == {"outliers"}  # a failed folder: every photo an outlier


def test_mixed_rows_reject_bad_clusters():
    scene = mixed_scene(3)
    pose = (np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="'image_0.jpg' is in cluster0 and cluster1; keep it in one"):
        scene_rows(scene, {}, [{"image_0.jpg": pose}, {"image_0.jpg": pose}])
    with pytest.raises(ValueError, match="cluster0 holds 'x.jpg', which is not one of its photos"):
        scene_rows(scene, {}, [{"x.jpg": pose}])
    single = Scene("d", "d", Path("."), ("a.jpg",), ("train/d/images/a.jpg",))
    with pytest.raises(ValueError, match="clusters are for mixed"):
        scene_rows(single, {}, [{"a.jpg": pose}])


def test_write_2025_checks_rows(tmp_path, caplog):
    rows = scene_rows(mixed_scene(3), {}, [{"image_0.jpg": (None, None), "image_1.jpg": (np.eye(3), np.zeros(3))}])
    with caplog.at_level(logging.INFO, logger="imc_lib.formats.submission"):
        write_submission(rows, tmp_path / "a.csv")
    assert "1 of 3 photos in no cluster" in caplog.text and "1 of 3 clustered photos have no pose" in caplog.text
    raw = pd.read_csv(tmp_path / "a.csv", dtype=str)
    assert raw.loc[0, "scene"] == "cluster0" and raw.loc[0, "translation_vector"] == "nan;nan;nan"
    with pytest.raises(ValueError, match="trip/image_2.jpg: an outliers row has a pose"):
        write_submission([*rows[:2], {**rows[2], "R": np.eye(3), "t": np.zeros(3)}], tmp_path / "b.csv")
    with pytest.raises(ValueError, match="rows of IMC 2024 .* and IMC 2025"):
        write_submission(rows + pose_rows(1), tmp_path / "c.csv")


def test_2025_test_split_keeps_every_image_id(imc25_dir, tmp_path):
    (scene,) = load_scenes(imc25_dir, "test")
    sample = pd.read_csv(imc25_dir / "sample_submission.csv", dtype=str)
    cluster = {n: (np.eye(3), np.zeros(3)) for n in scene.image_names[:10]}
    write_submission(scene_rows(scene, {}, [cluster]), tmp_path / "submission.csv")
    written = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert list(written.columns) == list(sample.columns)
    assert list(written["image_id"]) == list(sample["image_id"]) and list(written["image"]) == list(sample["image"])
    assert (written["scene"] == "cluster0").sum() == 10 and (written["scene"] == "outliers").sum() == len(sample) - 10
    # a train run writes the same ids for the same photos
    (train,) = [s for s in load_scenes(imc25_dir, "train") if s.dataset == "small"]
    assert {r["image_id"] for r in scene_rows(train, {})} == set(sample["image_id"])


def test_read_2025_labels(imc25_dir):
    poses = read_poses(imc25_dir / "train_labels.csv", "2025")
    assert len(poses) == 38 + 155
    outliers = poses[poses["scene"] == "outliers"]
    assert len(outliers) == 12 and all(np.isnan(R).all() for R in outliers["R"])
    assert all(np.isfinite(R).all() for R in poses[poses["scene"] != "outliers"]["R"])


def test_parse_values_nan_only_when_allowed():
    assert np.isnan(parse_values("nan;NaN;nan", 3, "w", allow_nan=True)).all()
    with pytest.raises(ValueError, match="non-finite"):
        parse_values("nan;1;nan", 3, "w", allow_nan=True)
    with pytest.raises(ValueError, match="non-finite"):
        parse_values("nan;nan;nan", 3, "w")


def test_the_year_the_plan_decides_writes_that_format_and_refuses_the_others_rows(tmp_path):
    from imc_lib import plan

    scene24 = Scene("d", "s", tmp_path, ("a.jpg",), ("s/images/a.jpg",))
    scene25 = Scene("d", "d", tmp_path, ("a.jpg",), ("a.jpg",), mixed=True)
    assert plan.competition([scene24]) == "2024" and plan.competition([scene25]) == "2025"
    with pytest.raises(ValueError, match="run them apart"):
        plan.competition([scene24, scene25])
    rows = scene_rows(scene25, {}, [])
    path = write_submission(rows, tmp_path / "s.csv", "2025")
    assert list(pd.read_csv(path).columns) == SUBMISSION_COLUMNS_2025
    with pytest.raises(ValueError, match="an IMC 2024 submission given rows of IMC 2025"):
        write_submission(rows, tmp_path / "t.csv", "2024")
    assert list(pd.read_csv(write_submission([], tmp_path / "e.csv", "2025")).columns) == SUBMISSION_COLUMNS_2025
