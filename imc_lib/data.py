"""IMC 2024 folders and tables -> scene records.

Layout (as on Kaggle, `/kaggle/input/image-matching-challenge-2024`):
    DATA_DIR/train/<dataset>/images/*.jpg|png
    DATA_DIR/train/train_labels.csv     dataset,scene,image_name,rotation_matrix,translation_vector
    DATA_DIR/train/categories.csv       scene,categories
    DATA_DIR/test/<dataset>/images/*
    DATA_DIR/sample_submission.csv      image_path,dataset,scene,rotation_matrix,translation_vector
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Scene:
    """One scene to reconstruct: its images and the `image_path` each gets in the submission."""

    dataset: str
    scene: str
    image_dir: Path
    image_names: tuple[str, ...]  # file names relative to image_dir
    image_paths: tuple[str, ...]  # submission `image_path` values, same order
    categories: tuple[str, ...] = ()  # from <split>/categories.csv when present (e.g. transparent)

    @property
    def key(self) -> str:
        return self.scene if self.dataset == self.scene else f"{self.dataset}-{self.scene}"


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV and check it has the columns the pipeline needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected at least {required}")
    return df


def load_scenes(data_dir: Path, split: str = "train", scenes: list[str] | None = None) -> list[Scene]:
    """List the scenes of a split with their images.

    train: images from `train/train_labels.csv` when present, else every image in each
    `train/<dataset>/images`; test: from `sample_submission.csv`, as the Kaggle kernel sees it.
    Each scene carries its categories from `<split>/categories.csv` when that file exists.
    """
    data_dir = Path(data_dir)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if split == "test":
        table = read_table(data_dir / "sample_submission.csv", ["image_path", "dataset", "scene"])
        table["image_name"] = table["image_path"].map(lambda p: Path(p).name)
        table["image_dir"] = table["image_path"].map(lambda p: str(data_dir / Path(p).parent))
    else:
        labels = data_dir / "train" / "train_labels.csv"
        if labels.is_file():
            table = read_table(labels, ["dataset", "scene", "image_name"])
        else:
            rows = []
            for d in sorted((data_dir / "train").glob("*/")):
                if not (d / "images").is_dir():
                    continue
                files = sorted((d / "images").iterdir())
                images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
                if len(images) < len(files):
                    logger.warning(
                        "%s: ignoring %d file(s) that are not images by their suffix, e.g. %s",
                        d / "images",
                        len(files) - len(images),
                        next(f.name for f in files if f not in images),
                    )
                if not images:
                    logger.warning("%s: no images; scene %s skipped", d / "images", d.name)
                rows += [{"dataset": d.name, "scene": d.name, "image_name": f.name} for f in images]
            if not rows:
                raise FileNotFoundError(f"{data_dir / 'train'}: no <dataset>/images folders with images found")
            table = pd.DataFrame(rows)
        table["image_dir"] = table["dataset"].map(lambda d: str(data_dir / "train" / d / "images"))
        table["image_path"] = [f"train/{d}/images/{n}" for d, n in zip(table["dataset"], table["image_name"])]
    repeated = table.duplicated(["dataset", "scene", "image_name"])
    if repeated.any():
        first = table[repeated].iloc[0]
        logger.warning(
            "%s: %d repeated image row(s) ignored, e.g. %s/%s",
            data_dir,
            int(repeated.sum()),
            first["scene"],
            first["image_name"],
        )
        table = table[~repeated]
    if scenes:
        unknown = sorted(set(scenes) - set(table["scene"]))
        if unknown:
            raise ValueError(f"scene(s) {unknown} not in {data_dir} ({split}); known: {sorted(set(table['scene']))}")
        table = table[table["scene"].isin(scenes)]
    categories = load_categories(data_dir / split / "categories.csv")
    out = []
    for (dataset, scene), group in table.groupby(["dataset", "scene"], sort=False):
        dirs = group["image_dir"].unique()
        if len(dirs) != 1:
            raise ValueError(f"scene {dataset}/{scene} spans several image folders: {list(dirs)}")
        out.append(
            Scene(
                dataset=dataset,
                scene=scene,
                image_dir=Path(dirs[0]),
                image_names=tuple(group["image_name"]),
                image_paths=tuple(group["image_path"]),
                categories=tuple(categories.get(scene, ())),
            )
        )
    return out


def load_categories(path: Path | None) -> dict[str, list[str]]:
    """scene -> list of categories from `categories.csv` (';'-separated); {} when absent."""
    if path is None or not Path(path).is_file():
        return {}
    df = read_table(path, ["scene", "categories"])
    return {s: [c for c in cats.split(";") if c] for s, cats in zip(df["scene"], df["categories"])}
