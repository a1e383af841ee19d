"""Weight loading: one function per network.

Each loader takes weights from, in order: an explicit directory, `$IMC_WEIGHTS_DIR`, then the
official release URL (cached by torch.hub; needs internet). Files in a weights directory keep
their official names (see `WEIGHT_FILES`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import kornia.feature as KF
import torch

logger = logging.getLogger(__name__)

WEIGHT_FILES = {
    "aliked-n16": "aliked-n16.pth",
    "aliked-n16rot": "aliked-n16rot.pth",
    "aliked-t16": "aliked-t16.pth",
    "aliked-n32": "aliked-n32.pth",
    "disk": "disk-depth-save.pth",
    "xfeat": "xfeat.pt",
    "lightglue-aliked": "aliked_lightglue.pth",
    "lightglue-disk": "disk_lightglue.pth",
    "lightglue-xfeat": "xfeat-lighterglue.pt",  # LighterGlue: the small LightGlue trained for XFeat
}
# Features without LightGlue weights anywhere, and why: they pair with mutual nearest neighbours.
NO_LIGHTGLUE = {"aliked-t16": "its 64-d descriptors fit no released LightGlue (ALIKED's takes 128-d)"}
DINOV2_KAGGLE_DIR = Path("/kaggle/input/dinov2/pytorch/base/1")
DINOV2_HUB_ID = "facebook/dinov2-base"


class WeightsError(FileNotFoundError):
    """Weights that cannot be found, downloaded or read, or do not exist: a set-up problem, so the run stops."""


def _official(load, what: str, file: str):
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
            f"holding {sorted(set(WEIGHT_FILES.values()))}, or unset it to download the official weights"
        )
    return path


def _local_file(directory: Path, key: str) -> Path:
    path = directory / WEIGHT_FILES[key]
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file missing; copy the official {WEIGHT_FILES[key]} there "
            f"(see README, 'Weights') or unset IMC_WEIGHTS_DIR to download it"
        )
    return path


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, pickled code: torch's errors differ by version
        raise WeightsError(
            f"{path}: cannot be read as weights ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"replace it with the official {path.name} (README, 'Weights')"
        ) from None


def _load_checked(module: torch.nn.Module, state: dict, path: Path, what: str, derived=lambda key: False) -> None:
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


def load_aliked(
    model_name: str = "aliked-n16",
    max_num_keypoints: int = 4096,
    detection_threshold: float = 0.01,
    nms_radius: int = 2,
    directory: str | Path | None = None,
) -> KF.ALIKED:
    """kornia ALIKED with official weights, in eval mode."""
    local = weights_dir(directory)
    kwargs = dict(max_num_keypoints=max_num_keypoints, detection_threshold=detection_threshold, nms_radius=nms_radius)
    if local is None:
        return _official(lambda: KF.ALIKED.from_pretrained(model_name, **kwargs), model_name, WEIGHT_FILES[model_name])
    model = KF.ALIKED(model_name=model_name, **kwargs)
    path = _local_file(local, model_name)
    # The checkpoints lack only the derived buffer dkd.hw_grid.
    _load_checked(model, _torch_load(path), path, model_name, derived=lambda k: k.endswith("hw_grid"))
    return model.eval()


def load_disk(directory: str | Path | None = None) -> KF.DISK:
    """kornia DISK (depth-trained) with official weights, in eval mode."""
    local = weights_dir(directory)
    if local is None:
        return _official(lambda: KF.DISK.from_pretrained("depth"), "DISK", WEIGHT_FILES["disk"])
    model = KF.DISK()
    path = _local_file(local, "disk")
    state = _torch_load(path)
    _load_checked(model, state.get("extractor", {}) if isinstance(state, dict) else {}, path, "DISK")
    return model.eval()


def load_xfeat(
    max_num_keypoints: int = 4096, detection_threshold: float = 0.05, directory: str | Path | None = None
) -> KF.XFeat:
    """kornia XFeat with official weights, in eval mode (loaded strictly: the file is the whole net)."""
    local = weights_dir(directory)
    if local is None:
        return _official(
            lambda: KF.XFeat.from_pretrained(max_num_keypoints, detection_threshold), "XFeat", WEIGHT_FILES["xfeat"]
        )
    model = KF.XFeat(top_k=max_num_keypoints, detection_threshold=detection_threshold)
    path = _local_file(local, "xfeat")
    _load_checked(model.net, _torch_load(path), path, "XFeat")
    return model.eval()


def load_lightglue(features: str, directory: str | Path | None = None, **conf) -> KF.LightGlue:
    """kornia LightGlue trained for `features` ('aliked', 'disk' or 'xfeat': LighterGlue), in eval mode.

    The settings kornia fixes for those features (LighterGlue: no early stop, point pruning at 0.95)
    win over `conf`, from a local folder as from the official URL. Features without LightGlue
    weights (NO_LIGHTGLUE) raise WeightsError: the run stops rather than match otherwise.
    """
    if f"lightglue-{features}" not in WEIGHT_FILES:
        why = NO_LIGHTGLUE.get(features, "no LightGlue was trained for them")
        raise WeightsError(f"no LightGlue weights for {features} features: {why}; match them with --matcher mnn")
    local = weights_dir(directory)
    if local is None:
        return _official(
            lambda: KF.LightGlue(features, **conf).eval(),
            f"LightGlue-{features}",
            WEIGHT_FILES[f"lightglue-{features}"],
        )
    model = KF.LightGlue(None, **{**conf, **KF.LightGlue.features[features], "weights": None})
    state = _torch_load(_local_file(local, f"lightglue-{features}"))
    if features == "xfeat":  # the release nests the matcher under `matcher.` beside an `extractor.` copy of XFeat
        state = {k.removeprefix("matcher."): v for k, v in state.items() if not k.startswith("extractor.")}
    # Official release files name layers `self_attn.i` / `cross_attn.i`; kornia nests them.
    for i in range(model.conf.n_layers):
        state = {
            k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.").replace(
                f"cross_attn.{i}.", f"transformers.{i}.cross_attn."
            ): v
            for k, v in state.items()
        }
    path = local / WEIGHT_FILES[f"lightglue-{features}"]
    # A derived buffer; the DISK release also carries an unused constant `log_assignment.i.r`.
    skip = re.compile(r"confidence_thresholds|log_assignment\.\d+\.r")
    _load_checked(model, state, path, f"LightGlue-{features}", derived=skip.fullmatch)
    return model.eval()


def local_dinov2() -> Path | None:
    """A DINOv2 folder on this machine without asking the hub: $IMC_DINOV2, else the Kaggle input; None if neither."""
    if os.environ.get("IMC_DINOV2"):
        return Path(os.environ["IMC_DINOV2"])
    return DINOV2_KAGGLE_DIR if (DINOV2_KAGGLE_DIR / "config.json").is_file() else None


def load_dinov2(source: str | Path | None = None):
    """(image processor, Dinov2Model) from a local directory, the Kaggle model input, or a hub id.

    `source` may be a directory holding `config.json` + weights (e.g. the Kaggle model
    `metaresearch/dinov2/pyTorch/base/1`, mounted at /kaggle/input/dinov2/pytorch/base/1) or a hub id
    such as 'facebook/dinov2-base' (needs internet). Default: $IMC_DINOV2, then the Kaggle path
    when it exists, then the hub id.
    """
    from transformers import AutoImageProcessor, Dinov2Model

    source = (
        source or os.environ.get("IMC_DINOV2") or (DINOV2_KAGGLE_DIR if DINOV2_KAGGLE_DIR.is_dir() else DINOV2_HUB_ID)
    )
    looks_local = isinstance(source, Path) or str(source).startswith((".", "/", "~")) or Path(str(source)).exists()
    if looks_local:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: no DINOv2 weights (config.json + model weights); download them with "
                f"`huggingface-cli download {DINOV2_HUB_ID} --local-dir {path}`, attach the Kaggle model "
                f"metaresearch/dinov2 (PyTorch, base), or use exhaustive pairs (--pairs exhaustive)"
            )
        source = str(path)
    processor = AutoImageProcessor.from_pretrained(source)
    model = Dinov2Model.from_pretrained(source).eval()
    return processor, model
