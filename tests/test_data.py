"""Scene records from IMC folders: train labels, folder listing, test split from sample_submission."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from PIL import Image

from imc_lib.formats import data


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_train_scenes_from_labels(imc_data_dir):
    scenes = {s.scene: s for s in data.load_scenes(imc_data_dir, "train")}
    assert sorted(scenes) == ["entry", "fountain", "herzjesu-p8", "temple"]
    fountain = scenes["fountain"]
    assert len(fountain.image_names) == 11 and fountain.image_names[0] == "0000.jpg"
    assert fountain.image_paths[0] == "train/fountain/images/0000.jpg"
    assert all((fountain.image_dir / n).is_file() for n in fountain.image_names)
    only = data.load_scenes(imc_data_dir, "train", ["temple"])
    assert [s.scene for s in only] == ["temple"] and len(only[0].image_names) == 16


def test_train_scenes_without_labels_list_the_folders(tmp_path):
    _touch_images(tmp_path / "train/b/images", ["2.png", "1.jpg", "notes.txt"])
    _touch_images(tmp_path / "train/a/images", ["x.JPG"])
    scenes = data.load_scenes(tmp_path, "train")
    assert [(s.scene, s.image_names) for s in scenes] == [("a", ("x.JPG",)), ("b", ("1.jpg", "2.png"))]


def test_test_split_reads_sample_submission(tmp_path):
    _touch_images(tmp_path / "test/church/images", ["00046.png", "00090.png"])
    pd.DataFrame(
        {
            "image_path": ["test/church/images/00046.png", "test/church/images/00090.png"],
            "dataset": ["church", "church"],
            "scene": ["church", "church"],
            "rotation_matrix": ["1;0;0;0;1;0;0;0;1"] * 2,
            "translation_vector": ["0;0;0"] * 2,
        }
    ).to_csv(tmp_path / "sample_submission.csv", index=False)
    (scene,) = data.load_scenes(tmp_path, "test")
    assert scene.dataset == "church" and scene.image_dir == tmp_path / "test/church/images"
    assert scene.image_names == ("00046.png", "00090.png")
    assert scene.image_paths == ("test/church/images/00046.png", "test/church/images/00090.png")


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample_submission.csv"):
        data.load_scenes(tmp_path, "test")
    (tmp_path / "sample_submission.csv").write_text("image_path,scene\nx,y\n")
    with pytest.raises(ValueError, match=r"sample_submission.csv: missing column\(s\) \['dataset'\]"):
        data.load_scenes(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        data.load_scenes(tmp_path, "val")


def test_unknown_scene_is_an_error(imc_data_dir):
    with pytest.raises(ValueError, match="nowhere"):
        data.load_scenes(imc_data_dir, "train", ["nowhere"])


def test_repeated_rows_and_empty_folders_are_reported(tmp_path, caplog):
    _touch_images(tmp_path / "test/church/images", ["1.png"])
    pd.DataFrame(
        {
            "image_path": ["test/church/images/1.png"] * 2,
            "dataset": ["church"] * 2,
            "scene": ["church"] * 2,
        }
    ).to_csv(tmp_path / "sample_submission.csv", index=False)
    (scene,) = data.load_scenes(tmp_path, "test")
    assert scene.image_names == ("1.png",)
    assert "1 repeated image row(s) ignored, e.g. church/1.png" in caplog.text
    _touch_images(tmp_path / "train/full/images", ["a.jpg", "readme.md"])
    (tmp_path / "train/empty/images").mkdir(parents=True)
    assert [s.scene for s in data.load_scenes(tmp_path, "train")] == ["full"]
    assert "empty/images: no images; scene empty skipped" in caplog.text
    assert "ignoring 1 file(s) that are not images by their suffix, e.g. readme.md" in caplog.text


# IMC 2025: flat dataset folders of several scenes + outliers, read as one mixed Scene per dataset.


def test_2025_train_is_one_mixed_scene_per_dataset(imc25_dir):
    assert data.layout(imc25_dir, "train") == "2025"
    scenes = {s.key: s for s in data.load_scenes(imc25_dir, "train")}
    assert sorted(scenes) == ["small", "tabletop"]
    small = scenes["small"]
    assert small.mixed and small.dataset == small.scene == "small" and small.image_ids == ()
    assert small.image_dir == imc25_dir / "train" / "small"
    assert len(small.image_names) == 11 + 8 + 16 + 3 and len(scenes["tabletop"].image_names) == 47 + 49 + 50 + 9
    assert all((small.image_dir / n).is_file() for n in small.image_names)
    assert small.image_paths[0] == f"train/small/{small.image_names[0]}"
    labels = pd.read_csv(imc25_dir / "train_labels.csv")
    assert list(small.image_names) == list(labels[labels["dataset"] == "small"]["image"])  # outliers included
    assert [s.key for s in data.load_scenes(imc25_dir, "train", ["tabletop"])] == ["tabletop"]
    with pytest.raises(ValueError, match=r"\['temple'\] not in .*known: \['small', 'tabletop'\]"):
        data.load_scenes(imc25_dir, "train", ["temple"])


def test_2025_test_split_carries_image_ids(imc25_dir):
    assert data.layout(imc25_dir, "test") == "2025"
    (scene,) = data.load_scenes(imc25_dir, "test")
    sample = pd.read_csv(imc25_dir / "sample_submission.csv")
    assert scene.mixed and scene.key == "small" and scene.image_dir == imc25_dir / "test" / "small"
    assert scene.image_names == tuple(sample["image"]) and scene.image_ids == tuple(sample["image_id"])
    assert all((scene.image_dir / n).is_file() for n in scene.image_names)


def test_2025_train_without_labels_lists_the_flat_folders(tmp_path, caplog):
    _touch_images(tmp_path / "train/trip", ["b.JPG", "a.png", "notes.txt"])
    _touch_images(tmp_path / "train/empty", [])
    assert data.layout(tmp_path) == "2025"
    (scene,) = data.load_scenes(tmp_path, "train")
    assert (scene.key, scene.mixed, scene.image_names) == ("trip", True, ("a.png", "b.JPG"))
    assert "ignoring 1 file(s) that are not images by their suffix, e.g. notes.txt" in caplog.text
    assert "empty: no images; dataset empty skipped" in caplog.text


def test_2024_folders_are_read_as_before(imc_data_dir):
    assert data.layout(imc_data_dir, "train") == "2024"
    assert not any(s.mixed or s.image_ids for s in data.load_scenes(imc_data_dir, "train"))


def test_neither_layout_names_what_was_looked_for(tmp_path):
    _touch_images(tmp_path / "train/x", ["readme.md"])
    with pytest.raises(FileNotFoundError, match=r"neither IMC layout: looked for train_labels.csv \(IMC 2025\), "):
        data.load_scenes(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="train/<dataset>/images/.*a plain folder of photos must hold none"):
        data.layout(tmp_path)
    (tmp_path / "sample_submission.csv").write_text("id,dataset,scene\n1,a,b\n")
    with pytest.raises(ValueError, match=r"sample_submission.csv: not an IMC table: no column image_path or "):
        data.load_scenes(tmp_path, "test")
    (tmp_path / "sample_submission.csv").write_text("dataset,scene,image\na,b,c.png\n")
    with pytest.raises(ValueError, match=r"sample_submission.csv: missing column\(s\) \['image_id'\]"):
        data.load_scenes(tmp_path, "test")


def test_both_labels_tables_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train_labels.csv").write_text("dataset,scene,image\n")
    (tmp_path / "train/train_labels.csv").write_text("dataset,scene,image_name\n")
    with pytest.raises(
        ValueError, match="both .*train_labels.csv \\(IMC 2025\\) and .*train_labels.csv \\(IMC 2024\\)"
    ):
        data.layout(tmp_path)


def test_a_plain_folder_is_one_mixed_photo_set_named_by_paths_at_any_depth(tmp_path, caplog):
    photo = tmp_path / "src.png"
    Image.new("RGB", (8, 6)).save(photo)
    root = tmp_path / "trip"
    for name in ["b.png", "day1/a.png", "day1/late/c.PNG", ".hidden/x.png"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / name)
    (root / "notes.txt").write_text("not a photo")
    (root / "day1/broken.jpg").write_bytes(b"not a jpeg")
    assert data.layout(root) == "folder"
    (scene,) = data.load_scenes(root)
    assert (scene.key, scene.mixed, scene.image_dir) == ("trip", True, root)
    # the unreadable photo stays (it gets a row, as an outlier); hidden folders and other files do not
    assert scene.image_names == ("b.png", "day1/a.png", "day1/broken.jpg", "day1/late/c.PNG")
    assert scene.image_paths == scene.image_names
    assert "1 of 4 photos cannot be read, e.g. day1/broken.jpg" in caplog.text


def test_a_folder_without_a_readable_photo_stops_naming_it(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: no readable photo at any depth \(1 file"):
        data.load_scenes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such folder"):
        data.layout(tmp_path / "nowhere")
