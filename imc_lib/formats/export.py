"""A photo set's clusters as files that 3D tools open, beside a table of every photo's pose.

    OUT/poses.csv                    a row per photo: image, cluster (cluster0, ... or outliers),
                                     rotation_matrix, translation_vector (world-to-camera, ';'-joined,
                                     as in the competition's files), camera_model, camera_params
    OUT/cluster0/sparse/0/           the cluster's COLMAP model (COLMAP GUI, pycolmap, nerfstudio, gsplat)
    OUT/cluster0/transforms.json     nerfstudio's format: OpenCV camera model with the distortion the
                                     mapper estimated, camera-to-world matrices in OpenGL camera axes
    OUT/cluster0/points3D.ply        the cluster's 3D points with their colours (MeshLab, Open3D)

Written from the reconstruction stage's folder (`reconstruction.clusters`); nothing here maps again.
The clusters are numbered as in submission.csv (largest first); an IMC 2024 scene has one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pycolmap

from ..stages import reconstruction
from ..storage.io import atomic_file
from . import data, submission

logger = logging.getLogger(__name__)

POSES_COLUMNS = ["image", "cluster", "rotation_matrix", "translation_vector", "camera_model", "camera_params"]
# COLMAP camera models -> nerfstudio's OPENCV: (fx, fy, cx, cy) and (k1, k2, p1, p2) as indices into
# the COLMAP params (None: zero). Others (fisheye, FULL_OPENCV) are not what the mapper is given.
OPENCV_FROM = {
    "SIMPLE_PINHOLE": ((0, 0, 1, 2), (None, None, None, None)),
    "PINHOLE": ((0, 1, 2, 3), (None, None, None, None)),
    "SIMPLE_RADIAL": ((0, 0, 1, 2), (3, None, None, None)),
    "RADIAL": ((0, 0, 1, 2), (3, 4, None, None)),
    "OPENCV": ((0, 1, 2, 3), (4, 5, 6, 7)),
}
# OpenCV/COLMAP camera axes (x right, y down, z forward) -> OpenGL's (x right, y up, z back): nerfstudio's.
OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def main(scene: data.Scene, sfm_dir: Path | None, out_dir: Path) -> Path:
    """Write `out_dir`'s files (module docstring) for `scene` from its reconstruction folder `sfm_dir`
    (None or empty: every photo an outlier); returns poses.csv's path."""
    out_dir = Path(out_dir)
    for old in out_dir.glob("cluster*"):  # an earlier run's clusters: a rerun may find fewer
        if old.is_dir() and old.name.removeprefix("cluster").isdigit():
            shutil.rmtree(old)
    models = submitted_models(sfm_dir, scene.mixed)
    for k, model in enumerate(models):
        write_cluster(model, scene.image_dir, out_dir / f"cluster{k}")
    path = write_poses(scene, models, out_dir / "poses.csv")
    logger.info("%s: %d cluster(s) exported (COLMAP model, transforms.json, points3D.ply each), poses.csv",
                out_dir, len(models))  # fmt: skip
    return path


def submitted_models(sfm_dir: Path | None, mixed: bool) -> list[pycolmap.Reconstruction]:
    """The models a scene's submission rows come from, numbered as there: every cluster of a mixed
    folder, the largest alone for an IMC 2024 scene; none without a reconstruction folder."""
    models = reconstruction.clusters(sfm_dir) if sfm_dir is not None else []
    return models if mixed else models[:1]


def write_cluster(model: pycolmap.Reconstruction, image_dir: Path, cluster_dir: Path) -> None:
    """One cluster's COLMAP model, transforms.json and points3D.ply in `cluster_dir`."""
    sparse = cluster_dir / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    model.write(sparse)
    model.export_PLY(str(cluster_dir / "points3D.ply"))
    with atomic_file(cluster_dir / "transforms.json") as handle:
        json.dump(transforms(model, image_dir, cluster_dir), handle, indent=1)


def write_poses(scene: data.Scene, models: list[pycolmap.Reconstruction], path: Path) -> Path:
    """poses.csv: a row per photo of `scene`, in its order; photos in no cluster are `outliers`, nan."""
    where = {}
    for k, model in enumerate(models):
        for image in model.images.values():
            if image.has_pose:
                where[image.name] = (f"cluster{k}", image)
    rows = [_pose_row(name, *where.get(name, (submission.OUTLIERS, None))) for name in scene.image_names]
    with atomic_file(path, newline="") as handle:
        pd.DataFrame(rows, columns=POSES_COLUMNS).to_csv(handle, index=False)
    return path


def _pose_row(name: str, cluster: str, image) -> list:
    if image is None:
        return [name, cluster, *submission.NAN_POSE, "", ""]
    pose = image.cam_from_world()
    camera = image.camera
    params = ";".join(f"{v:.9g}" for v in camera.params)
    return [name, cluster, *submission.format_pose(pose.rotation.matrix(), pose.translation), camera.model.name, params]


def transforms(model: pycolmap.Reconstruction, image_dir: Path, cluster_dir: Path) -> dict:
    """nerfstudio's transforms.json of one cluster: intrinsics at the top when every photo shares
    them (as nerfstudio documents), else per frame; `file_path` relative to `cluster_dir`."""
    images = sorted((im for im in model.images.values() if im.has_pose), key=lambda im: im.name)
    intrinsics = {im.camera_id: opencv_intrinsics(im.camera) for im in images}
    shared = len({json.dumps(v, sort_keys=True) for v in intrinsics.values()}) == 1
    frames = [
        {
            "file_path": os.path.relpath(Path(image_dir).resolve() / im.name, Path(cluster_dir).resolve()),
            "transform_matrix": camera_to_world_opengl(im.cam_from_world().matrix()).tolist(),
            **({} if shared else intrinsics[im.camera_id]),
        }
        for im in images
    ]
    top = next(iter(intrinsics.values())) if shared else {}
    return {"camera_model": "OPENCV", **top, "frames": frames, "ply_file_path": "points3D.ply"}


def opencv_intrinsics(camera: pycolmap.Camera) -> dict:
    """A COLMAP camera as nerfstudio's OPENCV keys: fl_x, fl_y, cx, cy, w, h, k1, k2, p1, p2."""
    name = camera.model.name
    if name not in OPENCV_FROM:
        raise ValueError(f"camera model {name}: no OPENCV form here; export handles {sorted(OPENCV_FROM)}")
    pinhole, distortion = OPENCV_FROM[name]
    params = [float(v) for v in camera.params]
    values = [params[i] for i in pinhole] + [0.0 if i is None else params[i] for i in distortion]
    keys = ["fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2"]
    return {**dict(zip(keys, values)), "w": int(camera.width), "h": int(camera.height)}


def camera_to_world_opengl(cam_from_world: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world in OpenGL camera axes from COLMAP's (3, 4) world-to-camera [R | t]."""
    world_to_cam = np.vstack([np.asarray(cam_from_world, dtype=float), [0, 0, 0, 1]])
    return np.linalg.inv(world_to_cam) @ OPENGL_FROM_OPENCV


def cam_from_world_opencv(transform_matrix) -> np.ndarray:
    """The inverse of `camera_to_world_opengl`: (3, 4) world-to-camera [R | t] from a transforms.json matrix."""
    return np.linalg.inv(np.asarray(transform_matrix, dtype=float) @ OPENGL_FROM_OPENCV)[:3]
