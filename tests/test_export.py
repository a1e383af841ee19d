"""A plain folder of photos in, files 3D tools open out: poses.csv, a COLMAP model, nerfstudio's
transforms.json and a PLY per cluster, each read back by its own reader and compared with poses.csv."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pycolmap
import pytest

from imc_lib import cli
from imc_lib.formats import export, metric, submission

SCENE = "herzjesu-p8"
# nerfstudio's documented transforms.json keys (docs.nerf.studio, "Data conventions": camera intrinsics
# at the top when shared, per frame otherwise; frames with file_path and a camera-to-world transform_matrix).
NERFSTUDIO_INTRINSICS = {"camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "p1", "p2"}
NERFSTUDIO_FRAME = {"file_path", "transform_matrix"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, imc_data_dir, weights_dir):
    """herzjesu-p8's photos in a plain folder at two depths under new names, with a photo that cannot be
    read and a text file, run by `imc-lib run PHOTOS --out OUT` at test speed."""
    root = tmp_path_factory.mktemp("plain")
    photos = root / "photos"
    sources = sorted((imc_data_dir / "train" / SCENE / "images").glob("*.jpg"))
    names = {}
    for i, src in enumerate(sources):
        name = f"{'day1/' if i % 2 else ''}shot_{(i * 5) % len(sources):02d}.jpg"
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, photos / name)
        names[name] = src.name
    (photos / "day1/broken.jpg").write_bytes(b"not a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    out = root / "out"
    argv = ["run", str(photos), "--out", str(out), "--work", str(root / "work"), "--weights", str(weights_dir),
            "--device", "cpu", "--max-keypoints", "1024", "--resize-to", "640"]  # fmt: skip
    assert cli.main(argv) == 0
    return photos, out, names


def _poses(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "poses.csv", dtype=str, keep_default_na=False)


def _pose(row) -> tuple[np.ndarray, np.ndarray]:
    R = submission.parse_values(row["rotation_matrix"], 9, "R").reshape(3, 3)
    return R, submission.parse_values(row["translation_vector"], 3, "t")


def test_poses_csv_has_a_row_per_photo_and_the_unreadable_one_is_an_outlier(exported):
    photos, out, names = exported
    table = _poses(out)
    assert list(table.columns) == export.POSES_COLUMNS
    assert sorted(table["image"]) == sorted([*names, "day1/broken.jpg"])
    clustered = table[table["cluster"] == "cluster0"]
    assert len(clustered) == len(names)  # every photo of the scene in one cluster
    broken = table.set_index("image").loc["day1/broken.jpg"]
    assert broken["cluster"] == "outliers" and broken["rotation_matrix"] == ";".join(["nan"] * 9)
    assert set(clustered["camera_model"]) == {"SIMPLE_RADIAL"}
    assert all(len(p.split(";")) == 4 for p in clustered["camera_params"])
    assert {p.name for p in out.iterdir()} == {"poses.csv", "cluster0", "report.html"}


def test_colmap_model_read_back_gives_the_poses_of_poses_csv(exported):
    photos, out, names = exported
    model = pycolmap.Reconstruction(out / "cluster0" / "sparse" / "0")
    by_name = {im.name: im for im in model.images.values() if im.has_pose}
    rows = _poses(out).set_index("image")
    assert set(by_name) == set(names)  # the photos' real names under PHOTOS_DIR
    for name, image in by_name.items():
        R, t = _pose(rows.loc[name])
        pose = image.cam_from_world()
        np.testing.assert_allclose(pose.rotation.matrix(), R, atol=1e-6)
        np.testing.assert_allclose(pose.translation, t, rtol=1e-6, atol=1e-6)
        assert rows.loc[name, "camera_params"] == ";".join(f"{v:.9g}" for v in image.camera.params)
        assert (photos / image.name).is_file()


def test_transforms_json_turned_back_from_nerfstudio_convention_gives_the_same_poses(exported):
    photos, out, names = exported
    meta = json.loads((out / "cluster0" / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and NERFSTUDIO_INTRINSICS <= set(meta)  # one camera: at the top
    rows = _poses(out).set_index("image")
    f, cx, cy, k = (float(v) for v in rows.loc[rows["cluster"] == "cluster0", "camera_params"].iloc[0].split(";"))
    assert (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["k1"]) == pytest.approx((f, f, cx, cy, k))
    assert meta["k2"] == meta["p1"] == meta["p2"] == 0
    assert len(meta["frames"]) == len(names)
    for frame in meta["frames"]:
        assert NERFSTUDIO_FRAME <= set(frame)
        path = (out / "cluster0" / frame["file_path"]).resolve()
        name = path.relative_to(photos.resolve()).as_posix()
        cam_from_world = export.cam_from_world_opencv(frame["transform_matrix"])
        R, t = _pose(rows.loc[name])
        np.testing.assert_allclose(cam_from_world[:, :3], R, atol=1e-6)
        np.testing.assert_allclose(cam_from_world[:, 3], t, atol=1e-5)
        # OpenGL axes: the camera looks down its -z, which is the OpenCV camera's +z (R's last row)
        c2w = np.asarray(frame["transform_matrix"])
        np.testing.assert_allclose(-c2w[:3, 2], R[2], atol=1e-6)
    assert (out / "cluster0" / meta["ply_file_path"]).is_file()


def test_ply_parses_with_as_many_coloured_points_as_the_model(exported):
    plyfile = pytest.importorskip("plyfile", reason="pip install plyfile (the test extra)")
    _, out, _ = exported
    vertices = plyfile.PlyData.read(str(out / "cluster0" / "points3D.ply"))["vertex"]
    model = pycolmap.Reconstruction(out / "cluster0" / "sparse" / "0")
    assert vertices.count == model.num_points3D() > 100
    assert {"x", "y", "z", "red", "green", "blue"} <= {p.name for p in vertices.properties}
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    expected = np.array([p.xyz for p in model.points3D.values()])
    np.testing.assert_allclose(np.sort(xyz, axis=0), np.sort(expected, axis=0), rtol=1e-5, atol=1e-5)
    assert np.asarray(vertices["red"]).std() > 0  # coloured, not one flat value


def test_intrinsics_of_each_camera_model_in_opencv_keys():
    simple = pycolmap.Camera(model="SIMPLE_RADIAL", width=640, height=480, params=[500, 320, 240, 0.1])
    assert export.opencv_intrinsics(simple) == pytest.approx(
        {"fl_x": 500, "fl_y": 500, "cx": 320, "cy": 240, "k1": 0.1, "k2": 0, "p1": 0, "p2": 0, "w": 640, "h": 480}
    )
    opencv = pycolmap.Camera(model="OPENCV", width=64, height=48, params=[50, 51, 32, 24, 0.1, 0.2, 0.01, 0.02])
    assert [export.opencv_intrinsics(opencv)[k] for k in ("fl_y", "k2", "p2")] == pytest.approx([51, 0.2, 0.02])
    fisheye = pycolmap.Camera(model="OPENCV_FISHEYE", width=64, height=48, params=[50, 51, 32, 24, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="camera model OPENCV_FISHEYE: no OPENCV form"):
        export.opencv_intrinsics(fisheye)


def test_nerfstudio_matrix_conversion_is_its_own_inverse():
    rng = np.random.default_rng(0)
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R *= np.sign(np.linalg.det(R))
    cam_from_world = np.hstack([R, rng.normal(size=(3, 1))])
    c2w = export.camera_to_world_opengl(cam_from_world)
    np.testing.assert_allclose(c2w[:3, 3], -R.T @ cam_from_world[:, 3])  # the camera centre
    np.testing.assert_allclose(export.cam_from_world_opencv(c2w), cam_from_world, atol=1e-12)


def test_a_folder_without_photos_stops_naming_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["run", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: no readable photo at any depth" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two real runs of 24 photos
def test_plain_folder_of_two_scenes_and_outliers_scores_as_the_competition_layout(tmp_path, imc_data_dir, weights_dir):
    """fountain and herzjesu-p8 (imc-mini) plus five photos of imc-hard, under shuffled names at two depths,
    against the same photos in the IMC 2025 layout: two clusters, the outliers apart, the same scores."""
    shared = imc_data_dir.parent
    if not (shared / "imc-hard" / "train" / "train_labels.csv").is_file():
        pytest.skip(f"{shared / 'imc-hard'}: not found beside imc-mini")
    picks = [("imc-mini", s, n) for s in ("fountain", "herzjesu-p8") for n in _names(shared / "imc-mini", s)]
    hard = [(s, n) for s, k in (("dino-full", 3), ("gold-cape", 2)) for n in _names(shared / "imc-hard", s)[:k]]
    picks += [("imc-hard", s, n) for s, n in hard]
    order = np.random.default_rng(7).permutation(len(picks))
    plain, layout = tmp_path / "photos", tmp_path / "imc25"
    labels = []
    for new, i in enumerate(order):
        source, scene, name = picks[i]
        flat = f"p{new:03d}{Path(name).suffix}"
        nested = plain / ("a/b" if new % 3 == 0 else "a" if new % 3 == 1 else "") / flat
        for dest in (nested, layout / "train" / "mix" / flat):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / source / "train" / scene / "images" / name, dest)
        R, t = _truth(shared / source, scene, name) if source == "imc-mini" else submission.NAN_POSE
        labels.append({"dataset": "mix", "scene": scene if source == "imc-mini" else "outliers", "image": flat,
                       "rotation_matrix": R, "translation_vector": t})  # fmt: skip
    pd.DataFrame(labels).to_csv(layout / "train_labels.csv", index=False)
    building = "0.025;0.05;0.1;0.2;0.5;1.0"  # metres, as imc25-mix/compose.py gives these scenes
    pd.DataFrame({"dataset": "mix", "scene": ["fountain", "herzjesu-p8"], "thresholds": building}).to_csv(
        layout / "train_thresholds.csv", index=False
    )
    fast = ["--weights", str(weights_dir), "--device", "cpu", "--max-keypoints", "1024", "--resize-to", "640"]
    assert cli.main(["run", str(plain), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w1"), *fast]) == 0
    argv = ["run", str(layout), "--out", str(tmp_path / "submission.csv"), "--work", str(tmp_path / "w2"), *fast]
    assert cli.main(argv) == 0

    poses = _poses(tmp_path / "out")
    assert sorted(set(poses["cluster"])) == ["cluster0", "cluster1", "outliers"]
    truth = pd.DataFrame(labels).set_index("image")
    outliers = {Path(n).name for n in poses.loc[poses["cluster"] == "outliers", "image"]}
    assert outliers == set(truth.index[truth["scene"] == "outliers"])  # the five, and no photo of a scene
    as_submission = pd.DataFrame(
        {"image_id": range(len(poses)), "dataset": "mix", "scene": poses["cluster"],
         "image": [Path(n).name for n in poses["image"]], "rotation_matrix": poses["rotation_matrix"],
         "translation_vector": poses["translation_vector"]}
    )  # fmt: skip
    as_submission.to_csv(tmp_path / "plain.csv", index=False)
    plain_scores = metric.score_2025(layout / "train_labels.csv", tmp_path / "plain.csv")[1].set_index("scene")
    layout_scores = metric.score_2025(layout / "train_labels.csv", tmp_path / "submission.csv")[1].set_index("scene")
    for scene in ("fountain", "herzjesu-p8"):
        assert plain_scores.loc[scene, "shared"] == plain_scores.loc[scene, "images"]  # the whole scene in its cluster
        assert plain_scores.loc[scene, "mAA"] == pytest.approx(layout_scores.loc[scene, "mAA"], abs=0.01)
        assert plain_scores.loc[scene, "mAA"] >= 0.95


def _names(root: Path, scene: str) -> list[str]:
    table = pd.read_csv(root / "train" / "train_labels.csv", dtype=str)
    return sorted(table.loc[table["scene"] == scene, "image_name"])


def _truth(root: Path, scene: str, name: str) -> tuple[str, str]:
    table = pd.read_csv(root / "train" / "train_labels.csv", dtype=str)
    row = table[(table["scene"] == scene) & (table["image_name"] == name)].iloc[0]
    return row["rotation_matrix"], row["translation_vector"]


def test_a_rerun_with_fewer_clusters_leaves_no_old_cluster_folder(exported, tmp_path):
    photos, out, _ = exported
    (out / "cluster7" / "sparse").mkdir(parents=True)  # as an earlier run with more clusters left it
    (out / "notes").mkdir(exist_ok=True)
    argv = ["run", str(photos), "--out", str(out), "--work", str(out.parent / "work"), "--device", "cpu",
            "--max-keypoints", "1024", "--resize-to", "640"]  # fmt: skip
    assert cli.main(argv) == 0  # everything reused: only the export and the report are written again
    assert sorted(p.name for p in out.iterdir()) == ["cluster0", "notes", "poses.csv", "report.html"]
    shutil.rmtree(out / "notes")


def test_a_work_folder_inside_the_photo_folder_is_refused(exported, capsys):
    photos, out, _ = exported
    assert cli.main(["run", str(photos), "--out", str(out), "--work", str(photos / "work")]) == 2
    assert "the work folder is inside the photo folder" in capsys.readouterr().err
    assert not (photos / "work").exists()
