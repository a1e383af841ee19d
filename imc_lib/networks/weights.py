"""Where a network's weights come from, and the checks that they are the official ones.

Each loader takes weights from, in order: an explicit directory, `$IMC_WEIGHTS_DIR`, then the
official release URL (cached by torch.hub; needs internet). Files in a weights directory keep
their official names (each network module's `WEIGHTS`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class WeightsError(FileNotFoundError):
    """Weights that cannot be found, downloaded or read, or do not exist: a set-up problem, so the run stops."""


def official(load, what: str, file: str):
    """Run a loader that downloads official weights; a failure says how to work offline."""
    try:
        return load()
    except Exception as err:  # urllib, torch.hub and HTTP errors differ by version
        raise WeightsError(
            f"could not download the official {what} weights ({type(err).__name__}: {err}); offline, set "
            f"IMC_WEIGHTS_DIR (or --weights) to a folder holding {file} (README, 'Weights')"
        ) from err


def weights_dir(explicit: str | Path | None = None) -> Path | None:
    """The local weights directory to use, or None to download from the official URLs."""
    value = explicit or os.environ.get("IMC_WEIGHTS_DIR")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise WeightsError(
            f"{path}: weights directory not found; set IMC_WEIGHTS_DIR (or --weights) to a folder "
            "holding the weights files (README, 'Weights'), or unset it to download the official weights"
        )
    return path


def local_file(directory: Path, file: str) -> Path:
    path = directory / file
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file missing; copy the official {file} there "
            f"(see README, 'Weights') or unset IMC_WEIGHTS_DIR to download it"
        )
    return path


def torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, pickled code: torch's errors differ by version
        raise WeightsError(
            f"{path}: cannot be read as weights ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"replace it with the official {path.name} (README, 'Weights')"
        ) from None


def load_checked(module: torch.nn.Module, state: dict, path: Path, what: str, derived=lambda key: False) -> None:
    """Load `state` into `module`: a key missing (but the `derived` buffers the releases leave out),
    unexpected or of the wrong shape means a broken or wrong file, and raises naming it (a partly
    loaded net would return garbage keypoints, not an error)."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        missing, unexpected = [" ".join(str(err).split())[:300]], []
    missing = [k for k in missing if not derived(k)]
    unexpected = [k for k in unexpected if not derived(k)]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not an official {what} checkpoint (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            f"replace it with the official {path.name} (README, 'Weights')"
        )
