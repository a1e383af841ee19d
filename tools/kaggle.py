"""Kaggle packaging: the two upload folders of an offline submission (`imc-lib kaggle build OUT_DIR`).

    OUT_DIR/dataset/  dataset-metadata.json  requirements.txt  *.whl  *.pth
    OUT_DIR/kernel/   kernel-metadata.json   imc24_submission.ipynb

`kaggle datasets create -p OUT_DIR/dataset` uploads the first (the imc_lib wheel, runtime
modules only: this tooling, the app and the plots stay out, NOT_SHIPPED; the dependency wheels
Kaggle's image lacks, pinned in requirements.txt; and the ALIKED/DISK/XFeat/LightGlue weights);
`kaggle kernels push -p OUT_DIR/kernel` the second, a kernel that attaches that dataset, the
competition and the DINOv2 model, runs on a T4 GPU (MACHINE_SHAPE) without internet and installs
from the dataset. One notebook serves IMC 2024 and IMC 2025: the kernel tells which competition's
data it was given by the files (`data.layout`) and writes that year's submission.csv; `competition`
(`--competition 2025`) only names the competition it attaches and prefers.
The dataset is flat because `kaggle datasets create` skips subfolders unless told to archive them.

Templates of both metadata files live in `submission/`; the Kaggle user, dataset and kernel slugs
come from arguments or $IMC_KAGGLE_USER (else $KAGGLE_USERNAME), $IMC_KAGGLE_DATASET,
$IMC_KAGGLE_KERNEL and $IMC_KAGGLE_COMPETITION, with placeholders (and IMC 2024) by default.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from imc_lib import networks
from imc_lib.formats import kaggle_inputs

logger = logging.getLogger("imc_lib.tools.kaggle")  # loaded by path (cli.checkout_tool): name its log lines here

ROOT = Path(__file__).resolve().parents[1]  # the checkout: pyproject.toml, notebooks/, submission/
# The one submission notebook of both competitions (named when it served 2024 alone; kept, since
# kernels pushed from earlier builds and users' commands name it).
NOTEBOOK = "imc24_submission.ipynb"
PLACEHOLDER_USER = "your-kaggle-username"
DEFAULT_DATASET = "imc-lib-offline"
DEFAULT_KERNEL = "imc-lib-imc24-submission"
# year -> competition slug; the kernel slug by default follows the competition it is built for.
COMPETITIONS = kaggle_inputs.COMPETITIONS
DEFAULT_KERNELS = {COMPETITIONS["2024"]: DEFAULT_KERNEL, COMPETITIONS["2025"]: "imc-lib-imc25-submission"}

# Kaggle's image (github.com/Kaggle/docker-python, built on Colab's): CPython 3.12, x86_64, glibc 2.35.
# $IMC_KAGGLE_PYTHON="3.11,3.12" downloads wheels for several, should the image change.
KAGGLE_PYTHONS = ("3.12",)
KAGGLE_PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)) + ("manylinux2014_x86_64",)
# imc_lib's requirements that Kaggle's image holds at versions pyproject.toml accepts: not shipped.
KAGGLE_PROVIDED = ("torch", "numpy", "pandas", "scipy", "h5py", "pillow", "tqdm", "transformers", "plotly")
# Shipped as wheels and pinned to the versions installed here, the ones the tests ran with. Kaggle has
# some kornia too; the pin replaces it with the tested one. kornia-rs is kornia's compiled core.
SHIPPED = ("kornia", "kornia-rs", "pycolmap")
# The default pipeline (ALIKED features, LightGlue, orientation) cannot run without these; the other
# files of networks.WEIGHT_FILES are packed when the weights folder has them.
REQUIRED_WEIGHTS = (networks.WEIGHT_FILES["aliked-n16"], networks.WEIGHT_FILES["lightglue-aliked"])
# The GPU the kernel asks for (kernel-metadata.json `machine_shape`, Kaggle CLI docs/kernels_metadata.md).
# Without one Kaggle gives the P100 (sm_60), on which the current image's torch reports CUDA but has
# no kernels: every scene would fail. T4 is sm_75.
MACHINE_SHAPE = "NvidiaTeslaT4"
UNSUPPORTED_SHAPES = ("", "NvidiaTeslaP100")
# Left out of the Kaggle wheel (top-level entries of imc_lib/): this tooling, the Streamlit app and
# the plots. The kernel imports none of them; `imc-lib kaggle build` / `imc-lib app` there say so.
NOT_SHIPPED = ("app", "viz.py")


def _installed(call, name: str):
    try:
        return call(name)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"{name} is not installed here, so its requirements and tested version are unknown; "
            f"run `pip install -e .` in {ROOT} first"
        ) from None


def unclassified_requirements() -> list[str]:
    """Requirements of imc_lib and of the SHIPPED packages (as installed here) that are neither
    SHIPPED nor KAGGLE_PROVIDED: what `pip install --no-index` on Kaggle would fail to find."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    known = {canonicalize_name(n) for n in KAGGLE_PROVIDED + SHIPPED}
    names = set()
    for package in ("imc_lib", *SHIPPED):
        for line in _installed(importlib.metadata.requires, package) or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                names.add(canonicalize_name(req.name))
    return sorted(names - known)


def shipped_requirements() -> list[str]:
    """`name==version` of every SHIPPED package, at the version installed here."""
    return [f"{name}=={_installed(importlib.metadata.version, name)}" for name in SHIPPED]


def download_command(dest: Path, python: str, requirements: list[str]) -> list[str]:
    """`pip download` of the SHIPPED wheels for Kaggle's platform and one Python version."""
    platforms = [arg for platform in KAGGLE_PLATFORMS for arg in ("--platform", platform)]
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        *platforms,
        "--dest",
        str(dest),
        *requirements,
    ]


def _slug(value: str, what: str, lengths: tuple[int, int]) -> str:
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value) or not lengths[0] <= len(value) <= lengths[1]:
        raise ValueError(
            f"{what} {value!r}: use {lengths[0]}-{lengths[1]} lowercase letters, digits and single "
            f"dashes (Kaggle derives URLs from it)"
        )
    return value


def competition_slug(value: str | None = None) -> str:
    """The competition slug of `value` (a year of COMPETITIONS or a slug), else of
    $IMC_KAGGLE_COMPETITION, else IMC 2024's; ValueError naming the known ones."""
    value = value or os.environ.get("IMC_KAGGLE_COMPETITION") or "2024"
    slug = COMPETITIONS.get(value, value)
    if slug not in COMPETITIONS.values():
        known = ", ".join(f"{year} ({name})" for year, name in COMPETITIONS.items())
        raise ValueError(f"competition {value!r}: not one the kernel reads; use {known}")
    return slug


def kaggle_names(
    user: str | None = None, dataset: str | None = None, kernel: str | None = None, competition: str | None = None
) -> dict[str, str]:
    """{"user", "dataset", "kernel", "competition"} from the arguments, the environment, or the
    placeholders (and IMC 2024); the kernel slug defaults to the competition's (DEFAULT_KERNELS)."""
    user = user or os.environ.get("IMC_KAGGLE_USER") or os.environ.get("KAGGLE_USERNAME") or PLACEHOLDER_USER
    if not user or "/" in user or any(c.isspace() for c in user):
        raise ValueError(f"Kaggle user {user!r}: set IMC_KAGGLE_USER to your Kaggle user name")
    competition = competition_slug(competition)
    kernel = kernel or os.environ.get("IMC_KAGGLE_KERNEL") or DEFAULT_KERNELS[competition]
    return {
        "user": user,
        "dataset": _slug(dataset or os.environ.get("IMC_KAGGLE_DATASET") or DEFAULT_DATASET, "dataset slug", (3, 50)),
        "kernel": _slug(kernel, "kernel slug", (5, 50)),
        "competition": competition,
    }


def _template(name: str) -> dict:
    path = ROOT / "submission" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: template not found; `imc-lib kaggle build` runs from a checkout of imc_lib")
    return json.loads(path.read_text())


def kernel_metadata(names: dict[str, str]) -> dict:
    """submission/kernel-metadata.json with this user's kernel id, dataset and competition; the title
    is the slug spelled with spaces, since Kaggle requires the title to slugify to the id. The GPU is
    the template's `machine_shape` (MACHINE_SHAPE if absent), never the P100 default."""
    meta = _template("kernel-metadata.json")
    meta.update(
        id=f"{names['user']}/{names['kernel']}",
        title=names["kernel"].replace("-", " "),
        code_file=NOTEBOOK,
        dataset_sources=[f"{names['user']}/{names['dataset']}"],
        competition_sources=[names.get("competition", COMPETITIONS["2024"])],
    )
    meta.setdefault("machine_shape", MACHINE_SHAPE)
    if meta.get("enable_gpu") and meta["machine_shape"] in UNSUPPORTED_SHAPES:
        raise ValueError(
            f"{ROOT / 'submission' / 'kernel-metadata.json'}: machine_shape "
            f"{meta['machine_shape']!r} gets a P100, which Kaggle's torch cannot run kernels on; "
            f"set it to {MACHINE_SHAPE!r}"
        )
    return meta


def dataset_metadata(names: dict[str, str], files: list[Path]) -> dict:
    """submission/dataset-metadata.json with this user's dataset id and one resource per file."""
    meta = _template("dataset-metadata.json")
    meta["id"] = f"{names['user']}/{names['dataset']}"
    weights = set(networks.WEIGHT_FILES.values())
    describe = {".whl": "wheel for `pip install --no-index --find-links`", ".txt": "the versions to install (pip -r)"}
    meta["resources"] = [
        {
            "path": f.name,
            "description": "network weights (official release)" if f.name in weights else describe.get(f.suffix, ""),
        }
        for f in sorted(files)
    ]
    return meta


def write_notebook(source: Path, dest: Path, dataset: str, competition: str = COMPETITIONS["2024"]) -> None:
    """Copy the submission notebook, pointing its KAGGLE_DATASET at `dataset` (the mount
    /kaggle/input/<slug>) and its KAGGLE_COMPETITION (the one preferred) at `competition`."""
    notebook = json.loads(source.read_text())
    values = {"KAGGLE_DATASET": dataset, "KAGGLE_COMPETITION": competition}
    patterns = {name: re.compile(rf'^{name} = "[^"]*"', re.MULTILINE) for name in values}
    hits = dict.fromkeys(values, 0)
    for cell in notebook["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for name, pattern in patterns.items():
            text, n = pattern.subn(f'{name} = "{values[name]}"', text)
            if n:
                hits[name] += n
                cell["source"] = text.splitlines(keepends=True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    for name, n in hits.items():
        if n != 1:
            raise ValueError(
                f'{source}: expected one line `{name} = "..."`, found {n}; '
                f"restore it in notebooks/imc24_submission.py and run `jupytext --sync` on it"
            )
    dest.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def _pip(args: list[str], what: str) -> None:
    logger.info("%s: %s", what, " ".join(args[1:6]) + (" ..." if len(args) > 6 else ""))
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def _runtime_only(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's `ignore`: caches anywhere, and NOT_SHIPPED at the package's top level."""
    top = Path(folder) == ROOT / "imc_lib"
    return [n for n in names if n == "__pycache__" or n.endswith(".pyc") or (top and n in NOT_SHIPPED)]


def build_wheel(dest: Path, offline: bool) -> Path:
    """The imc_lib wheel of the runtime (the package less NOT_SHIPPED), built from a clean copy (a
    stale build/ folder in the checkout could otherwise slip deleted modules into it). Offline: the
    installed setuptools, no downloads."""
    if not (ROOT / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{ROOT / 'pyproject.toml'}: not found; `imc-lib kaggle build` runs from a checkout")
    with tempfile.TemporaryDirectory(prefix="imc-lib-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(ROOT / "imc_lib", src / "imc_lib", ignore=_runtime_only)
        for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, src / name)
        no_network = ["--no-build-isolation", "--no-index"] if offline else []
        args = [sys.executable, "-m", "pip", "wheel", *no_network, "--no-deps", "--wheel-dir", str(dest), str(src)]
        try:
            _pip(args, "imc_lib wheel")
        except RuntimeError as err:
            hint = (
                " (offline builds need setuptools>=70.1 installed: pip install 'setuptools>=70.1')" if offline else ""
            )
            raise RuntimeError(f"{err}{hint}") from None
    (wheel,) = dest.glob("imc_lib-*.whl")
    return wheel


def check_weights(source: Path) -> None:
    """FileNotFoundError naming what `source` lacks of REQUIRED_WEIGHTS."""
    missing = [name for name in REQUIRED_WEIGHTS if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source}: no {', '.join(missing)}; pass --weights DIR (or set IMC_WEIGHTS_DIR) "
            f"to a folder of the official files (data/download.sh fetches them)"
        )


def copy_weights(source: Path, dest: Path) -> list[Path]:
    """Copy the known weight files of `source` (at least REQUIRED_WEIGHTS) into `dest`."""
    check_weights(source)
    copied = []
    for name in sorted(set(networks.WEIGHT_FILES.values())):
        if (source / name).is_file():
            copied.append(Path(shutil.copyfile(source / name, dest / name)))
    return copied


def _check_target(target: Path, marker: str) -> None:
    """An output folder may be replaced only if it is an earlier build (holds `marker`)."""
    if target.exists() and not (target / marker).is_file():
        raise ValueError(
            f"{target}: exists and is not an earlier build (no {marker}); remove it or choose another OUT_DIR"
        )


def _replace(staged: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    staged.rename(target)


def build(
    out_dir: Path,
    offline: bool = False,
    weights: str | Path | None = None,
    user: str | None = None,
    dataset: str | None = None,
    kernel: str | None = None,
    pythons: list[str] | None = None,
    competition: str | None = None,
) -> int:
    """Assemble OUT_DIR/dataset and OUT_DIR/kernel; returns the exit code (0, or 1 when pip failed).

    `offline`: build the imc_lib wheel without network and skip the dependency downloads (the
    dataset then installs only where those packages already are: for tests). `weights`: the folder
    to pack (default $IMC_WEIGHTS_DIR). `pythons`: Kaggle's Python versions (default
    $IMC_KAGGLE_PYTHON, comma-separated, else KAGGLE_PYTHONS). `competition`: "2024", "2025" or a
    slug of COMPETITIONS (default $IMC_KAGGLE_COMPETITION, else 2024), the competition the kernel
    attaches; the notebook reads either year's data. Bad input raises FileNotFoundError or
    ValueError naming the file or setting.
    """
    out_dir = Path(out_dir)
    names = kaggle_names(user, dataset, kernel, competition)
    weights = weights or os.environ.get("IMC_WEIGHTS_DIR")
    if not weights:
        raise FileNotFoundError("no weights folder given; pass --weights DIR or set IMC_WEIGHTS_DIR")
    if not Path(weights).is_dir():
        raise FileNotFoundError(f"{weights}: weights folder not found; pass --weights DIR or set IMC_WEIGHTS_DIR")
    check_weights(Path(weights))
    pythons = pythons or [p for p in os.environ.get("IMC_KAGGLE_PYTHON", ",".join(KAGGLE_PYTHONS)).split(",") if p]
    notebook = ROOT / "notebooks" / NOTEBOOK
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: not found; run `jupytext --sync notebooks/imc24_submission.py`")
    unclassified = unclassified_requirements()
    if unclassified:
        raise ValueError(
            f"{unclassified}: requirements of imc_lib or of {SHIPPED} neither shipped nor known to be "
            f"on Kaggle; add them to SHIPPED or KAGGLE_PROVIDED in {Path(__file__)}"
        )
    shipped = shipped_requirements()
    _check_target(out_dir / "dataset", "dataset-metadata.json")
    _check_target(out_dir / "kernel", "kernel-metadata.json")

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as tmp:
        data_dir, kernel_dir = Path(tmp) / "dataset", Path(tmp) / "kernel"
        data_dir.mkdir()
        kernel_dir.mkdir()
        try:
            wheel = build_wheel(data_dir, offline)
            if offline:
                logger.warning(
                    "offline: %s not downloaded; this dataset installs only where they are present "
                    "(build without --offline for Kaggle)",
                    ", ".join(shipped),
                )
            else:
                for python in pythons:
                    _pip(download_command(data_dir, python, shipped), f"wheels for Python {python}")
        except RuntimeError as err:
            logger.error("%s", err)
            return 1
        version = wheel.name.split("-")[1]  # name-version-python-abi-platform.whl
        (data_dir / "requirements.txt").write_text("\n".join([f"imc_lib=={version}", *shipped]) + "\n")
        copy_weights(Path(weights), data_dir)
        files = sorted(data_dir.iterdir())
        (data_dir / "dataset-metadata.json").write_text(json.dumps(dataset_metadata(names, files), indent=2) + "\n")
        write_notebook(notebook, kernel_dir / NOTEBOOK, names["dataset"], names["competition"])
        (kernel_dir / "kernel-metadata.json").write_text(json.dumps(kernel_metadata(names), indent=2) + "\n")
        _replace(data_dir, out_dir / "dataset")
        _replace(kernel_dir, out_dir / "kernel")

    size = sum(f.stat().st_size for f in (out_dir / "dataset").iterdir()) / 2**20
    logger.info(
        "dataset %s/%s: %d files, %.0f MiB in %s",
        names["user"],
        names["dataset"],
        len(files) + 1,
        size,
        out_dir / "dataset",
    )
    logger.info("kernel %s/%s for %s in %s", names["user"], names["kernel"], names["competition"], out_dir / "kernel")
    if names["user"] == PLACEHOLDER_USER:
        logger.warning(
            "user is the placeholder %r: set IMC_KAGGLE_USER to your Kaggle user name and build again before pushing",
            PLACEHOLDER_USER,
        )
    return 0
