"""Interactive 3D view of a pycolmap.Reconstruction (plotly alone): the app's and the report's.

Kept apart from `viz` (matplotlib) so that the run's report, written at the end of every run, needs
no more than plotly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

ERROR_COLORSCALE = "RdYlGn_r"  # camera error: green (small) to red (large)


def _frustum(image, scale: float) -> np.ndarray:
    """(14, 3) polyline of an image's camera frustum in world coordinates, NaN rows breaking it.

    Corners are the image corners back-projected (through the camera model, so distortion is
    honoured) to depth `scale` in front of the camera.
    """
    camera = image.camera
    w, h = camera.width, camera.height
    rays = np.asarray(camera.cam_from_img(np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=float)))
    corners = np.concatenate([rays, np.ones((4, 1))], axis=1) * scale
    pose = image.cam_from_world()
    R, t = pose.rotation.matrix(), np.asarray(pose.translation)
    world = (corners - t) @ R  # R^T (x - t), row-wise
    c0, c1, c2, c3 = world
    centre = np.asarray(image.projection_center())
    gap = np.full(3, np.nan)
    return np.stack([c0, c1, c2, c3, c0, centre, c1, gap, centre, c2, gap, centre, c3, gap])


def _xyz(points: np.ndarray) -> dict:
    """x, y, z lists for plotly with NaN turned into None (plotly breaks lines at None)."""
    return {axis: [None if math.isnan(v) else float(v) for v in points[:, k]] for k, axis in enumerate("xyz")}


def reconstruction_figure(
    reconstruction,
    camera_errors: Mapping[str, float] | None = None,
    max_error: float | None = None,
    max_points: int = 100_000,
    frustum_scale: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Interactive 3D view of a pycolmap.Reconstruction: its points (in their colours) and one
    frustum per registered image, built from the image's cam_from_world and its camera.

    `camera_errors` (image name -> error, e.g. metric.camera_errors in scene units) colours the
    cameras from green to red, saturating at `max_error` (default: the largest finite error);
    cameras without a finite error are grey. Points beyond `max_points` are subsampled (fixed seed).
    Traces: points, then frustums (+ centres) with errors, then those without.
    """
    xyz, rgb = _points(reconstruction, max_points)
    images = sorted((im for im in reconstruction.images.values() if im.has_pose), key=lambda im: im.name)
    centres = np.array([im.projection_center() for im in images], dtype=float).reshape(-1, 3)
    if frustum_scale is None:
        spread = centres if len(centres) > 1 else xyz
        extent = float(np.median(np.linalg.norm(spread - spread.mean(axis=0), axis=1))) if len(spread) > 1 else 0.0
        frustum_scale = 0.15 * extent if extent > 0 else 1.0

    fig = go.Figure()
    fig.add_trace(
        go.Scatter3d(
            **_xyz(xyz),
            mode="markers",
            name=f"{len(xyz)} points",
            marker=dict(size=1.5, color=[f"rgb({r},{g},{b})" for r, g, b in rgb]),
            hoverinfo="skip",
        )
    )
    errors = {} if camera_errors is None else {k: float(v) for k, v in camera_errors.items()}
    with_error = [im for im in images if math.isfinite(errors.get(im.name, math.inf))]
    without = [im for im in images if not math.isfinite(errors.get(im.name, math.inf))]
    if with_error:
        _cameras_with_error(fig, with_error, [errors[im.name] for im in with_error], max_error, frustum_scale)
    if without:
        _cameras(fig, without, frustum_scale, graded=camera_errors is not None)
    if title is None:
        title = (
            f"{len(images)} of {reconstruction.num_images()} images registered, {reconstruction.num_points3D()} points"
        )
    fig.update_layout(
        title=title,
        height=650,
        margin=dict(l=0, r=0, t=40, b=0),
        scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"),
        legend=dict(yanchor="top", y=0.98, xanchor="left", x=0.01),
    )
    return fig


def _points(reconstruction, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) positions and (N, 3) uint8 colours of the model's points, at most `max_points` (fixed seed)."""
    points = [(p.xyz, p.color) for p in reconstruction.points3D.values()]
    xyz = np.array([p for p, _ in points], dtype=float).reshape(-1, 3)
    rgb = np.array([c for _, c in points], dtype=np.uint8).reshape(-1, 3)
    if len(xyz) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(xyz), max_points, replace=False))
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, rgb


def _cameras_with_error(fig: go.Figure, images: list, finite: list[float], max_error, scale: float) -> None:
    """Frustums and centres of `images`, coloured by their error (`finite`, saturating at `max_error`)."""
    cmax = max_error if max_error is not None else (max(finite) if finite else 1.0)
    cmax = cmax if cmax > 0 else 1.0
    lines = np.concatenate([_frustum(im, scale) for im in images])
    line_values = np.repeat(finite, len(lines) // len(images))
    fig.add_trace(
        go.Scatter3d(
            **_xyz(lines),
            mode="lines",
            name="cameras",
            showlegend=False,
            hoverinfo="skip",
            line=dict(width=3, color=line_values, colorscale=ERROR_COLORSCALE, cmin=0, cmax=cmax),
        )
    )
    fig.add_trace(
        go.Scatter3d(
            **_xyz(np.array([im.projection_center() for im in images])),
            mode="markers",
            name=f"cameras ({len(images)})",
            text=[im.name for im in images],
            customdata=finite,
            hovertemplate="%{text}<br>error %{customdata:.3f}<extra></extra>",
            marker=dict(
                size=4,
                color=finite,
                colorscale=ERROR_COLORSCALE,
                cmin=0,
                cmax=cmax,
                colorbar=dict(title="camera error"),
            ),
        )
    )


def _cameras(fig: go.Figure, images: list, scale: float, graded: bool) -> None:
    """Frustums and centres of `images` in one colour: blue, or grey beside cameras `graded` by error."""
    color = "#999999" if graded else "#1f77b4"
    label = "cameras without error" if graded else "cameras"
    lines = np.concatenate([_frustum(im, scale) for im in images])
    fig.add_trace(
        go.Scatter3d(
            **_xyz(lines), mode="lines", name=label, showlegend=False, hoverinfo="skip", line=dict(width=3, color=color)
        )
    )
    fig.add_trace(
        go.Scatter3d(
            **_xyz(np.array([im.projection_center() for im in images])),
            mode="markers",
            name=f"{label} ({len(images)})",
            text=[im.name for im in images],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(size=4, color=color),
        )
    )
