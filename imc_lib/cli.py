"""Command line: `imc-lib run` reconstructs scenes into submission.csv, `imc-lib score` scores one."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import pandas as pd

from . import pipeline, plan
from .execution import executor
from .formats import data
from .storage import lock

FOLDER_OUT = "imc-out"  # --out of a plain folder of photos, when not given


def _run(args) -> int:
    """Run the pipeline and print a table per scene; 1 when some scene failed with an error (the
    submission is still complete: its photos get placeholder rows), so scripts notice. The options are
    checked (plan.Options) before anything starts, a Ray cluster included."""
    settings = _settings(args)
    folder = data.layout(args.data_dir, args.split) == "folder"
    if folder and args.export:
        raise ValueError(f"{args.data_dir}: a plain folder's files go to --out; --export is for competition layouts")
    runner = executor.make(args.executor, args.address)
    try:
        result = pipeline.run(
            args.data_dir,
            args.out or Path(FOLDER_OUT if folder else "submission.csv"),
            args.work,
            split=args.split,
            scenes=args.scenes,
            executor=runner,
            **dataclasses.asdict(settings),
        )
    finally:
        runner.close()
    print(scene_table(result["scenes"]))
    return _report(result)


def _settings(args) -> plan.Options:
    """The run's options, checked (a ValueError names a bad one and its fix)."""
    return plan.Options(**{f.name: getattr(args, f.name) for f in dataclasses.fields(plan.Options)})


def add_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every field of plan.Options: `--max-keypoints` for `max_keypoints`, its settings from the
    field's metadata (a `choices` callable is read now, so registered networks are offered)."""
    for f in dataclasses.fields(plan.Options):
        cli = dict(f.metadata["cli"])
        if callable(cli.get("choices")):
            cli["choices"] = list(cli["choices"]())
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=f.default, **cli)


def _report(result) -> int:
    times = result["times"]
    print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()) + f", total {sum(times.values()):.1f}s")
    missing = sum(r.unposed for r in result["scenes"].values())
    outliers = sum(r.outliers or 0 for r in result["scenes"].values())
    rows = result["submission"] or Path(result["export"]) / "poses.csv"
    written = result["submission"] or f"{result['export']}: poses.csv and each cluster's files"
    print(
        f"wrote {written}"
        + (f" ({missing} image(s) without a pose: placeholder rows)" if missing else "")
        + (f" ({outliers} photo(s) in no cluster: outliers)" if outliers else "")
    )
    print(f"report: {result['report']}")
    # Scenes the time guard skipped or stopped were a decision (`skipped`), not a failure (`error`).
    failed = [key for key, r in result["scenes"].items() if r.error]
    if failed:
        print(
            f"imc-lib: error: {len(failed)} scene(s) failed: {', '.join(failed)}; their photos have placeholder "
            f"rows in {rows}; the log above says why",
            file=sys.stderr,
        )
        return 1
    return 0


def scene_table(scenes: dict) -> str:
    """One line per scene of `pipeline.run`'s result (SceneOutcome): registered photos and "ok", the error
    or why it was skipped."""
    table = pd.DataFrame(
        {
            "registered": [f"{r.registered}/{r.images}" for r in scenes.values()],
            "models": [_models(r.models) for r in scenes.values()],
            "outliers": ["" if r.outliers is None else r.outliers for r in scenes.values()],
            "status": [r.status for r in scenes.values()],
        },
        index=pd.Index(list(scenes), name="scene"),
    )
    return table.to_string()


def _models(summary: dict) -> str:
    """ "mapper models -> kept models" of a scene (reconstruction.summary), "" when not mapped."""
    return f"{summary['models_before']} -> {summary['models_after']}" if summary else ""


def _report_command(args) -> int:
    from .formats import report

    print(f"wrote {report.main(args.work_dir, args.out)}")
    return 0


def _score(args) -> int:
    from .formats import metric

    print(metric.report(args.labels, args.submission, args.categories, args.thresholds))
    return 0


def _not_in_wheel(module: str, command: str):
    """`imc_lib.<module>`, or a FileNotFoundError saying why it is absent: the Kaggle wheel carries
    the runtime only (tools/kaggle.py's NOT_SHIPPED), not the app."""
    full = f"{__package__}.{module}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name is None or not f"{full}.".startswith(f"{err.name}."):
            raise  # something the module itself imports is missing
        raise FileNotFoundError(
            f"{full} is not installed here (the Kaggle wheel carries only the runtime stages); "
            f"`imc-lib {command}` runs from a checkout: pip install -e ."
        ) from None


# Tooling that works only from a checkout (the Kaggle build reads pyproject.toml, notebooks/ and
# submission/ beside the package): kept outside the installed package, loaded from there by path.
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def checkout_tool(name: str, command: str):
    """The checkout's `tools/<name>.py`, or a FileNotFoundError naming it and the fix."""
    key = f"imc_lib_tools_{name}"
    if key not in sys.modules:
        path = TOOLS / f"{name}.py"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; `imc-lib {command}` runs from a checkout of imc_lib: git clone it, then "
                "pip install -e ."
            )
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _kaggle_build(args) -> int:
    kaggle = checkout_tool("kaggle", "kaggle build")
    return kaggle.build(args.out_dir, offline=args.offline, weights=args.weights, competition=args.competition)


def _app(args) -> int:
    app = _not_in_wheel("app", "app")
    return app.launch(port=args.port, extra_args=args.streamlit_args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imc-lib", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, COLMAP's included")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="reconstruct every scene and write submission.csv")
    r.add_argument(
        "data_dir",
        type=Path,
        help="IMC 2024 or 2025 folder (holding train/ or test/ + sample_submission.csv), or any folder of photos "
        "(at any depth; one photo set that may hold several scenes and junk, as an IMC 2025 dataset)",
    )
    r.add_argument("--split", choices=["train", "test"], default="train", help="of a competition layout")
    r.add_argument(
        "--out",
        type=Path,
        help="competition layouts: submission.csv (the default); a folder of photos: the folder that gets poses.csv, "
        f"per cluster a COLMAP model, transforms.json and points3D.ply, and report.html (default {FOLDER_OUT})",
    )
    r.add_argument(
        "--work",
        type=Path,
        default=Path("work"),
        help="the folder of intermediate files, one subfolder per scene; a rerun reuses them (default: work/ "
        "in the current folder)",
    )
    r.add_argument("--scenes", nargs="+", help="only these scenes")
    add_options(r)
    r.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="where scenes run: this process, one after another (local), or a Ray cluster's nodes (ray: "
        "pip install 'imc_lib[ray]'; every node sees DATA_DIR and --work at the same paths)",
    )
    r.add_argument("--address", help="the Ray cluster to join (default $RAY_ADDRESS, else a local cluster)")
    r.set_defaults(func=_run)

    rp = sub.add_parser("report", help="write the HTML report of the last run in a work folder")
    rp.add_argument("work_dir", type=Path, help="the --work folder of a run (holding run.json)")
    rp.add_argument("--out", type=Path, help="the HTML file (default WORK_DIR/report.html)")
    rp.set_defaults(func=_report_command)

    s = sub.add_parser(
        "score",
        help="score a submission against labels: IMC 2024 mAA per scene, or IMC 2025 score, mAA and "
        "clusterness per dataset (the year told by the files' columns)",
    )
    s.add_argument("labels", type=Path, help="train_labels.csv")
    s.add_argument("submission", type=Path, help="submission.csv")
    s.add_argument("--categories", type=Path, help="IMC 2024: categories.csv (default: beside the labels)")
    s.add_argument("--thresholds", type=Path, help="IMC 2025: train_thresholds.csv (default: beside the labels)")
    s.set_defaults(func=_score)
    k = sub.add_parser("kaggle", help="Kaggle packaging: assemble the kernel and wheels/weights dataset folders")
    kaggle_sub = k.add_subparsers(dest="kaggle_command", required=True)
    kb = kaggle_sub.add_parser("build", help="assemble the upload folders for `kaggle kernels/datasets push`")
    kb.add_argument("out_dir", type=Path)
    kb.add_argument("--offline", action="store_true", help="skip downloads (dependency wheels); for tests")
    kb.add_argument("--weights", type=Path, help="folder of weights to pack (default $IMC_WEIGHTS_DIR)")
    kb.add_argument(
        "--competition",
        help="2024 (default, or $IMC_KAGGLE_COMPETITION) or 2025: the competition the kernel attaches "
        "(the notebook reads either year's data)",
    )
    kb.set_defaults(func=_kaggle_build)

    # Other options go to `streamlit run` as given, in order: no REMAINDER positional, whose split
    # with parse_known_args reordered them (`--server.headless true` reached streamlit as `true --server.headless`).
    a = sub.add_parser(
        "app",
        help="launch the Streamlit explorer",
        description="Launch the Streamlit explorer. Any other options (e.g. --server.headless true) "
        "are passed on to `streamlit run` in the order given.",
    )
    a.add_argument("--port", type=int, default=8501)
    a.set_defaults(func=_app, streamlit_args=[])
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "app":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "app":
        args.streamlit_args = extra  # parse_known_args keeps the unknown arguments in their order
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import pycolmap

    pycolmap.logging.minloglevel = 0 if args.verbose else 2  # COLMAP's own chatter: errors only
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, lock.SceneLockedError) as err:
        print(f"imc-lib: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
