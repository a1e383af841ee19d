"""The joining rule (imc_lib/stages/joining.py) on real photos: two parts of one scene become one model that
scores like the whole scene; two unrelated scenes in one photo set stay apart."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from imc_lib import networks, plan, runner, utils
from imc_lib.formats import data, metric, submission
from imc_lib.stages import checks, joining, reconstruction

SCENE = "fountain"  # 11 photos along a facade: an overlap of 3 ties the two halves


@pytest.fixture(scope="module")
def fountain(tmp_path_factory, imc_data_dir, weights_dir):
    """fountain's verified matches in a COLMAP database, and the scene record."""
    (scene,) = data.load_scenes(imc_data_dir, "train", [SCENE])
    work = tmp_path_factory.mktemp("fountain")
    sconfs = plan.resolve(
        device="cpu", pairs="exhaustive", max_keypoints=1024, orientation="none", resize_to=640
    )  # at 640 px the facade's far end is tied to its first photos only through the middle
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    paths = runner.run_scene(plan.plan_scene(scene, sconfs, work), nets, until="matching").paths
    conf = reconstruction.confs["incremental"]
    database = work / "database.db"
    names = list(scene.image_names)
    reconstruction.create_database(
        conf, scene.image_dir, names, paths.match_pairs, paths.features, paths.matches, database
    )
    pycolmap.geometric_verification(database, two_view_geometry_options=pycolmap.TwoViewGeometryOptions(
        conf["verification"]))  # fmt: skip
    return scene, database, work


def _map_part(scene, database, names, out):
    """The mapper's model of `names` alone, over the whole scene's database (same image ids)."""
    options = pycolmap.IncrementalPipelineOptions(reconstruction.confs["incremental"]["options"])
    options.image_names, options.random_seed, options.num_threads = names, 0, 1
    models = pycolmap.incremental_mapping(database, scene.image_dir, out, options)
    return max(models.values(), key=lambda m: m.num_reg_images()), options


def _score(scene, imc_data_dir, model, tmp_path) -> float:
    path = tmp_path / "submission.csv"
    submission.write_submission(submission.scene_rows(scene, reconstruction.poses(model)), path)
    table = metric.score(imc_data_dir / "train" / "train_labels.csv", path)
    return table[table["scene"] == scene.key]["mAA"].iloc[0]


def test_two_parts_of_one_scene_join_into_one_model_that_scores_as_the_whole(fountain, imc_data_dir, tmp_path):
    scene, database, work = fountain
    names = sorted(scene.image_names)
    first, options = _map_part(scene, database, names[:7], tmp_path / "a")
    second, _ = _map_part(scene, database, names[4:], tmp_path / "b")
    assert first.num_reg_images() == 7 and second.num_reg_images() == 7  # two models sharing 3 photos
    alone = _score(scene, imc_data_dir, first, tmp_path)
    assert alone < 0.8  # 4 of 11 photos missing

    outcome = joining.main({"keep": "one"}, [second, first], database, options)
    (model,) = outcome.clusters
    assert model.num_reg_images() == 11
    summary = outcome.summary()
    assert (summary["models_before"], summary["models_after"]) == (2, 1)
    assert (summary["registered_before"], summary["registered_after"]) == (7, 11)
    assert _score(scene, imc_data_dir, model, tmp_path) >= 0.95  # the whole scene mapped at once: 1.0


def test_a_model_that_does_not_register_stays_apart(fountain, tmp_path):
    """Below `join_share` nothing is joined: a model of 4 photos whose photos cannot register into
    another (a join_share above 1 makes any model such a one) is a cluster of its own with keep="all"."""
    scene, database, _ = fountain
    names = sorted(scene.image_names)
    first, options = _map_part(scene, database, names[:7], tmp_path / "a")
    second, _ = _map_part(scene, database, names[7:], tmp_path / "b")
    outcome = joining.main({"keep": "all", "join_share": 1.01}, [first, second], database, options)
    sizes = [c.num_reg_images() for c in outcome.clusters]
    assert sizes == [7, 4] and outcome.joined == 0
    kept = [{m.images[i].name for i in m.reg_image_ids()} for m in outcome.clusters]
    assert kept[0].isdisjoint(kept[1])


def test_a_model_whose_photos_all_sit_in_a_larger_one_leaves_no_empty_cluster(fountain, tmp_path):
    """A smaller model that does not join but holds only photos of a larger one loses them all to it (a photo
    stays with the larger): it is no cluster any more, and no photo is registered into a model without one,
    which stopped pycolmap ("NumRegFrames() > 0") and failed a whole 240-photo folder (benchmarks/scale.py)."""
    scene, database, _ = fountain
    names = sorted(scene.image_names)
    first, options = _map_part(scene, database, names[:8], tmp_path / "a")
    inside, _ = _map_part(scene, database, names[2:6], tmp_path / "b")
    assert _names(inside) <= _names(first)
    clusters = joining._share_out([joining._Cluster(pycolmap.Reconstruction(m)) for m in (first, inside)])
    assert [_names(c.model) for c in clusters] == [_names(first)]
    emptied = pycolmap.Reconstruction(inside)
    for image_id in list(emptied.reg_image_ids()):
        emptied.deregister_frame(emptied.image(image_id).frame_id)
    with pycolmap.Database.open(database) as db:
        cache = pycolmap.DatabaseCache.create(db, pycolmap.DatabaseCacheOptions())
    left_out = {i for i in first.images if i not in first.reg_image_ids()} | set(inside.reg_image_ids())
    assert joining._Session(cache, options, 3).extend(emptied, left_out) == 0


def test_only_photos_tied_by_verified_pairs_can_register(fountain):
    """The pre-check before a join: photos reach a model only through chains of verified pairs
    (here the whole fountain is one chain), and none reach it from a model of photos the database
    ties to nothing."""
    scene, database, _ = fountain
    with pycolmap.Database.open(database) as db:
        cache = pycolmap.DatabaseCache.create(db, pycolmap.DatabaseCacheOptions(min_num_matches=15))
        ids = {img.name: int(img.image_id) for img in db.read_all_images()}
    options = pycolmap.IncrementalPipelineOptions(reconstruction.confs["incremental"]["options"])
    session = joining._Session(cache, options, 3)
    names = sorted(scene.image_names)
    first, rest = {ids[n] for n in names[:3]}, {ids[n] for n in names[3:]}
    assert session.reachable(rest, first) == rest
    assert session.reachable(rest, set()) == set()
    far = {ids[names[-1]]}  # the facade's other end: tied to the first photos only through the middle
    assert session.reachable(far, first) == set()


@pytest.mark.slow
def test_unrelated_scenes_in_one_photo_set_stay_apart(tmp_path, imc_data_dir, weights_dir):
    """herzjesu-p8 (a facade) and temple (an object) in one folder: every cluster holds one scene only."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for key in ("herzjesu-p8", "temple"):
        for photo in sorted((imc_data_dir / "train" / key / "images").iterdir()):
            os.symlink(photo, image_dir / f"{key}_{photo.name}")
    names = tuple(sorted(p.name for p in image_dir.iterdir()))
    mixed = data.Scene("two", "two", image_dir, names, names)
    sconfs = plan.resolve(device="cpu", pairs="exhaustive", max_keypoints=1024, orientation="none")
    sconfs["reconstruction"] = dict(reconstruction.confs["clusters"])
    nets = networks.Networks(weights_dir, utils.pick_device("cpu"))
    out = runner.run_scene(plan.plan_scene(mixed, sconfs, tmp_path / "work"), nets)
    clusters = reconstruction.clusters(out.paths.sfm)
    scenes_in = [{mixed_name.split("_")[0] for mixed_name in _names(c)} for c in clusters]
    assert all(len(s) == 1 for s in scenes_in), scenes_in
    assert {"herzjesu-p8"} in scenes_in and {"temple"} in scenes_in
    herzjesu = [c for c, s in zip(clusters, scenes_in) if s == {"herzjesu-p8"}]
    assert len(herzjesu) == 1 and herzjesu[0].num_reg_images() == 8  # a whole scene, one cluster


def _names(model: pycolmap.Reconstruction) -> set[str]:
    return {model.images[i].name for i in model.reg_image_ids()}


def test_photos_registered_out_of_their_model_s_shape_do_not_join(fountain, tmp_path):
    """`_agrees`: a model placed whole (any similarity) agrees; the same photos with their places swapped do not."""
    scene, database, _ = fountain
    model, _ = _map_part(scene, database, sorted(scene.image_names)[:7], tmp_path / "a")
    ids = sorted(model.reg_image_ids())
    moved = pycolmap.Reconstruction(model)
    moved.transform(pycolmap.Sim3d(2.0, pycolmap.Rotation3d([0.0, 0.0, 0.7071068, 0.7071068]), [1.0, -3.0, 5.0]))
    assert joining._agrees(model, moved, set(ids), 0.1)
    swapped = pycolmap.Reconstruction(model)
    poses = {i: swapped.image(i).cam_from_world() for i in ids}
    for i, j in zip(ids[:4], [ids[2], ids[0], ids[3], ids[1]]):  # four photos placed where others were
        swapped.frame(swapped.image(i).frame_id).rig_from_world = poses[j]
    assert not joining._agrees(model, swapped, set(ids), 0.1)


def test_final_refinement_keeps_observations_within_the_bound_and_every_photo(fountain, imc_data_dir, tmp_path):
    """final_max_reproj_error: the kept model is refined once more and every observation left reprojects
    within the bound (the mapper's own filter keeps up to 4 px); no photo is lost, the score holds."""
    scene, database, _ = fountain
    model, options = _map_part(scene, database, sorted(scene.image_names), tmp_path / "all")
    before = pycolmap.Reconstruction(model)
    worst = max(_errors(before))
    assert worst > 1.5
    (refined,) = joining.main({"keep": "one", "final_max_reproj_error": 1.5}, [model], database, options).clusters
    assert refined.num_reg_images() == before.num_reg_images() == 11
    assert max(_errors(refined)) <= 1.5 + 1e-6
    assert refined.compute_mean_reprojection_error() < before.compute_mean_reprojection_error()
    assert _score(scene, imc_data_dir, refined, tmp_path) >= _score(scene, imc_data_dir, before, tmp_path)


def _errors(model: pycolmap.Reconstruction) -> list[float]:
    """Every observation's reprojection error in pixels."""
    errors = []
    for point in model.points3D.values():
        for element in point.track.elements:
            image = model.images[element.image_id]
            projected = image.project_point(point.xyz)
            if projected is not None:
                errors.append(float(((projected - image.points2D[element.point2D_idx].xy) ** 2).sum() ** 0.5))
    return errors


def test_a_refinement_that_drops_most_points_is_refused_and_the_model_kept(fountain):
    """The check (imc_lib/checks.py): a final refinement whose filter is far too tight (0.2 px) keeps
    a fraction of the points; it is refused, logged with its numbers, and the mapper's model is kept."""
    scene, database, _ = fountain
    model, options = _map_part(scene, database, sorted(scene.image_names), Path(database).parent / "tight")
    before = pycolmap.Reconstruction(model)
    outcome = joining.main({"keep": "one", "final_max_reproj_error": 0.2}, [model], database, options)
    (kept,) = outcome.clusters
    (line,) = [c for c in outcome.checks if "final refinement" in c]
    assert "refused" in line and "points kept" in line
    assert kept.num_points3D() == before.num_points3D()
    assert kept.compute_num_observations() == before.compute_num_observations()
    for image_id, image in before.images.items():
        assert np.allclose(kept.image(image_id).cam_from_world().matrix(), image.cam_from_world().matrix())


def test_a_step_that_pulls_the_intrinsics_away_is_refused(fountain, monkeypatch):
    """A refinement that moves the focal length by 15% (pulled on purpose after the real one) is refused:
    the kept model has the mapper's intrinsics; an honest refinement of the same model is kept."""
    scene, database, _ = fountain
    model, options = _map_part(scene, database, sorted(scene.image_names), Path(database).parent / "pulled")
    focal = {c: cam.mean_focal_length() for c, cam in model.cameras.items()}
    honest = joining.main({"keep": "one", "final_max_reproj_error": 1.5}, [pycolmap.Reconstruction(model)],
                         database, options)  # fmt: skip
    assert any("final refinement: kept" in c for c in honest.checks)
    refine = joining._Session.refine

    def pulled(self, model, max_reproj_error=None):
        refine(self, model, max_reproj_error)
        for camera in model.cameras.values():
            camera.params = [p * 1.15 if i in camera.focal_length_idxs() else p for i, p in enumerate(camera.params)]
        return model

    monkeypatch.setattr(joining._Session, "refine", pulled)
    outcome = joining.main({"keep": "one", "final_max_reproj_error": 1.5}, [model], database, options)
    assert any("final refinement: refused (a focal length moved" in c for c in outcome.checks)
    (kept,) = outcome.clusters
    assert {c: cam.mean_focal_length() for c, cam in kept.cameras.items()} == pytest.approx(focal)


def test_the_check_reads_a_model_s_signs():
    """checks.judge on made-up stats: each sign refuses on its own, and equal stats pass."""
    base = checks.Stats(photos=10, points=1000, observations=4000, focal={1: 1000.0}, error={i: 0.5 for i in range(10)})
    assert checks.judge("s", base, base, refine_only=True).kept
    worse = {
        "fewer photos": dataclasses.replace(base, photos=9),
        "focal length moved": dataclasses.replace(base, focal={1: 1100.0}),
        "points kept": dataclasses.replace(base, points=500),
        "did not add": dataclasses.replace(base, error={i: 0.9 for i in range(10)}),
    }
    for reason, after in worse.items():
        verdict = checks.judge("s", base, after, refine_only=True)
        assert not verdict.kept and reason in verdict.line(), reason
    assert checks.judge("s", base, worse["points kept"]).kept  # a step that adds photos may drop points
