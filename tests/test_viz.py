"""Plots: what each figure draws, checked on its artists and traces, not on pixels."""

from __future__ import annotations

import math

import numpy as np
import pycolmap
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from imc_lib import figure3d, viz

RNG = np.random.default_rng(0)


def _image(h=60, w=80):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _lines(fig: Figure) -> np.ndarray:
    (ax,) = fig.axes
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    return np.array(lines.get_segments()).reshape(-1, 2, 2)


# --- matplotlib ---------------------------------------------------------------------------------------


def test_show_keypoints_draws_every_keypoint_on_the_image():
    kpts = np.array([[1.0, 2.0], [10.5, 20.0], [79.0, 59.0]])
    fig = viz.show_keypoints(_image(), kpts)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (60, 80, 3)
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(dots.get_offsets(), kpts)
    assert ax.get_title() == "3 keypoints"


def test_show_keypoints_on_given_axes_and_grey_float_image():
    fig = Figure()
    ax = fig.add_subplot()
    out = viz.show_keypoints(np.linspace(0, 1, 12).reshape(3, 4), np.zeros((0, 2)), ax=ax, title="none")
    assert out is fig
    assert ax.images[0].get_array().dtype == np.uint8 and ax.get_title() == "none"


def test_show_matches_draws_one_line_per_match_between_the_right_points():
    kpts0 = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 20.0]])
    kpts1 = np.array([[1.0, 1.0], [2.0, 3.0]])
    matches = np.array([[0, 1], [2, 0]])
    fig = viz.show_matches(_image(60, 80), _image(40, 30), kpts0, kpts1, matches, scores=np.array([0.2, 0.9]))
    segments = _lines(fig)
    assert len(segments) == 2
    offset = 80 + viz.GAP
    np.testing.assert_array_equal(segments[0], [[0, 0], [2 + offset, 3]])
    np.testing.assert_array_equal(segments[1], [[10, 20], [1 + offset, 1]])
    (ax,) = fig.axes
    assert ax.images[0].get_array().shape == (60, 80 + viz.GAP + 30, 3)  # padded to the taller image
    assert ax.get_title() == "2 matches"
    colours = fig.axes[0].collections[0].get_colors()
    assert not np.allclose(colours[0], colours[1])  # coloured by score


def test_show_matches_many():
    kpts = RNG.uniform(0, 50, (500, 2))
    matches = np.stack([np.arange(500), RNG.permutation(500)], axis=1)
    assert len(_lines(viz.show_matches(_image(), _image(), kpts, kpts, matches))) == 500


def test_show_matches_without_matches_says_so():
    fig = viz.show_matches(_image(), _image(), np.zeros((5, 2)), np.zeros((4, 2)), np.zeros((0, 2), np.int32))
    assert fig.axes[0].get_title() == "no matches"
    assert len(_lines(fig)) == 0


def test_show_matches_rejects_bad_indices():
    with pytest.raises(ValueError, match="out of range"):
        viz.show_matches(_image(), _image(), np.zeros((2, 2)), np.zeros((2, 2)), np.array([[0, 2]]))
    with pytest.raises(ValueError, match="scores"):
        viz.show_matches(_image(), _image(), np.zeros((2, 2)), np.zeros((2, 2)), np.array([[0, 1]]), scores=[1, 2])


# --- pair matrices --------------------------------------------------------------------------------

NAMES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_distance_heatmap_shows_distances_and_marks_kept_pairs_both_ways():
    d = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [2, 4, 0, 6], [3, 5, 6, 0]], dtype=float)
    fig = viz.distance_heatmap(d, NAMES, pairs=[("a.jpg", "b.jpg"), ("c.jpg", "d.jpg")])
    heat, kept = fig.data
    z = np.array(heat.z, dtype=float)
    assert np.isnan(np.diag(z)).all()
    assert z[1, 2] == 4 and list(heat.x) == NAMES
    assert len(kept.x) == 4  # each pair in both triangles
    assert set(zip(kept.y, kept.x)) == {("a.jpg", "b.jpg"), ("b.jpg", "a.jpg"), ("c.jpg", "d.jpg"), ("d.jpg", "c.jpg")}
    assert "2" in kept.name
    # index pairs work the same
    assert set(zip(viz.distance_heatmap(d, NAMES, pairs=[(0, 1)]).data[1].y, "ab")) == {("a.jpg", "a"), ("b.jpg", "b")}


def test_distance_heatmap_checks_shapes_and_falls_back_to_pairs_matrix():
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        viz.distance_heatmap(np.zeros((3, 3)), NAMES)
    with pytest.raises(ValueError, match="not in the list"):
        viz.distance_heatmap(np.zeros((4, 4)), NAMES, pairs=[("a.jpg", "zzz")])
    fig = viz.distance_heatmap(None, NAMES, pairs=[(0, 1)])
    assert len(fig.data) == 1 and "1 of 6 pairs" in fig.layout.title.text


def test_pairs_matrix_marks_kept_cells_or_colours_by_value():
    pairs = [("a.jpg", "b.jpg"), ("a.jpg", "c.jpg"), ("b.jpg", "d.jpg")]
    z = np.array(viz.pairs_matrix(NAMES, pairs).data[0].z, dtype=float)
    assert np.nansum(z) == 6 and np.isnan(np.diag(z)).all()
    assert z[0, 2] == z[2, 0] == 1 and z[2, 3] == 0
    z = np.array(viz.pairs_matrix(NAMES, pairs, values=[10, 0, 7]).data[0].z, dtype=float)
    assert z[0, 1] == z[1, 0] == 10 and z[1, 3] == 7 and z[0, 2] == 0 and np.isnan(z[2, 3])
    with pytest.raises(ValueError, match="values"):
        viz.pairs_matrix(NAMES, pairs, values=[1])


def test_threshold_curve():
    fig = viz.threshold_curve([0.1, 0.5, 0.9], [1, 3, 6], current=0.5, total=6)
    assert list(fig.data[0].y) == [1, 3, 6]
    assert len(fig.layout.shapes) == 2


# --- 3D reconstruction ----------------------------------------------------------------------------


def _reconstruction():
    """Three registered cameras looking down +z at x = 0, 1, 2; one unregistered image; 5 points."""
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "SIMPLE_PINHOLE", 100.0, 80, 60))
    for i in range(3):
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.eye(3)), np.array([-float(i), 0, 0]))
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{i}.jpg", camera_id=1, image_id=i + 1), pose)
    rec.add_image_with_trivial_frame(pycolmap.Image(name="lost.jpg", camera_id=1, image_id=9))
    for k in range(5):
        rec.add_point3D(np.array([k, 0.0, 5.0]), pycolmap.Track(), np.array([255, 0, k], np.uint8))
    return rec


def _vertices(trace) -> np.ndarray:
    return np.array([[x, y, z] for x, y, z in zip(trace.x, trace.y, trace.z) if x is not None], dtype=float)


def test_reconstruction_figure_points_and_frustums():
    fig = figure3d.reconstruction_figure(_reconstruction(), frustum_scale=2.0)
    points, frustums, centres = fig.data
    assert len(points.x) == 5
    assert dict(zip(points.x, points.marker.color)) == {k: f"rgb(255,0,{k})" for k in range(5)}
    np.testing.assert_allclose(_vertices(centres), [[0, 0, 0], [1, 0, 0], [2, 0, 0]])
    assert list(centres.text) == ["0.jpg", "1.jpg", "2.jpg"]
    corners = _vertices(frustums)
    assert len(corners) == 3 * 11
    # Camera 1 (centre x=1): image corners back-projected to depth 2 (f=100, 80x60, principal point centred).
    first = corners[11:15]
    np.testing.assert_allclose(first, [[1 - 0.8, -0.6, 2], [1 + 0.8, -0.6, 2], [1 + 0.8, 0.6, 2], [1 - 0.8, 0.6, 2]])
    assert "3 of 4 images registered" in fig.layout.title.text


def test_reconstruction_figure_colours_cameras_by_error():
    errors = {"0.jpg": 0.0, "1.jpg": 0.5, "2.jpg": math.inf}
    fig = figure3d.reconstruction_figure(_reconstruction(), camera_errors=errors, max_error=1.0)
    _, lines, centres, grey_lines, grey = fig.data
    assert list(centres.marker.color) == [0.0, 0.5] and centres.marker.cmax == 1.0
    assert centres.marker.colorbar.title.text == "camera error"
    assert set(lines.line.color) == {0.0, 0.5}
    assert list(grey.text) == ["2.jpg"] and grey.marker.color == "#999999"
    assert len(_vertices(grey_lines)) == 11


def test_reconstruction_figure_empty_and_subsampled():
    empty = figure3d.reconstruction_figure(pycolmap.Reconstruction())
    assert len(empty.data) == 1 and len(empty.data[0].x) == 0
    assert len(figure3d.reconstruction_figure(_reconstruction(), max_points=2).data[0].x) == 2
