"""IMC folders and tables -> scene records, for both competition layouts.

IMC 2024 (`/kaggle/input/image-matching-challenge-2024`): one folder per scene.
    DATA_DIR/train/<dataset>/images/*.jpg|png
    DATA_DIR/train/train_labels.csv     dataset,scene,image_name,rotation_matrix,translation_vector
    DATA_DIR/train/categories.csv       scene,categories
    DATA_DIR/test/<dataset>/images/*
    DATA_DIR/sample_submission.csv      image_path,dataset,scene,rotation_matrix,translation_vector

IMC 2025 (`/kaggle/input/image-matching-challenge-2025`): one flat folder per dataset, holding
photos of several scenes and outliers; each dataset becomes one `Scene` with `mixed=True`.
    DATA_DIR/train/<dataset>/*.jpg|png
    DATA_DIR/train_labels.csv           dataset,scene,image,rotation_matrix,translation_vector
    DATA_DIR/train_thresholds.csv       dataset,scene,thresholds (for the metric)
    DATA_DIR/test/<dataset>/*
    DATA_DIR/sample_submission.csv      image_id,dataset,scene,image,rotation_matrix,translation_vector

A plain folder (`layout` "folder"): none of those files or folders, photos at any depth. It is one
photo set, as an IMC 2025 dataset is (several scenes and junk): one mixed `Scene` named after the folder,
its photos named by their paths under it.

`layout` tells the three apart by these files alone (no flag).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..utils import readable_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# The column that names a photo in each year's tables (labels, sample_submission, submission).
KEY_COLUMNS = {"2024": ("image_path", "image_name"), "2025": ("image",)}
# What makes a folder a competition layout; a folder with none of them is a plain folder of photos.
COMPETITION_MARKERS = ("sample_submission.csv", "train_labels.csv", "train", "test")


@dataclass(frozen=True)
class Scene:
    """One photo set to reconstruct: its images and the `image_path` each gets in the submission.

    An IMC 2025 dataset is one Scene (`mixed`: its photos show several scenes and outliers), whose
    `image_ids` carry sample_submission's `image_id` per image (test split; empty for train).
    """

    dataset: str
    scene: str
    image_dir: Path
    image_names: tuple[str, ...]  # file names relative to image_dir
    image_paths: tuple[str, ...]  # submission `image_path` values (2025: path under DATA_DIR), same order
    categories: tuple[str, ...] = ()  # from <split>/categories.csv when present (e.g. transparent)
    mixed: bool = False
    image_ids: tuple[str, ...] = ()

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


def table_format(path: Path) -> str:
    """'2024' or '2025': the year of an IMC table (labels, sample_submission, submission) by the
    column that names its photos; ValueError naming the file when it has neither."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    columns = set(pd.read_csv(path, dtype=str, nrows=0).columns)
    for year, keys in KEY_COLUMNS.items():
        if columns & set(keys):
            return year
    raise ValueError(
        f"{path}: not an IMC table: no column {' or '.join(k for keys in KEY_COLUMNS.values() for k in keys)} "
        f"(IMC 2024 names photos by image_path/image_name, IMC 2025 by image); columns are {sorted(columns)}"
    )


def layout(data_dir: Path, split: str = "train") -> str:
    """'2024', '2025' or 'folder': which competition's layout `data_dir` has for `split`, or none
    (train only: a plain folder of photos); module docstring.

    test: by sample_submission.csv's columns; train: `train_labels.csv` at the root (2025) or in
    `train/` (2024), else photos in `train/<dataset>/images/` (2024) or in `train/<dataset>/` (2025).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder")
    if split == "train" and not any((data_dir / marker).exists() for marker in COMPETITION_MARKERS):
        return "folder"  # asked for the test split, a folder is read as Kaggle's: sample_submission.csv
    if split == "test":
        return table_format(data_dir / "sample_submission.csv")
    root, inner = data_dir / "train_labels.csv", data_dir / "train" / "train_labels.csv"
    if root.is_file() and inner.is_file():
        raise ValueError(
            f"{data_dir}: both {root} (IMC 2025) and {inner} (IMC 2024); keep the one of this folder's year"
        )
    if root.is_file() or inner.is_file():
        return "2025" if root.is_file() else "2024"
    folders = sorted(p for p in (data_dir / "train").glob("*/") if p.is_dir())
    if any((d / "images").is_dir() for d in folders):
        return "2024"
    if any(_is_image(f) for d in folders for f in d.iterdir()):
        return "2025"
    raise FileNotFoundError(
        f"{data_dir}: neither IMC layout: looked for train_labels.csv (IMC 2025), train/train_labels.csv "
        "(IMC 2024), photos in train/<dataset>/images/ (IMC 2024) or in train/<dataset>/ (IMC 2025); a plain "
        f"folder of photos must hold none of {', '.join(COMPETITION_MARKERS)}"
    )


def load_scenes(data_dir: Path, split: str = "train", scenes: list[str] | None = None) -> list[Scene]:
    """List the scenes of a split with their images (IMC 2025: one mixed Scene per dataset).

    train: images from the labels table when present, else every image in the dataset folders;
    test: from `sample_submission.csv`, as the Kaggle kernel sees it. `scenes`: only these scenes
    (IMC 2025: datasets). Each scene carries its categories from `<split>/categories.csv` when that
    file exists.
    """
    data_dir = Path(data_dir)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    year = layout(data_dir, split)
    if year == "folder":
        return [folder_scene(data_dir)]
    table = _table_2025(data_dir, split) if year == "2025" else _table_2024(data_dir, split)
    table = _drop_repeated(table, data_dir)
    if scenes:
        unknown = sorted(set(scenes) - set(table["scene"]))
        if unknown:
            raise ValueError(f"scene(s) {unknown} not in {data_dir} ({split}); known: {sorted(set(table['scene']))}")
        table = table[table["scene"].isin(scenes)]
    categories = load_categories(data_dir / split / "categories.csv")
    return [
        _scene(dataset, scene, group, categories.get(scene, ()), year == "2025")
        for (dataset, scene), group in table.groupby(["dataset", "scene"], sort=False)
    ]


def folder_scene(folder: Path) -> Scene:
    """A plain folder as one mixed Scene: every photo at any depth (hidden files and folders left out),
    named by its path under `folder`; FileNotFoundError naming the folder when no photo can be read."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*") if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    names = [p.relative_to(folder).as_posix() for p in files if _is_image(p)]
    readable = [n for n in names if readable_image(folder / n)]
    if not readable:
        raise FileNotFoundError(
            f"{folder}: no readable photo at any depth ({len(names)} file(s) named as images, "
            f"suffixes {', '.join(sorted(IMAGE_SUFFIXES))}); point imc-lib run at a folder of photos"
        )
    if len(readable) < len(names):  # kept: the features stage says why, and they get rows as outliers
        logger.warning("%s: %d of %d photos cannot be read, e.g. %s", folder, len(names) - len(readable), len(names),
                       next(n for n in names if n not in readable))  # fmt: skip
    logger.info("%s: a plain folder of %d photos (%d file(s) that are not photos left out)", folder, len(names),
                sum(p.is_file() for p in files) - len(names))  # fmt: skip
    name = folder.resolve().name or "photos"
    return Scene(dataset=name, scene=name, image_dir=folder, image_names=tuple(names),
                 image_paths=tuple(names), mixed=True)  # fmt: skip


def _scene(dataset: str, scene: str, group: pd.DataFrame, categories, mixed: bool) -> Scene:
    dirs = group["image_dir"].unique()
    if len(dirs) != 1:
        raise ValueError(f"scene {dataset}/{scene} spans several image folders: {list(dirs)}")
    ids = tuple(group["image_id"]) if "image_id" in group else ()
    return Scene(
        dataset=dataset,
        scene=scene,
        image_dir=Path(dirs[0]),
        image_names=tuple(group["image_name"]),
        image_paths=tuple(group["image_path"]),
        categories=tuple(categories),
        mixed=mixed,
        image_ids=ids,
    )


def _table_2024(data_dir: Path, split: str) -> pd.DataFrame:
    """dataset, scene, image_name, image_dir, image_path of a 2024 split."""
    if split == "test":
        table = read_table(data_dir / "sample_submission.csv", ["image_path", "dataset", "scene"])
        table["image_name"] = table["image_path"].map(lambda p: Path(p).name)
        table["image_dir"] = table["image_path"].map(lambda p: str(data_dir / Path(p).parent))
        return table
    labels = data_dir / "train" / "train_labels.csv"
    if labels.is_file():
        table = read_table(labels, ["dataset", "scene", "image_name"])
    else:
        rows = [
            {"dataset": d.name, "scene": d.name, "image_name": name}
            for d in sorted((data_dir / "train").glob("*/"))
            if (d / "images").is_dir()
            for name in list_images(d / "images", f"scene {d.name}")
        ]
        if not rows:
            raise FileNotFoundError(f"{data_dir / 'train'}: no <dataset>/images folders with images found")
        table = pd.DataFrame(rows)
    table["image_dir"] = table["dataset"].map(lambda d: str(data_dir / "train" / d / "images"))
    table["image_path"] = [f"train/{d}/images/{n}" for d, n in zip(table["dataset"], table["image_name"])]
    return table


def _table_2025(data_dir: Path, split: str) -> pd.DataFrame:
    """dataset, scene (= dataset), image_name, image_dir, image_path (+ image_id for test) of a 2025 split."""
    if split == "test":
        columns = ["image_id", "dataset", "image"]
        table = read_table(data_dir / "sample_submission.csv", columns)[columns]
    elif (data_dir / "train_labels.csv").is_file():
        table = read_table(data_dir / "train_labels.csv", ["dataset", "image"])[["dataset", "image"]]
    else:
        rows = [
            {"dataset": d.name, "image": name}
            for d in sorted((data_dir / "train").glob("*/"))
            if d.is_dir()
            for name in list_images(d, f"dataset {d.name}")
        ]
        table = pd.DataFrame(rows, columns=["dataset", "image"])
    table = table.rename(columns={"image": "image_name"})
    table["scene"] = table["dataset"]
    table["image_dir"] = table["dataset"].map(lambda d: str(data_dir / split / d))
    table["image_path"] = [f"{split}/{d}/{n}" for d, n in zip(table["dataset"], table["image_name"])]
    return table


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, what: str) -> list[str]:
    """Names of the image files in `folder` (by suffix), sorted; the others and an empty folder are logged."""
    files = sorted(f for f in folder.iterdir() if not f.is_dir())
    images = [f.name for f in files if _is_image(f)]
    if len(images) < len(files):
        logger.warning(
            "%s: ignoring %d file(s) that are not images by their suffix, e.g. %s",
            folder,
            len(files) - len(images),
            next(f.name for f in files if f.name not in images),
        )
    if not images:
        logger.warning("%s: no images; %s skipped", folder, what)
    return images


def _drop_repeated(table: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """`table` without repeated (dataset, scene, image_name) rows, logged."""
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
    return table[~repeated]


def load_categories(path: Path | None) -> dict[str, list[str]]:
    """scene -> list of categories from `categories.csv` (';'-separated); {} when absent."""
    if path is None or not Path(path).is_file():
        return {}
    df = read_table(path, ["scene", "categories"])
    return {s: [c for c in cats.split(";") if c] for s, cats in zip(df["scene"], df["categories"])}
