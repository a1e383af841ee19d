"""The run's report: one self-contained HTML file that opens offline and inside a notebook's output.

Per scene (an IMC 2025 dataset, a plain folder): its clusters, each a strip of thumbnails and an
interactive 3D view of its cameras and points (plotly, its JavaScript inlined once), the outliers
apart; the photos registered and the models before and after joining; the time of each stage; and
mAA (and clusterness) where the data folder has labels. Made from the run's record (`RUN_RECORD`
in the work folder, written by `pipeline.run`) and the reconstruction folders it names:
`imc-lib report WORK_DIR` makes it again without running anything.
"""

from __future__ import annotations

import base64
import html
import io as stdio
import logging
from pathlib import Path

import pandas as pd

from .. import figure3d
from ..storage.io import atomic_file, read_json
from ..utils import ImageError, open_image
from . import export, metric, submission

logger = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # in the work folder: what the last run did, for `main`
THUMBNAIL = 128  # longest side of a thumbnail, pixels
MAX_POINTS = 20_000  # points per 3D view (subsampled beyond): the file stays a few MB
# A grey square for a photo that cannot be read: still one thumbnail per photo.
MISSING = (
    "data:image/svg+xml;base64,"
    + base64.b64encode(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{THUMBNAIL}" height="{THUMBNAIL}">'
        f'<rect width="100%" height="100%" fill="#ccc"/></svg>'.encode()
    ).decode()
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .2em .6em; text-align: right; }
.strip { display: flex; flex-wrap: wrap; gap: 4px; margin: .4em 0; }
.thumb { height: 96px; border-radius: 3px; }
.outliers .thumb { opacity: .6; }
.error { color: #b00; }
pre { background: #f6f6f6; padding: .5em; overflow-x: auto; }
"""


def main(work_dir: Path, out: Path | None = None) -> Path:
    """Write the report of the run recorded in `work_dir` to `out` (default WORK_DIR/report.html)."""
    work_dir = Path(work_dir)
    path = work_dir / RUN_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run record; run `imc-lib run ... --work {work_dir}` first")
    record = read_json(path)
    out = Path(out) if out is not None else work_dir / "report.html"
    with atomic_file(out, encoding="utf-8") as handle:
        handle.write(render(record))
    logger.info("report: %s", out)
    return out


def render(record: dict) -> str:
    """The report's HTML of a run record."""
    scores = _scores(record)
    plotly = [True]  # plotly.js inlined with the first 3D view only
    sections = [_scene(scene, scores.get(scene["key"]), plotly) for scene in record["scenes"]]
    title = f"imc_lib report: {html.escape(record['data_dir'])}"
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>'
        f"<body><h1>{title}</h1>{_overview(record)}{''.join(sections)}</body></html>"
    )


def _overview(record: dict) -> str:
    rows = [
        {"scene": s["key"], "photos": s["images"], "registered": s["registered"],
         "clusters": s.get("clusters", 1 if s["registered"] else 0), "outliers": s.get("outliers", ""),
         "status": s.get("status", s["error"] or "ok")}
        for s in record["scenes"]
    ]  # fmt: skip
    where = record["submission"] or record["export"]
    return f"<p>written: {html.escape(str(where))}</p>" + _table(pd.DataFrame(rows))


def _scene(scene: dict, score: pd.DataFrame | None, plotly: list) -> str:
    """One scene's section: summary, times, score, clusters, outliers and the checks' decisions."""
    models = export.submitted_models(scene.get("sfm"), scene["mixed"])
    image_dir = Path(scene["image_dir"])
    placed = set()
    parts = []
    for k, model in enumerate(models):
        names = sorted(im.name for im in model.images.values() if im.has_pose)
        placed.update(names)
        parts.append(_cluster(f"cluster{k}", names, image_dir, model, plotly))
    rest = [n for n in scene["photos"] if n not in placed]
    if rest:
        label = submission.OUTLIERS if scene["mixed"] else "not registered"
        parts.append(f'<div class="outliers"><h3>{label}: {len(rest)} photos</h3>{_strip(rest, image_dir)}</div>')
    key = html.escape(scene["key"])
    return (
        f'<section class="scene" id="scene-{key}"><h2>{key}</h2>{_summary(scene)}'
        + ("" if score is None else "<h3>score</h3>" + _table(score))
        + _times(scene.get("times", {}))
        + "".join(parts)
        + _checks(scene.get("models", {}))
        + "</section>"
    )


def _summary(scene: dict) -> str:
    models = scene.get("models") or {}
    text = f"{scene['images']} photos, {scene['registered']} registered"
    if models:
        text += (
            f"; the mapper's {models['models_before']} model(s) holding {models['registered_before']} photos "
            f"became {models['models_after']} holding {models['registered_after']} after joining "
            f"({models['joined']} joined, {models['added']} photos added)"
        )
    error = f'<p class="error">{html.escape(scene["error"])}</p>' if scene["error"] else ""
    return f"<p>{text}</p>{error}"


def _times(times: dict) -> str:
    if not times:
        return ""
    frame = pd.DataFrame([{**{k: f"{v:.1f}" for k, v in times.items()}, "total": f"{sum(times.values()):.1f}"}])
    return "<h3>time per stage (s; 0.0: reused from an earlier run)</h3>" + _table(frame)


def _checks(models: dict) -> str:
    lines = models.get("checks") or []
    if not lines:
        return ""
    return f"<details><summary>checks ({len(lines)})</summary><pre>{html.escape(chr(10).join(lines))}</pre></details>"


def _cluster(name: str, names: list[str], image_dir: Path, model, plotly: list) -> str:
    """A cluster: its thumbnails and its 3D view."""
    title = f"{name}: {len(names)} photos, {model.num_points3D()} points"
    fig = figure3d.reconstruction_figure(model, max_points=MAX_POINTS, title="")
    # COLMAP's world is its first camera's: y points down the photo, so -y is up on screen.
    fig.update_layout(height=520, scene_camera={"up": {"x": 0, "y": -1, "z": 0}})
    view = fig.to_html(full_html=False, include_plotlyjs=plotly[0], config={"displaylogo": False})
    plotly[0] = False
    return (
        f'<div class="cluster" data-cluster="{name}"><h3>{html.escape(title)}</h3>{_strip(names, image_dir)}'
        f'<div class="plot3d">{view}</div></div>'
    )


def _strip(names: list[str], image_dir: Path) -> str:
    thumbs = [
        f'<img class="thumb" src="{thumbnail(image_dir / n)}" title="{html.escape(n)}" alt="{html.escape(n)}">'
        for n in names
    ]
    return f'<div class="strip">{"".join(thumbs)}</div>'


def thumbnail(path: Path, side: int = THUMBNAIL) -> str:
    """A photo as a small JPEG data URI (MISSING when it cannot be read); decoded reduced where JPEG allows."""
    try:
        with open_image(path) as image:
            image.draft("RGB", (side, side))
            small = image.convert("RGB")
    except (ImageError, FileNotFoundError) as err:
        logger.warning("report: %s", err)
        return MISSING
    small.thumbnail((side, side))
    buffer = stdio.BytesIO()
    small.save(buffer, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)


def _scores(record: dict) -> dict[str, pd.DataFrame]:
    """Scene key -> its score table, where the data folder has labels for the run's split (train);
    scored against the labels of the run's own scenes (IMC 2025: datasets) only."""
    if record["split"] != "train" or not record["submission"] or not Path(record["submission"]).is_file():
        return {}
    data_dir, scenes = Path(record["data_dir"]), record["scenes"]
    try:
        if (data_dir / "train_labels.csv").is_file():  # IMC 2025: per dataset
            labels = submission.read_poses(data_dir / "train_labels.csv", "2025")
            labels = labels[labels["dataset"].isin([s["dataset"] for s in scenes])]
            table, _ = metric.score_2025(labels, record["submission"], data_dir / "train_thresholds.csv")
            return {s["key"]: table[table["dataset"] == s["dataset"]] for s in scenes}
        path = data_dir / "train" / "train_labels.csv"
        if not path.is_file():
            return {}
        labels = submission.read_poses(path, "labels")
        labels = labels[labels["scene"].isin([s["scene"] for s in scenes])]
        categories = path.with_name("categories.csv")
        table = metric.score(labels, record["submission"], categories if categories.is_file() else {})
    except (ValueError, KeyError, FileNotFoundError) as err:  # labels that do not fit this run: said, not hidden
        logger.warning("report: no scores: %s", err)
        return {}
    return {s["key"]: table[(table["dataset"] == s["dataset"]) & (table["scene"] == s["scene"])] for s in scenes}
