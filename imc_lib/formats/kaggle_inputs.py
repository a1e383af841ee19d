"""Where Kaggle mounted a kernel's inputs: found by their content, not assumed from a path.

Kaggle has mounted the same attached inputs in two layouts:

    2024  /kaggle/input/image-matching-challenge-2024   /kaggle/input/<dataset>
          /kaggle/input/dinov2/pytorch/base/1
          (the 2025 competition alike: /kaggle/input/image-matching-challenge-2025)
    2026  /kaggle/input/competitions/<slug>   /kaggle/input/datasets/<owner>/<slug>
          /kaggle/input/models/<owner>/<model>/<framework>/<variation>/<version>

`find_inputs` walks the input root breadth first (sorted, at most MAX_DEPTH levels, never into a
folder it has recognised) and knows each input by what it holds: the competition by a
`sample_submission.csv` beside a `test/` folder (of either competition, IMC 2024 or 2025:
`data.layout` then tells which by its files), the offline dataset of `imc-lib kaggle build` by
its `requirements.txt` beside an imc_lib wheel, a DINOv2 model by a `config.json` whose
`model_type` is "dinov2". $IMC_DATA_DIR, $IMC_OFFLINE_DIR and $IMC_DINOV2 override the search;
$IMC_KAGGLE_INPUT moves the root (for tests and local dry runs).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

INPUT_ROOT = Path("/kaggle/input")
MAX_DEPTH = 6  # models/<owner>/<model>/<framework>/<variation>/<version> is 5, plus one nested folder
# The competitions whose data the kernel reads (either is found by content); COMPETITION is the one
# preferred where several are attached (the kernel's KAGGLE_COMPETITION, `imc-lib kaggle build --competition`).
COMPETITIONS = {"2024": "image-matching-challenge-2024", "2025": "image-matching-challenge-2025"}
COMPETITION = COMPETITIONS["2024"]
KINDS = ("competition", "offline", "dinov2")
ENV = {"competition": "IMC_DATA_DIR", "offline": "IMC_OFFLINE_DIR", "dinov2": "IMC_DINOV2"}
LOOKS_FOR = {
    "competition": "a sample_submission.csv beside a test/ folder",
    "offline": "a requirements.txt beside an imc_lib*.whl (the dataset of `imc-lib kaggle build`)",
    "dinov2": 'a config.json with "model_type": "dinov2"',
}
NAMES = {"competition": "competition data", "offline": "offline dataset", "dinov2": "DINOv2 model"}


def is_competition(folder: Path) -> bool:
    """The competition's data: sample_submission.csv beside test/."""
    return (folder / "sample_submission.csv").is_file() and (folder / "test").is_dir()


def is_offline_dataset(folder: Path) -> bool:
    """The dataset `imc-lib kaggle build` makes: requirements.txt beside the imc_lib wheel."""
    return (folder / "requirements.txt").is_file() and any(folder.glob("imc_lib*.whl"))


def is_dinov2(folder: Path) -> bool:
    """A transformers DINOv2 model folder: config.json with model_type "dinov2"."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "dinov2"
    except (OSError, ValueError, AttributeError) as err:
        logger.debug("%s: not a readable model config (%s)", config, err)
        return False


TESTS = {"competition": is_competition, "offline": is_offline_dataset, "dinov2": is_dinov2}


def _subfolders(folder: Path) -> list[Path]:
    """The visible subfolders of `folder`, sorted; an unreadable folder has none."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError as err:
        logger.debug("%s: not searched (%s)", folder, err)
        return []


def search(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, list[Path]]:
    """Every folder of each kind under `root` (itself included), shallowest first, then by path.

    Breadth first and sorted, so the answer does not depend on the file system's order; a
    recognised folder is not entered (the competition's thousands of images are never listed).
    """
    found: dict[str, list[Path]] = {kind: [] for kind in KINDS}
    level = [Path(root)]
    for depth in range(max_depth + 1):
        below = []
        for folder in level:
            kinds = [kind for kind in KINDS if TESTS[kind](folder)]
            for kind in kinds:
                found[kind].append(folder)
            if not kinds and depth < max_depth:
                below += _subfolders(folder)
        level = below
    return found


def _choose(kind: str, candidates: list[Path], prefer: str | None) -> Path | None:
    """The first candidate with `prefer` among its path parts, else the first; several are logged."""
    if not candidates:
        return None
    chosen = next((c for c in candidates if prefer and prefer in c.parts), candidates[0])
    if len(candidates) > 1:
        logger.warning(
            "%d folders look like the %s: %s; using %s (set %s to choose)",
            len(candidates),
            NAMES[kind],
            ", ".join(map(str, candidates)),
            chosen,
            ENV[kind],
        )
    return chosen


@dataclass(frozen=True)
class KaggleInputs:
    """The inputs found (None: absent) and, per kind, where each came from (for reports)."""

    root: Path
    competition: Path
    offline: Path | None
    dinov2: Path | None
    origin: dict[str, str] = field(default_factory=dict)

    def report(self) -> list[str]:
        """One line per input: what, where, and how it was found (or what was searched)."""
        return [f"{NAMES[kind]}: {getattr(self, kind) or 'NOT FOUND'} ({self.origin[kind]})" for kind in KINDS]


def find_inputs(
    root: str | Path | None = None,
    dataset: str | None = None,
    competition: str = COMPETITION,
    dinov2_variation: str = "base",
    max_depth: int = MAX_DEPTH,
) -> KaggleInputs:
    """The competition, offline dataset and DINOv2 model under `root` (default $IMC_KAGGLE_INPUT,
    else /kaggle/input), in either layout; each logged with where it is.

    $IMC_DATA_DIR, $IMC_OFFLINE_DIR and $IMC_DINOV2 override the search for their input. Where
    several folders match, the one with `competition`, `dataset` (the offline dataset's slug) or
    `dinov2_variation` in its path wins, else the shallowest. No competition raises
    FileNotFoundError naming the root and what was searched for; a missing dataset or model is
    None (the caller decides what that costs).
    """
    root = Path(root or os.environ.get("IMC_KAGGLE_INPUT") or INPUT_ROOT)
    given = {kind: os.environ[ENV[kind]] for kind in KINDS if os.environ.get(ENV[kind])}
    found = search(root, max_depth) if len(given) < len(KINDS) else {}
    searched = f"searched {root}, {max_depth} levels deep, for"
    chosen, origin = {}, {}
    for kind, prefer in zip(KINDS, (competition, dataset, dinov2_variation)):
        if kind in given:
            chosen[kind], origin[kind] = Path(given[kind]).expanduser(), f"from ${ENV[kind]}"
        else:
            chosen[kind] = _choose(kind, found[kind], prefer)
            origin[kind] = f"found under {root}" if chosen[kind] else f"{searched} {LOOKS_FOR[kind]}"
    if chosen["dinov2"] is not None and not is_dinov2(chosen["dinov2"]):
        origin["dinov2"] = f"${ENV['dinov2']}={chosen['dinov2']}: not a folder with {LOOKS_FOR['dinov2']}"
        chosen["dinov2"] = None
    if chosen["competition"] is None:
        raise FileNotFoundError(
            f"{root}: no competition data: {searched} {LOOKS_FOR['competition']}; attach the competition "
            f"{competition} to the kernel (it reads {' or '.join(COMPETITIONS.values())}), or set "
            f"{ENV['competition']} to its folder"
        )
    inputs = KaggleInputs(root, chosen["competition"], chosen["offline"], chosen["dinov2"], origin)
    for kind, line in zip(KINDS, inputs.report()):
        (logger.info if getattr(inputs, kind) else logger.warning)("%s", line)
    return inputs
