"""Plots shared by notebooks and the app: keypoints, matches, pair matrices, 3D reconstructions.

Kept apart from the stages (as LightGlue's viz2d.py): every function takes arrays or a
pycolmap.Reconstruction and returns a figure; nothing here loads a model or reads a stage file.
Matplotlib figures are built on `matplotlib.figure.Figure`, not pyplot, so they need no GUI backend
and hold no global state (safe in Streamlit's threads); interactive ones are plotly. The 3D view
of a reconstruction is `figure3d` (plotly alone, so the report can draw it without matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

GAP = 10  # pixels between the two images of a match plot


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a grey, RGB or RGBA image, uint8 or float in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image


def _points(array, name: str) -> np.ndarray:
    points = np.asarray(array, dtype=float).reshape(-1, 2) if np.size(array) else np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of x, y pixel coordinates, got shape {np.shape(array)}")
    return points


def _figure(ax: Axes | None, width: int, height: int, inches: float = 8.0) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(inches, max(inches * height / max(width, 1), 1.0)), layout="constrained")
    return fig, fig.add_subplot()


def show_keypoints(
    image: np.ndarray,
    keypoints: np.ndarray,
    ax: Axes | None = None,
    color="lime",
    size: float = 4.0,
    title: str | None = None,
) -> Figure:
    """The image with its keypoints (x, y pixel coordinates) as dots; draws on `ax` when given."""
    image = _as_rgb(image)
    kpts = _points(keypoints, "keypoints")
    fig, ax = _figure(ax, image.shape[1], image.shape[0])
    ax.imshow(image)
    ax.scatter(kpts[:, 0], kpts[:, 1], s=size, c=color, linewidths=0)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title if title is not None else f"{len(kpts)} keypoints")
    return fig


def show_matches(
    image0: np.ndarray,
    image1: np.ndarray,
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    matches: np.ndarray,
    scores: np.ndarray | None = None,
    ax: Axes | None = None,
    cmap: str = "viridis",
    title: str | None = None,
) -> Figure:
    """The two images side by side, one line per match (coloured by score when given).

    `matches` (M, 2) indexes `kpts0` and `kpts1`; with M == 0 the title says "no matches".
    The lines form one LineCollection, so thousands of matches draw quickly.
    """
    image0, image1 = _as_rgb(image0), _as_rgb(image1)
    kpts0, kpts1 = _points(kpts0, "kpts0"), _points(kpts1, "kpts1")
    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2) if np.size(matches) else np.zeros((0, 2), np.int64)
    if len(matches) and (matches.min() < 0 or matches[:, 0].max() >= len(kpts0) or matches[:, 1].max() >= len(kpts1)):
        raise ValueError(f"match indices out of range for {len(kpts0)} and {len(kpts1)} keypoints")
    (h0, w0), (h1, w1) = image0.shape[:2], image1.shape[:2]
    canvas = np.full((max(h0, h1), w0 + GAP + w1, 3), 255, np.uint8)
    canvas[:h0, :w0], canvas[:h1, w0 + GAP :] = image0, image1
    fig, ax = _figure(ax, canvas.shape[1], canvas.shape[0], inches=12.0)
    ax.imshow(canvas)
    p0, p1 = kpts0[matches[:, 0]], kpts1[matches[:, 1]] + [w0 + GAP, 0]
    if scores is not None:
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if len(scores) != len(matches):
            raise ValueError(f"{len(scores)} scores for {len(matches)} matches")
        colors = matplotlib.colormaps[cmap](Normalize(0, 1)(scores))
    else:
        colors = "lime"
    ax.add_collection(LineCollection(np.stack([p0, p1], axis=1), colors=colors, linewidths=0.8, alpha=0.8))
    ends = np.concatenate([p0, p1])
    ax.scatter(
        ends[:, 0], ends[:, 1], s=3, c="lime" if scores is None else np.concatenate([colors, colors]), linewidths=0
    )
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title if title is not None else (f"{len(matches)} matches" if len(matches) else "no matches"))
    return fig


def _pair_indices(names: Sequence[str], pairs) -> np.ndarray:
    """(K, 2) indices into `names` of pairs given as names or as indices."""
    pairs = list(pairs or [])
    if not pairs:
        return np.zeros((0, 2), np.int64)
    if all(isinstance(a, str) and isinstance(b, str) for a, b in pairs):
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted({n for p in pairs for n in p if n not in index})
        if unknown:
            raise ValueError(f"pairs name images not in the list: {unknown[:5]}")
        return np.array([(index[a], index[b]) for a, b in pairs], np.int64)
    out = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if out.min() < 0 or out.max() >= len(names):
        raise ValueError(f"pair indices out of range for {len(names)} images")
    return out


def _matrix_layout(fig: go.Figure, title: str | None, n: int) -> go.Figure:
    side = min(900, 220 + 28 * n)
    fig.update_layout(title=title, width=side + 120, height=side, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    fig.update_xaxes(type="category", side="top", tickangle=-45)
    fig.update_yaxes(type="category", autorange="reversed", scaleanchor="x")
    return fig


def distance_heatmap(distances, names: Sequence[str], pairs=None, title: str | None = None) -> go.Figure:
    """Heatmap of an (N, N) global-descriptor distance matrix, kept pairs marked with circles.

    `pairs`: (name0, name1) or (i, j) pairs, marked in both triangles. With `distances` None this is
    `pairs_matrix` (no descriptors, e.g. exhaustive pairs).
    """
    names = [str(n) for n in names]
    if distances is None:
        return pairs_matrix(names, pairs, title=title)
    z = np.array(distances, dtype=float)
    if z.ndim != 2 or z.shape != (len(names), len(names)):
        raise ValueError(f"distances must be ({len(names)}, {len(names)}) for {len(names)} names, got {z.shape}")
    np.fill_diagonal(z, np.nan)  # an image is never paired with itself
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Viridis",
            colorbar=dict(title="distance"),
            name="distance",
            hovertemplate="%{y} – %{x}<br>distance %{z:.3f}<extra></extra>",
        )
    )
    idx = _pair_indices(names, pairs)
    if len(idx):
        both = np.concatenate([idx, idx[:, ::-1]])
        fig.add_trace(
            go.Scatter(
                x=[names[j] for j in both[:, 1]],
                y=[names[i] for i in both[:, 0]],
                mode="markers",
                marker=dict(symbol="circle-open", size=10, color="white", line=dict(width=2)),
                name=f"kept pairs ({len(idx)})",
                hoverinfo="skip",
            )
        )
        fig.update_layout(legend=dict(orientation="h", y=-0.02, yanchor="top"))
    return _matrix_layout(fig, title, len(names))


def pairs_matrix(
    names: Sequence[str], pairs, values=None, title: str | None = None, value_name: str = "matches"
) -> go.Figure:
    """Which pairs are kept, as a symmetric N x N matrix; with `values` (one per pair, e.g. match
    counts) the kept cells are coloured by value instead."""
    names = [str(n) for n in names]
    idx = _pair_indices(names, pairs)
    n = len(names)
    if values is None:
        z = np.zeros((n, n))
        z[idx[:, 0], idx[:, 1]] = z[idx[:, 1], idx[:, 0]] = 1.0
        np.fill_diagonal(z, np.nan)
        trace = go.Heatmap(
            z=z,
            x=names,
            y=names,
            zmin=0,
            zmax=1,
            showscale=False,
            name="pairs",
            colorscale=[[0, "#eeeeee"], [1, "#2c7fb8"]],
            hovertemplate="%{y} – %{x}<br>kept %{z}<extra></extra>",
        )
        title = title if title is not None else f"{len(idx)} of {n * (n - 1) // 2} pairs kept"
    else:
        values = np.asarray(values, dtype=float).reshape(-1)
        if len(values) != len(idx):
            raise ValueError(f"{len(values)} values for {len(idx)} pairs")
        z = np.full((n, n), np.nan)
        z[idx[:, 0], idx[:, 1]] = z[idx[:, 1], idx[:, 0]] = values
        trace = go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Viridis",
            colorbar=dict(title=value_name),
            name=value_name,
            hovertemplate=f"%{{y}} – %{{x}}<br>{value_name} %{{z}}<extra></extra>",
        )
    return _matrix_layout(go.Figure(trace), title, n)


def threshold_curve(
    thresholds, counts, current: float | None = None, total: int | None = None, title: str | None = None
) -> go.Figure:
    """How many pairs a selection keeps as the distance threshold varies (current one marked)."""
    fig = go.Figure(
        go.Scatter(
            x=list(map(float, thresholds)),
            y=list(map(int, counts)),
            mode="lines",
            name="pairs kept",
            hovertemplate="threshold %{x:.2f}: %{y} pairs<extra></extra>",
        )
    )
    if current is not None:
        fig.add_vline(x=float(current), line_dash="dash", annotation_text=f"threshold {current:g}")
    if total is not None:
        fig.add_hline(y=total, line_dash="dot", annotation_text=f"all {total} pairs")
    fig.update_layout(
        title=title,
        xaxis_title="distance threshold",
        yaxis_title="pairs kept",
        height=300,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
    )
    return fig
