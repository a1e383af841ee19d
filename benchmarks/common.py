"""What the benchmarks share: where data and weights are, and the COLMAP SIFT peer.

The peer every table compares against is plain COLMAP SIFT through pycolmap, in this process:
pycolmap's own SIFT extraction, exhaustive matching, incremental mapping with defaults, largest
model; unregistered images get the identity pose (as in ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pycolmap

from imc_lib.formats import data, submission
from imc_lib.stages import reconstruction

# Exhaustive SIFT matching grows with the square of the photos: dino-full's 65,703 pairs take hours on 2
# cores (../shared/data/README.md did not run it either). Larger scenes get no SIFT column.
SIFT_MAX_IMAGES = 150


def run_sift(
    data_dir: Path, work_dir: Path, scenes: list[str] | None = None, max_images: int = SIFT_MAX_IMAGES
) -> dict:
    """Reconstruct each scene of at most `max_images` photos with plain COLMAP SIFT; returns
    {"scenes": {key: {registered, images, seconds}}, "submission": path} (larger scenes are left out)."""
    work_dir = Path(work_dir)
    results, rows = {}, []
    for scene in data.load_scenes(data_dir, "train", scenes):
        if len(scene.image_names) > max_images:
            print(f"COLMAP SIFT: {scene.key} skipped ({len(scene.image_names)} photos > {max_images})")
            continue
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
        results[scene.key] = {
            "images": len(names),
            "registered": sum(n in found for n in names),
            "seconds": time.perf_counter() - start,
        }
        rows += submission.scene_rows(scene, found)
    out = submission.write_submission(rows, work_dir / "submission.csv")
    return {"scenes": results, "submission": out}


ROOT = Path(__file__).resolve().parents[1]


def markdown(table) -> str:
    """A DataFrame as a Markdown table (pandas' to_markdown needs tabulate, which imc_lib does not)."""
    rows = [list(map(str, table.columns))] + [[str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([lines[0], "|" + "---|" * len(table.columns), *lines[1:]])


def data_dir(text: str) -> Path:
    """A data folder, or the name of one in ../shared/data (imc-mini, imc-mini-rot, imc-hard)."""
    path = Path(text)
    shared = ROOT.parent / "shared" / "data" / text
    return shared if not path.exists() and shared.is_dir() else path


def add_data_arguments(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """--data ($IMC_DATA_DIR, else ../shared/data/imc-mini) and --weights ($IMC_WEIGHTS_DIR, else
    ../shared/weights), --scenes and --work."""
    default = Path(os.environ.get("IMC_DATA_DIR", ROOT.parent / "shared/data/imc-mini"))
    if several:
        parser.add_argument("--data", type=data_dir, nargs="+", default=[default])
    else:
        parser.add_argument("--data", type=data_dir, default=default)
    parser.add_argument(
        "--weights", type=Path, default=Path(os.environ.get("IMC_WEIGHTS_DIR", ROOT.parent / "shared/weights"))
    )
    parser.add_argument("--scenes", nargs="+")
    parser.add_argument("--work", type=Path, help="default: a fresh temporary folder")
