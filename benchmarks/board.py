"""The board: every shared set with `imc-lib run`'s defaults, one table, each score against the last saved board.

    python benchmarks/board.py [--sets imc-mini imc-mini-rot imc-hard imc-real mix] [--work DIR]
                               [--save] [--markdown FILE] [--json FILE] [--no-sift]

Runs pipeline.run (no options) on each set, one after the other in this process, and prints per scene:
mAA, its change against `benchmarks/board.json` (the last saved board), COLMAP SIFT's mAA (the floor
stated in ../shared/data/README.md), photos registered, the mapper's models -> the kept ones, and wall
seconds. The mixed set (../shared/data/imc25-mix, composed into --work) gives one row per dataset:
its IMC 2025 score, with mAA and clusterness beside it. COLMAP SIFT is run on imc-mini in the same
process (unless --no-sift) for the wall-time ratio. `--save` writes this board to board.json;
`--markdown` writes the tables (for docs and the README). Long (25-40 min on 2 cores): run it in the
background, alone, e.g. `nohup python benchmarks/board.py --markdown board.md > board.log 2>&1 &`.
Another checkout's code is measured with `PYTHONPATH=THAT_CHECKOUT python benchmarks/board.py ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pycolmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, markdown, run_sift  # noqa: E402

import imc_lib  # noqa: E402
from imc_lib import pipeline  # noqa: E402
from imc_lib.formats import metric

SETS = ("imc-mini", "imc-mini-rot", "imc-hard", "imc-real", "mix")
SAVED = Path(__file__).resolve().parent / "board.json"
MIX = ROOT.parent / "shared" / "data" / "imc25-mix"
# COLMAP SIFT's mAA per scene, as ../shared/data/README.md states it (pycolmap defaults, exhaustive
# matching, largest model, this 2-core machine); dino-full and the mixed set have none.
SIFT = {
    "imc-mini": {"entry": 0.786, "fountain": 1.000, "herzjesu-p8": 1.000, "temple": 0.410},
    "imc-mini-rot": {"entry": 0.786, "fountain": 1.000, "herzjesu-p8": 1.000, "temple": 0.462},
    "imc-hard": {"temple-ring": 0.761, "dtu-scan24": 0.964, "gold-cape": 0.971, "fox": 0.894},
    "imc-real": {
        "reichstag": 0.429,
        "lund-door": 0.981,
        "lounge": 1.000,
        "office": 0.792,
        "rooftop": 0.092,
        "dtu-scan65": 0.928,
        "bird": 0.536,
    },
}


def run_2024(name: str, work: Path, weights: Path) -> list[dict]:
    """One IMC 2024-layout set through the defaults: a row per scene."""
    root = data_dir(name)
    out = work / name
    result = pipeline.run(root, out / "submission.csv", out, "train", weights=weights)
    table = metric.score(root / "train" / "train_labels.csv", out / "submission.csv")
    maa = dict(zip(table["scene"], table["mAA"]))
    return [_row(name, key, maa.get(key, 0.0), r, SIFT.get(name, {}).get(key)) for key, r in result["scenes"].items()]


def run_mix(work: Path, weights: Path) -> list[dict]:
    """The composed IMC 2025 set (both datasets in one run): a row per dataset, its score as mAA."""
    root = work / "imc25"
    if not root.exists():
        subprocess.run([sys.executable, str(MIX / "compose.py"), str(root), "--link"], check=True)
    out = work / "mix"
    result = pipeline.run(root, out / "submission.csv", out, "train", weights=weights)
    per_dataset, _ = metric.score_2025(root / "train_labels.csv", out / "submission.csv", root / "train_thresholds.csv")
    rows = []
    for d in per_dataset.to_dict("records"):
        row = _row("mix", d["dataset"], d["score"], result["scenes"][d["dataset"]], None)
        row["note"] = (f"mAA {d['mAA']:.3f}, clusterness {d['clusterness']:.3f}, "
                       f"{d['outliers_found']}/{d['outliers']} outliers")  # fmt: skip
        rows.append(row)
    return rows


def _row(set_name: str, scene: str, maa: float, result, sift: float | None) -> dict:
    """A board row from a scene's pipeline.SceneOutcome."""
    models = result.models
    return {
        "set": set_name,
        "scene": scene,
        "mAA": round(float(maa), 3),
        "SIFT": sift,
        "registered": f"{result.registered}/{result.images}",
        "models": f"{models['models_before']} -> {models['models_after']}" if models else "",
        "wall s": round(sum(result.times.values()), 1),
        "note": "" if result.status == "ok" else result.status,
    }


def with_changes(rows: list[dict], saved: dict) -> pd.DataFrame:
    """The rows as a table, a column with each score's change against the saved board."""
    table = pd.DataFrame(rows)
    before = {(r["set"], r["scene"]): r["mAA"] for r in saved.get("rows", [])}

    def change(row):
        old = before.get((row["set"], row["scene"]))
        return "new" if old is None else f"{row['mAA'] - old:+.3f}"

    table.insert(3, "change", table.apply(change, axis=1))
    table["SIFT"] = table["SIFT"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3f}")
    table["mAA"] = table["mAA"].map(lambda v: f"{v:.3f}")
    return table


def totals(table: pd.DataFrame, walls: dict[str, float], saved: dict) -> pd.DataFrame:
    """Per set: mean mAA, mean SIFT mAA where every scene has one, scenes at or above SIFT, wall, and
    the wall against the saved board's (a ratio; compare walls measured the same day only)."""
    before = saved.get("walls", {})
    rows = []
    for name, group in table.groupby("set", sort=False):
        sift = pd.to_numeric(group["SIFT"], errors="coerce")
        maa = pd.to_numeric(group["mAA"])
        rows.append({
            "set": name,
            "scenes": len(group),
            "mean mAA": f"{maa.mean():.3f}",
            "mean SIFT": "" if sift.isna().any() else f"{sift.mean():.3f}",
            ">= SIFT": f"{int((maa >= sift).sum())}/{int(sift.notna().sum())}" if sift.notna().any() else "",
            "wall s": round(walls[name], 1),
            "wall / saved": f"{walls[name] / before[name]:.2f}x" if before.get(name) else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _against(walls: dict[str, float], saved: dict) -> str:
    """ ", X.XXx the saved board's N s" over the sets both ran, or nothing."""
    both = [k for k in walls if k in saved.get("walls", {})]
    if not both:
        return ""
    mine, theirs = sum(walls[k] for k in both), sum(saved["walls"][k] for k in both)
    return f", {mine / theirs:.2f}x the saved board's {theirs:.0f} s over the same sets"


def _revision() -> str:
    try:
        cwd = Path(imc_lib.__file__).resolve().parents[1]
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=cwd, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--work", type=Path, help="default: a fresh temporary folder")
    p.add_argument("--weights", type=Path, default=ROOT.parent / "shared" / "weights")
    p.add_argument("--against", type=Path, default=SAVED, help="the saved board to compare with")
    p.add_argument("--save", action="store_true", help=f"write this board to {SAVED.name}")
    p.add_argument("--json", type=Path, help="also write this board here")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    p.add_argument("--no-sift", action="store_true", help="skip COLMAP SIFT's imc-mini wall-time run")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the checks, the photo sizes, the rescues
    for name in ("imc_lib.stages.reconstruction", "imc_lib.stages.features", "imc_lib.stages.matching"):
        logging.getLogger(name).setLevel(logging.INFO)
    pycolmap.logging.minloglevel = 2
    work = args.work or Path(tempfile.mkdtemp(prefix="imc-board-"))
    revision = _revision()
    print(f"board of {revision} ({imc_lib.__file__}), work {work}", flush=True)
    rows, walls = [], {}
    for name in args.sets:
        start = time.perf_counter()
        rows += run_mix(work, args.weights) if name == "mix" else run_2024(name, work, args.weights)
        walls[name] = time.perf_counter() - start
        print(f"{name}: {walls[name]:.0f} s", flush=True)
    sift_wall = None
    if not args.no_sift and "imc-mini" in args.sets:
        start = time.perf_counter()
        run_sift(data_dir("imc-mini"), work / "sift-imc-mini")
        sift_wall = time.perf_counter() - start
    saved = json.loads(args.against.read_text()) if args.against.exists() else {}
    table = with_changes(rows, saved)
    summary = totals(table, walls, saved)
    lines = [f"Board of `{revision}` (changes against `{args.against.name}` of `{saved.get('revision', '-')}`):",
             "", markdown(table), "", markdown(summary), "",
             f"Whole board: {sum(walls.values()):.0f} s{_against(walls, saved)}."]  # fmt: skip
    if sift_wall is not None:
        lines.append(f"imc-mini: {walls['imc-mini']:.1f} s against COLMAP SIFT's {sift_wall:.1f} s in this run "
                     f"({walls['imc-mini'] / sift_wall:.2f}x).")  # fmt: skip
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    board = {"revision": revision, "date": time.strftime("%Y-%m-%d"), "rows": rows, "walls": walls,
             "sift_imc_mini_wall": sift_wall}  # fmt: skip
    for path in [SAVED] * args.save + [args.json] * bool(args.json):
        path.write_text(json.dumps(board, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
