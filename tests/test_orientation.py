"""Orientation stage: real photos turned by 90/180/270 degrees are turned back, keypoints map back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imc_lib import features, orientation, pairs


def test_rotate_keypoints_back_inverts_rot90():
    image = np.zeros((5, 8))
    points = [(1, 2), (7, 4), (0, 0), (3, 1)]
    for turns in range(4):
        for x, y in points:
            marked = np.zeros_like(image)
            marked[y, x] = 1
            yy, xx = np.argwhere(np.rot90(marked, turns))[0]
            back = features.rotate_keypoints_back(np.array([[xx, yy]], np.float32), turns, (8, 5))
            np.testing.assert_array_equal(back[0], [x, y])


def test_solve_chains_turns_and_keeps_the_majority_as_stored():
    # b is a turned by 1, c is b turned by 2 (a turned by 3); d unconnected; e upright like a.
    edges = {("a", "b"): (3, 200), ("b", "c"): (2, 150), ("a", "c"): (1, 40), ("a", "e"): (0, 300),
             ("c", "d"): (1, 5)}
    result = orientation.solve(["a", "b", "c", "d", "e"], edges, min_matches=25)
    assert {n: t for n, (t, _) in result.items()} == {"a": 0, "b": 3, "c": 1, "d": 0, "e": 0}
    assert result["b"][1] == 200 and result["d"][1] == 0


@pytest.mark.parametrize("turned", [{"0001.jpg": 1, "0002.jpg": 2, "0003.jpg": 3}])
def test_turned_photos_are_turned_back(tmp_path, imc_data_dir, weights_dir, turned):
    names = ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"]
    src = imc_data_dir / "train/herzjesu-p8/images"
    for name in names:
        with Image.open(src / name) as im:
            im = im.resize((768, 512))
            array = np.rot90(np.asarray(im), turned.get(name, 0))
            Image.fromarray(np.ascontiguousarray(array)).save(tmp_path / name)
    pairs_path = tmp_path / "pairs.txt"
    pairs.write_pairs(pairs.exhaustive_pairs(names), pairs_path)
    out = orientation.main(orientation.confs["upright"], tmp_path, names, pairs_path, tmp_path / "orient.csv",
                           "cpu", weights=weights_dir)
    got = orientation.read_orientations(out)
    # Turning a photo stored at k quarter turns by -k makes it upright again.
    assert got == {n: (-turned.get(n, 0)) % 4 for n in names}
    # Once turned, every pair of these overlapping views matches well at low resolution: the
    # prefilter keeps them all at a modest threshold and none at an absurd one.
    assert sorted(orientation.overlapping_pairs(out, 40)) == sorted(pairs.read_pairs(pairs_path))
    assert orientation.overlapping_pairs(out, 10**6) == []
