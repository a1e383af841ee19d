"""Reconstruction stage: a partial conf runs with the default's other keys (cameras, mapper options)."""

from __future__ import annotations

import numpy as np
import pycolmap

from imc_lib import pairs, reconstruction
from imc_lib.utils import full_conf, write_group


def test_partial_conf_builds_the_database_with_the_default_s_camera_model(tmp_path, imc_data_dir):
    image_dir = imc_data_dir / "train" / "herzjesu-p8" / "images"
    names = ["0000.jpg", "0001.jpg"]
    rng = np.random.default_rng(0)
    for name in names:  # a few keypoints per photo: the database needs them, not their quality
        kpts = rng.uniform(0, 500, (20, 2)).astype(np.float32)
        arrays = {"keypoints": kpts, "descriptors": np.zeros((20, 128), np.float32), "scores": np.ones(20, np.float32)}
        write_group(tmp_path / "feats.h5", name, {**arrays, "image_size": np.array([1536, 1024])})
    pairs.write_pairs([], tmp_path / "pairs.txt")
    partial = {"camera_mode": "per_image", "options": {"max_num_models": 1}}
    merged = full_conf(reconstruction.confs, partial, reconstruction.DEFAULT_BY)
    default = reconstruction.confs["incremental"]
    assert merged == {**default, **partial, "options": {**default["options"], "max_num_models": 1}}
    sfm = tmp_path / "sfm"
    model = reconstruction.main(
        partial, image_dir, names, tmp_path / "pairs.txt", tmp_path / "feats.h5", tmp_path / "m.h5", sfm
    )
    assert model is None and (sfm / "EMPTY").exists()  # no pairs, no model
    with pycolmap.Database.open(sfm / "database.db") as db:
        cameras = db.read_all_cameras()
        assert db.num_images() == 2
    assert len(cameras) == 2  # per_image, as asked (the default shares one camera)
    assert {c.model.name for c in cameras} == {default["camera_model"]}  # from the default
