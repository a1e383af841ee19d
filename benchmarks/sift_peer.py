"""The peer every table compares against: plain COLMAP SIFT through pycolmap, in this process.

pycolmap's own SIFT extraction, exhaustive matching, incremental mapping with defaults, largest
model; unregistered images get the identity pose (as in ../shared/data/README.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pycolmap

from imc_lib import data, reconstruction, submission


def run_sift(data_dir: Path, work_dir: Path, scenes: list[str] | None = None) -> dict:
    """Reconstruct each scene with plain COLMAP SIFT; returns {"scenes": {key: {registered, images,
    seconds}}, "submission": path}."""
    work_dir = Path(work_dir)
    results, rows = {}, []
    for scene in data.load_scenes(data_dir, "train", scenes):
        start = time.perf_counter()
        root = work_dir / scene.key
        root.mkdir(parents=True, exist_ok=True)
        database = root / "database.db"
        database.unlink(missing_ok=True)
        names = list(scene.image_names)
        pycolmap.extract_features(database, scene.image_dir, names, device=pycolmap.Device.cpu)
        pycolmap.match_exhaustive(database, device=pycolmap.Device.cpu)
        models = pycolmap.incremental_mapping(database, scene.image_dir, root / "models")
        found = reconstruction.poses(reconstruction.largest_model(models))
        results[scene.key] = {"images": len(names), "registered": sum(n in found for n in names),
                              "seconds": time.perf_counter() - start}
        for name, path in zip(names, scene.image_paths):
            R, t = found.get(name, (None, None))
            rows.append({"image_path": path, "dataset": scene.dataset, "scene": scene.scene, "R": R, "t": t})
    out = submission.write_submission(rows, work_dir / "submission.csv")
    return {"scenes": results, "submission": out}
