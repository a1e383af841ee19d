import logging
import re

import numpy as np
import pandas as pd
import pytest

from imc_lib.submission import (
    LABEL_COLUMNS,
    POSE_COLUMNS,
    SUBMISSION_COLUMNS,
    format_pose,
    parse_values,
    read_poses,
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
    with caplog.at_level(logging.WARNING, logger="imc_lib.submission"):
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
