import logging

import numpy as np
import pandas as pd
import pytest

from imc_lib.formats import metric
from imc_lib.formats.metric import (
    DEFAULT_THRESHOLDS,
    camera_centres,
    format_table,
    horn_similarity,
    main,
    mean_average_accuracy,
    score,
)
from imc_lib.formats.submission import read_poses, write_submission

# 8 corners of a 10 m cube and 2 cameras inside it: a similarity that keeps every corner within a
# threshold moves an interior camera by less than that threshold too (it is a convex combination).
CUBE = np.array([[x, y, z] for x in (-5, 5) for y in (-5, 5) for z in (-5, 5)], dtype=float)
INTERIOR = np.array([[1.0, 2.0, 0.5], [-1.0, -0.5, 1.0]])
CENTRES = np.vstack([CUBE, INTERIOR])  # 10 cameras; the last two are the interior ones


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_similarity(rng):
    return rng.uniform(0.2, 5.0), random_rotation(rng), rng.normal(size=3) * 20


def poses(centres, rotations, dataset="d", scene="s"):
    """A read_poses-style table of world-to-camera poses with the given camera centres."""
    return pd.DataFrame(
        {
            "dataset": dataset,
            "scene": scene,
            "image_name": [f"{i:04d}.jpg" for i in range(len(centres))],
            "R": list(rotations),
            "t": [-R @ c for R, c in zip(rotations, centres)],
        }
    )


def transform_world(table, s, Q, q):
    """The same cameras in a world moved by x' = s Q x + q: c' = s Q c + q, R' = R Q^T, t' = -R' c'."""
    out = table.copy()
    centres = camera_centres(table) @ Q.T * s + q
    out["R"] = [R @ Q.T for R in table["R"]]
    out["t"] = [-R @ c for R, c in zip(out["R"], centres)]
    return out


@pytest.fixture
def gt():
    rng = np.random.default_rng(0)
    return poses(CENTRES, [random_rotation(rng) for _ in CENTRES])


def test_horn_similarity_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(6, 3))
    s, R, t = random_similarity(rng)
    s_hat, R_hat, t_hat = horn_similarity(src, s * src @ R.T + t)
    assert s_hat == pytest.approx(s)
    np.testing.assert_allclose(R_hat, R, atol=1e-10)
    np.testing.assert_allclose(t_hat, t, atol=1e-9)
    # a reflected copy is fitted by a proper rotation, never a reflection
    _, R_hat, _ = horn_similarity(src, src * [1, 1, -1])
    assert np.linalg.det(R_hat) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="coincide"):
        horn_similarity(np.zeros((4, 3)), src[:4])


def test_horn_scale_is_symmetric_not_least_squares():
    """On noisy points the fit of dst onto src is the exact inverse (Horn's symmetric scale), while
    Umeyama's least-squares scale, trace(D S) / var(src), is smaller."""
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    dst = 2.0 * src @ random_rotation(rng).T + rng.normal(scale=0.3, size=src.shape)
    s, _, _ = horn_similarity(src, dst)
    s_back, _, _ = horn_similarity(dst, src)
    assert s * s_back == pytest.approx(1.0)
    x, y = src - src.mean(axis=0), dst - dst.mean(axis=0)
    least_squares = np.linalg.svd(y.T @ x, compute_uv=False).sum() / (x**2).sum()
    assert least_squares < s


def test_camera_centres(gt):
    np.testing.assert_allclose(camera_centres(gt), CENTRES, atol=1e-12)


def test_ground_truth_scores_one(gt):
    assert mean_average_accuracy(CENTRES, CENTRES) == 1.0
    table = score(gt, gt)
    assert table.to_dict("records") == [{"dataset": "d", "scene": "s", "images": 10, "registered": 10, "mAA": 1.0}]


def test_similarity_transformed_copy_scores_one(gt):
    rng = np.random.default_rng(2)
    for _ in range(3):
        moved = transform_world(gt, *random_similarity(rng))
        assert score(gt, moved)["mAA"].tolist() == [1.0]


def test_far_cameras_are_never_inliers(gt):
    est = CENTRES.copy()
    est[[0, 9]] += [100.0, -50.0, 30.0]  # far beyond the largest threshold
    expected = 6 * (8 - 3) / (6 * (10 - 3))
    assert mean_average_accuracy(CENTRES, est) == pytest.approx(expected)
    sub = poses(est, gt["R"])
    assert score(gt, transform_world(sub, *random_similarity(np.random.default_rng(3))))["mAA"][0] == pytest.approx(
        expected
    )


def test_missing_rows_are_unregistered(gt):
    expected = 6 * (8 - 3) / (6 * (10 - 3))
    est = CENTRES.copy()
    est[[2, 5]] = np.nan
    assert mean_average_accuracy(CENTRES, est) == pytest.approx(expected)
    row = score(gt, gt.drop(index=[2, 5])).iloc[0]
    assert (row["images"], row["registered"]) == (10, 8)
    assert row["mAA"] == pytest.approx(expected)


def test_placeholder_pose_is_just_a_pose(gt, tmp_path):
    rows = [
        {"image_path": f"train/d/images/{n}", "dataset": "d", "scene": "s", "R": R, "t": t}
        for n, R, t in zip(gt["image_name"], gt["R"], gt["t"])
    ]
    rows[3]["R"] = rows[3]["t"] = rows[7]["R"] = rows[7]["t"] = None  # identity, centre at the origin
    path = write_submission(rows, tmp_path / "submission.csv")
    row = score(gt, path).iloc[0]
    assert row["registered"] == 8  # placeholders are not counted as registered ...
    assert row["mAA"] == pytest.approx(6 * (8 - 3) / (6 * 7))  # ... and as poses are no inliers: no corner is at 0


def test_object_thresholds_are_ten_times_smaller(gt, tmp_path):
    # interior cameras moved by 0.45: inliers at 0.5 and 1.0 only (0.45 > 2 * 0.2, see CUBE)
    est = CENTRES.copy()
    est[8] += [0.45, 0.0, 0.0]
    est[9] += [0.0, -0.27, 0.36]
    facade = (4 * (8 - 3) + 2 * (10 - 3)) / (6 * 7)
    objects = 6 * (8 - 3) / (6 * 7)
    assert mean_average_accuracy(CENTRES, est) == pytest.approx(facade)
    assert mean_average_accuracy(CENTRES, est, [t / 10 for t in DEFAULT_THRESHOLDS]) == pytest.approx(objects)

    sub = transform_world(poses(est, gt["R"]), *random_similarity(np.random.default_rng(4)))
    assert score(gt, sub, categories={"s": ["facade"]})["mAA"][0] == pytest.approx(facade)
    assert score(gt, sub, categories={"s": ["object", "transparent"]})["mAA"][0] == pytest.approx(objects)
    assert score(gt, sub, thresholds={"s": [0.5, 1.0]})["mAA"][0] == pytest.approx(1.0)

    # categories.csv beside a labels file is used by default
    labels = tmp_path / "train_labels.csv"
    pd.DataFrame(
        {
            "dataset": gt["dataset"],
            "scene": gt["scene"],
            "image_name": gt["image_name"],
            "rotation_matrix": [";".join("%.17g" % v for v in R.ravel()) for R in gt["R"]],
            "translation_vector": [";".join("%.17g" % v for v in t) for t in gt["t"]],
        }
    ).to_csv(labels, index=False)
    assert score(labels, sub)["mAA"][0] == pytest.approx(facade)
    (tmp_path / "categories.csv").write_text("scene,categories\ns,object;transparent\n")
    assert score(labels, sub)["mAA"][0] == pytest.approx(objects)
    assert main(labels, sub, tmp_path / "categories.csv")["mAA"][0] == pytest.approx(objects)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        score(labels, sub, tmp_path / "absent.csv")


def test_small_scenes_and_few_registered():
    three = CENTRES[:3]
    assert mean_average_accuracy(three, three * 2 + 1) == 1.0
    assert mean_average_accuracy(three, np.vstack([three[:2], [np.nan] * 3])) == 0.0
    est = np.full_like(CENTRES, np.nan)
    est[:2] = CENTRES[:2]
    assert mean_average_accuracy(CENTRES, est) == 0.0
    assert mean_average_accuracy(CENTRES, np.zeros_like(CENTRES)) == 0.0  # all at one point: no transform


def test_duplicates_raise_and_extra_rows_are_ignored(gt, caplog):
    with pytest.raises(ValueError, match="d/s/0004.jpg"):
        score(gt, pd.concat([gt, gt.iloc[[4]]], ignore_index=True))
    extra = gt.iloc[[0]].assign(scene="other")
    with caplog.at_level(logging.WARNING, logger="imc_lib.formats.metric"):
        table = score(gt, pd.concat([gt, extra], ignore_index=True))
    assert table["mAA"].tolist() == [1.0]
    assert "1 submission rows are not in the labels" in caplog.text


def test_many_cameras_sampled_triplets_are_bounded_and_exact():
    rng = np.random.default_rng(5)
    gt = rng.uniform(-10, 10, size=(100, 3))
    s, Q, q = random_similarity(rng)
    est = s * gt @ Q.T + q
    far = rng.choice(100, size=10, replace=False)
    est[far] += 1000.0
    value = mean_average_accuracy(gt, est)
    assert value == pytest.approx((90 - 3) / (100 - 3))
    assert mean_average_accuracy(gt, est) == value  # fixed seed: same triplets every time
    # what bounds the cost: a sample of MAX_TRIPLETS fits, not all C(100, 3) = 161700
    assert len(metric._triplets(100, metric.MAX_TRIPLETS, metric.SEED)) == metric.MAX_TRIPLETS < 161700


def test_triplet_sampling():
    all_ = metric._triplets(12, 10000, 0)
    assert len(all_) == 220 and len(np.unique(all_, axis=0)) == 220
    sample = metric._triplets(60, 10000, 0)
    assert len(sample) == 10000 and len(np.unique(sample, axis=0)) == 10000
    assert np.all((sample[:, 0] < sample[:, 1]) & (sample[:, 1] < sample[:, 2]) & (sample[:, 2] < 60))
    np.testing.assert_array_equal(sample, metric._triplets(60, 10000, 0))


def test_format_table():
    table = pd.DataFrame(
        {"dataset": ["a", "b"], "scene": ["a", "b"], "images": [10, 8], "registered": [10, 7], "mAA": [1.0, 5 / 7]}
    )
    lines = format_table(table).splitlines()
    assert len(lines) == 4
    assert lines[1].split() == ["a", "a", "10/10", "1.000"]
    assert lines[2].split() == ["b", "b", "7/8", "0.714"]
    assert lines[3].split() == ["mean", "0.857"]


def test_real_labels_score_one(imc_data_dir):
    labels = imc_data_dir / "train" / "train_labels.csv"
    truth = read_poses(labels, "labels")
    table = score(labels, truth)
    assert table["scene"].tolist() == ["entry", "fountain", "herzjesu-p8", "temple"]
    assert table["images"].tolist() == [10, 11, 8, 16]
    assert table["mAA"].tolist() == [1.0] * 4
    moved = transform_world(truth, *random_similarity(np.random.default_rng(6)))
    assert score(labels, moved)["mAA"].tolist() == [1.0] * 4
    assert format_table(table).splitlines()[-1].split() == ["mean", "1.000"]


def _reference_counts(gt, est, thresholds):
    """Plain loops over triplets and thresholds, as the competition's register_by_Horn runs them."""
    from itertools import combinations

    from imc_lib.formats.metric import _errors, _horn_batch

    def fit(mask):
        return _horn_batch(est[mask][None], gt[mask][None])

    best_cnt, best_sse = np.zeros(len(thresholds), int), np.full(len(thresholds), np.inf)
    for tri in combinations(range(len(gt)), 3):
        mask = np.zeros(len(gt), bool)
        mask[list(tri)] = True
        err = _errors(*fit(mask), est, gt)[0]
        seen = []
        for th in thresholds:
            inl = err < th
            if inl.sum() <= 2 or any((inl == s).all() for s in seen):
                seen.append(inl)
                continue
            seen.append(inl)
            err_ref = _errors(*fit(inl), est, gt)[0]
            cnt, sse = (err_ref[:, None] < thresholds).sum(0), (err_ref**2).sum()
            better = (cnt > best_cnt) | ((cnt == best_cnt) & (sse < best_sse))
            best_cnt[better], best_sse[better] = cnt[better], sse
    return best_cnt


def test_vectorised_registration_matches_plain_loops():
    from imc_lib.formats.metric import DEFAULT_THRESHOLDS, _register

    rng = np.random.default_rng(3)
    thresholds = np.array(DEFAULT_THRESHOLDS)
    for _ in range(5):
        gt = rng.uniform(-3, 3, (9, 3))
        est = 0.5 * gt + rng.normal(0, 0.15, gt.shape)
        est[:2] += rng.normal(0, 2, (2, 3))
        expected = _reference_counts(gt, est, thresholds)
        assert (_register(gt, est, thresholds, 10_000, 0)[0] == expected).all()


def test_camera_errors_after_registration():
    from imc_lib.formats.metric import camera_errors

    rng = np.random.default_rng(5)
    gt = rng.uniform(-5, 5, (8, 3))
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    Q *= np.sign(np.linalg.det(Q))
    est = (gt @ Q.T) * 0.3 + 2.0
    est[2] += 10.0  # one camera far off
    est[5] = np.nan  # one unregistered
    err = camera_errors(gt, est, 0.1)
    assert np.isinf(err[5]) and err[2] > 5
    np.testing.assert_allclose(np.delete(err, [2, 5]), 0, atol=1e-9)


def test_non_orthonormal_rotation_is_scored_with_a_warning(gt, caplog):
    bad = gt.copy()
    bad.at[4, "R"] = bad.at[4, "R"] * 2.0
    row = score(gt, bad).iloc[0]
    assert "not orthonormal" in caplog.text and "/".join([bad.at[4, "dataset"], bad.at[4, "scene"]]) in caplog.text
    assert row["registered"] == 10 and row["mAA"] < 1.0


# IMC 2025: scenes + outliers per dataset, submitted as clusters.

BUILDING = (0.025, 0.05, 0.1, 0.2, 0.5, 1.0)
NAN_POSE = (np.full((3, 3), np.nan), np.full(3, np.nan))


def mixed_labels(scenes: dict, outliers: int = 2, dataset="d"):
    """A read_poses_2025-style labels table: each scene's cameras at the given centres (random
    rotations), then `outliers` photos with nan poses; photos are named <scene>_<i>."""
    rng = np.random.default_rng(7)
    rows = [
        (dataset, scene, f"{scene}_{i}", R, -R @ c)
        for scene, centres in scenes.items()
        for i, (c, R) in enumerate((c, random_rotation(rng)) for c in centres)
    ]
    rows += [(dataset, "outliers", f"junk_{i}", *NAN_POSE) for i in range(outliers)]
    return pd.DataFrame(rows, columns=["dataset", "scene", "image_name", "R", "t"])


def clustered(labels, assign: dict, seed=8):
    """A submission: each photo in the cluster `assign` names (default: its true scene), every cluster
    in its own world frame (a random similarity of the truth); "outliers" rows get nan poses."""
    rng = np.random.default_rng(seed)
    out = labels.assign(scene=[assign.get(n, s) for n, s in zip(labels["image_name"], labels["scene"])])
    parts = []
    for cluster, group in out.groupby("scene", sort=False):
        if cluster == "outliers":
            parts.append(group.assign(R=[NAN_POSE[0]] * len(group), t=[NAN_POSE[1]] * len(group)))
        else:
            parts.append(transform_world(group, *random_similarity(rng)))
    return pd.concat(parts).loc[labels.index]


SCENES = {"a": CENTRES, "b": CUBE[:7] * 0.5 + 3}  # 10 and 7 photos, + 2 outliers
THRESHOLDS = {("d", "a"): BUILDING, ("d", "b"): BUILDING}


def score25(labels, sub, **kw):
    datasets, scenes = metric.score_2025(labels, sub, THRESHOLDS, **kw)
    return datasets.iloc[0], scenes.set_index("scene")


def test_2025_perfect_scores_one():
    labels = mixed_labels(SCENES)
    row, scenes = score25(labels, clustered(labels, {}))
    assert (row["score"], row["mAA"], row["clusterness"]) == (1.0, 1.0, 1.0)
    assert (row["outliers"], row["outliers_found"], row["labelled_outliers"], row["clusters"]) == (2, 2, 2, 2)
    assert scenes["cluster"].to_dict() == {"a": "a", "b": "b"} and scenes["mAA"].tolist() == [1.0, 1.0]


def test_2025_one_cluster_of_everything():
    """True poses, one cluster of every photo: every scene is perfect inside it (mAA 1), and the cluster
    serves each scene, so clusterness = sum |S| / (scenes * N): the mean of the scenes' shares, which is
    the scene's share when there is one scene (the issue's "largest scene's share" holds for that case)."""
    labels = mixed_labels(SCENES)
    sub = labels.assign(scene="all")  # true poses: each scene in its own true frame
    row, scenes = score25(labels, sub)
    assert row["mAA"] == 1.0 and scenes["cluster"].tolist() == ["all", "all"]
    assert row["clusterness"] == pytest.approx((10 + 7) / (2 * 19))
    assert row["score"] == pytest.approx(2 * row["clusterness"] / (1 + row["clusterness"]))
    assert (row["outliers_found"], row["labelled_outliers"]) == (0, 0)
    single = mixed_labels({"a": CENTRES}, outliers=3)
    row, _ = metric.score_2025(single, single.assign(scene="all"), {("d", "a"): BUILDING})
    assert row.loc[0, "mAA"] == 1.0 and row.loc[0, "clusterness"] == pytest.approx(10 / 13)


def test_2025_dropped_photo_is_an_error_and_an_outlier_label_is_wrong():
    labels = mixed_labels(SCENES)
    sub = clustered(labels, {})
    with pytest.raises(ValueError, match="no row for 1 photo.*d/a_3; every photo needs one"):
        metric.score_2025(labels, sub.drop(index=3), THRESHOLDS)
    row, scenes = score25(labels, clustered(labels, {"a_3": "outliers"}))  # a scene photo called an outlier
    assert scenes.loc["a", "mAA"] == pytest.approx(4 * (9 - 3) / (4 * (10 - 3)))
    assert row["mAA"] == pytest.approx((4 * 6 + 4 * 4) / (4 * (7 + 4)))
    assert row["clusterness"] == 1.0 and row["labelled_outliers"] == 3


def test_2025_outliers_in_a_cluster_lower_clusterness():
    labels = mixed_labels(SCENES)
    sub = clustered(labels, {"junk_0": "a", "junk_1": "a"})
    sub.loc[sub["image_name"].str.startswith("junk"), ["R", "t"]] = sub.loc[[0, 1], ["R", "t"]].to_numpy()
    row, scenes = score25(labels, sub)
    assert row["mAA"] == 1.0 and scenes.loc["a", "cluster_size"] == 12
    assert row["clusterness"] == pytest.approx((10 + 7) / (12 + 7))
    assert row["outliers_found"] == 0


def test_2025_nan_poses_are_wrong_but_stay_in_their_cluster():
    labels = mixed_labels(SCENES)
    sub = clustered(labels, {})
    sub.loc[[2, 5], "R"] = pd.Series([NAN_POSE[0]] * 2, index=[2, 5])
    row, scenes = score25(labels, sub)
    assert scenes.loc["a", "registered"] == 8 and scenes.loc["a", "mAA"] == pytest.approx(5 / 7)
    assert row["clusterness"] == 1.0 and row["mAA"] == pytest.approx((4 * 5 + 4 * 4) / (4 * 11))


def test_2025_ties_go_to_the_higher_maa_then_the_name():
    labels = mixed_labels(SCENES)
    half = {f"a_{i}": "x" if i < 5 else "y" for i in range(10)}
    sub = clustered(labels, half)
    sub.loc[[0, 1], "t"] = pd.Series([sub.loc[0, "t"] + 100, sub.loc[1, "t"] - 100], index=[0, 1])  # x: 2 far off
    _, scenes = score25(labels, sub)
    assert scenes.loc["a", "cluster"] == "y" and scenes.loc["a", "shared"] == 5
    assert scenes.loc["a", "mAA"] == pytest.approx(4 * (5 - 3) / (4 * 7))
    _, scenes = score25(labels, clustered(labels, half))  # both halves exact: the first by name
    assert scenes.loc["a", "cluster"] == "x"


def test_2025_a_cluster_serving_two_scenes():
    labels = mixed_labels(SCENES)
    assign = {**{f"a_{i}": "c" for i in range(10)}, **{f"b_{i}": "c" if i < 5 else "d" for i in range(7)}}
    sub = labels.assign(scene=[assign.get(n, s) for n, s in zip(labels["image_name"], labels["scene"])])
    row, scenes = score25(labels, sub)  # true poses: each scene registers in its own frame inside c
    assert scenes["cluster"].to_dict() == {"a": "c", "b": "c"} and scenes["cluster_size"].tolist() == [15, 15]
    assert row["clusterness"] == pytest.approx((10 + 5) / (15 + 15))
    assert scenes.loc["b", "mAA"] == pytest.approx(4 * (5 - 3) / (4 * 4))


def test_2025_only_the_four_largest_thresholds_count():
    est = CENTRES.copy()
    est[8] += [0.45, 0.0, 0.0]  # the two interior cameras: inliers at 0.5 and 1.0 only (see the 2024 test)
    est[9] += [0.0, -0.27, 0.36]
    labels = mixed_labels({"a": CENTRES}, outliers=0)
    sub = labels.copy()
    sub["t"] = [-R @ c for R, c in zip(sub["R"], est)]
    row, _ = metric.score_2025(labels, sub, {("d", "a"): BUILDING})
    assert row.loc[0, "mAA"] == pytest.approx((5 + 5 + 7 + 7) / (4 * 7))


def test_2025_scene_without_a_cluster_and_missing_dataset(caplog):
    labels = pd.concat([mixed_labels(SCENES), mixed_labels({"a": CENTRES}, dataset="e")], ignore_index=True)
    sub = clustered(labels, {f"b_{i}": "outliers" for i in range(7)})
    sub = sub[sub["dataset"] == "d"]
    datasets, scenes = metric.score_2025(labels, sub, {**THRESHOLDS, ("e", "a"): BUILDING})
    assert "dataset(s) ['e'] have no rows in the submission: scored 0" in caplog.text
    assert datasets["score"].tolist()[1] == 0.0 and datasets["mAA"].tolist() == [pytest.approx(28 / 44), 0.0]
    assert scenes["cluster"].tolist() == ["a", "", ""]
    with pytest.raises(ValueError, match="no thresholds for scene d/b"):
        metric.score_2025(labels, sub, {("d", "a"): BUILDING})


@pytest.fixture(scope="module")
def perfect_2025(imc25_dir, tmp_path_factory):
    """A submission of the composed set's train split: each true scene a cluster with its true poses."""
    from imc_lib.formats import data, submission

    truth = submission.read_poses(imc25_dir / "train_labels.csv", "2025")
    rows = []
    for scene in data.load_scenes(imc25_dir, "train"):
        mine = truth[(truth["dataset"] == scene.dataset) & (truth["scene"] != "outliers")]
        clusters = [dict(zip(g["image_name"], zip(g["R"], g["t"]))) for _, g in mine.groupby("scene")]
        rows += submission.scene_rows(scene, {}, sorted(clusters, key=len, reverse=True))
    return submission.write_submission(rows, tmp_path_factory.mktemp("sub25") / "submission.csv")


def test_2025_composed_set_scores_one(imc25_dir, perfect_2025):
    datasets, scenes = metric.score_2025(imc25_dir / "train_labels.csv", perfect_2025)
    assert datasets["dataset"].tolist() == ["small", "tabletop"]
    assert datasets["score"].tolist() == [1.0, 1.0] and datasets["clusterness"].tolist() == [1.0, 1.0]
    assert datasets["outliers_found"].tolist() == [3, 9] and datasets["outliers"].tolist() == [3, 9]
    assert scenes.set_index("scene")["cluster"].to_dict() == {
        "fountain": "cluster1", "herzjesu-p8": "cluster2", "temple": "cluster0",
        "dtu-scan24": "cluster1", "fox": "cluster0", "temple-ring": "cluster2",
    }  # fmt: skip


def test_2025_cli_score(imc25_dir, perfect_2025, capsys):
    from imc_lib import cli

    assert cli.main(["score", str(imc25_dir / "train_labels.csv"), str(perfect_2025)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "score", "mAA", "clusterness", "outliers", "found"]
    assert lines[1].split() == ["small", "1.000", "1.000", "1.000", "3/3"]
    assert lines[3].split() == ["mean", "1.000", "1.000", "1.000"]
    assert ["tabletop", "fox", "cluster0", "50/50", "50", "1.000"] in [line.split() for line in lines[5:]]


def test_2025_cli_score_errors(imc_data_dir, imc25_dir, perfect_2025, tmp_path, capsys):
    from imc_lib import cli

    assert cli.main(["score", str(imc_data_dir / "train/train_labels.csv"), str(perfect_2025)]) == 2
    assert "is an IMC 2024 table" in capsys.readouterr().err
    labels = tmp_path / "train_labels.csv"
    labels.write_bytes((imc25_dir / "train_labels.csv").read_bytes())
    assert cli.main(["score", str(labels), str(perfect_2025)]) == 2
    assert "train_thresholds.csv: file not found" in capsys.readouterr().err
    assert (
        cli.main(["score", str(labels), str(perfect_2025), "--thresholds", str(imc25_dir / "train_thresholds.csv")])
        == 0
    )
