"""Small helpers shared by the stages: device choice, image loading, conf merging (storage: `io`)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger("imc_lib")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present unless `device` says otherwise."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_smoke_test(device: torch.device) -> None:
    """Run one small real CUDA kernel (a matmul) on `device` and wait for it; raises when CUDA cannot run."""
    a = torch.arange(64, dtype=torch.float32, device=device).reshape(8, 8)
    (a @ a).sum().item()
    torch.cuda.synchronize(device)


def usable_device(requested: str | torch.device | None = "auto") -> torch.device:
    """`pick_device(requested)`, or the CPU when CUDA is reported but cannot run a kernel.

    Kaggle's image reports CUDA on GPUs its torch has no kernels for (the P100, sm_60): the first
    real op fails, so every scene would fail. One small kernel at start-up finds out; on failure this
    says so in one loud line and returns cpu, so `pipeline.run` takes its CPU settings.
    """
    device = pick_device(requested)
    if device.type != "cuda":
        return device
    try:
        cuda_smoke_test(device)
    except Exception as err:  # RuntimeError/AcceleratorError "no kernel image is available", AssertionError, ...
        logger.error(
            "!!! CUDA is present but cannot run kernels on %s (%s: %s): running on the CPU with the CPU settings",
            device,
            type(err).__name__,
            str(err).strip().splitlines()[0] if str(err) else "",
        )
        return torch.device("cpu")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """fp16 on CUDA, full precision elsewhere (CPU bf16 is slower and less accurate here)."""
    return torch.float16 if device.type == "cuda" else None


def read_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array on its stored pixel grid.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB. `max_side` lets a
    large JPEG decode at a reduced scale (at least `max_side` on its longest side), so an
    8000x6000 photo never needs its full-size array. The EXIF orientation tag is deliberately
    not applied: IMC ground-truth poses refer to the pixels as stored, as COLMAP reads them.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            if max_side and max(im.size) > 2 * max_side:
                im.draft("RGB", (max_side, max_side))
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(im, dtype=np.float32)
                top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
                im = Image.fromarray((np.clip(array / top, 0, 1) * 255).round().astype(np.uint8))
            array = np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; check the data folder and the image list") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot read image ({err}); remove or replace the file") from err
    if array.size == 0:
        raise ImageError(f"{path}: image has no pixels; remove or replace the file")
    return array


class ImageError(OSError):
    """An image file that exists but cannot be decoded."""


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; check the data folder and the image list") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{path}: cannot read image ({err}); remove or replace the file") from err


def resolve_model(model, load):
    """The network to use: `model` if already loaded, `model()` if it is a loader, else `load()`.

    Stages take a loader so a caller can share one network across scenes yet load it only when
    some scene still has work for it.
    """
    if model is None:
        return load()
    if callable(model) and not isinstance(model, torch.nn.Module):
        return model()
    return model


def merge_conf(default: Mapping, conf: Mapping | None) -> dict:
    """A copy of `default` with `conf` over it, nested dicts merged key by key (LightGlue's
    `{**default_conf, **conf}`, recursively): a partial conf keeps every other key of the default.
    A value that is not a dict on both sides is replaced; neither argument is changed, and the
    result shares no dict or list with them."""
    merged = copy.deepcopy(dict(default))
    for key, value in (conf or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_conf(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_UNSET = object()


def _lookup(conf: Mapping | None, path: str):
    """conf["a"]["b"] for path "a.b", or _UNSET where a key is missing."""
    for key in path.split("."):
        if not isinstance(conf, Mapping) or key not in conf:
            return _UNSET
        conf = conf[key]
    return conf


def named_default(confs: Mapping[str, Mapping], conf: Mapping | None, keys: Sequence[str]) -> Mapping:
    """The entry of a stage's `confs` that a partial `conf` names: the one agreeing with the most
    of the `keys` (dotted paths, e.g. "model.name") that `conf` sets, the earlier on a tie, so the
    first entry (the stage's default) when it sets none of them or none agrees."""
    given = {k: v for k in keys if (v := _lookup(conf, k)) is not _UNSET}
    return max(confs.values(), key=lambda c: sum(_lookup(c, k) == v for k, v in given.items()))


def full_conf(confs: Mapping[str, Mapping], conf: Mapping | None, keys: Sequence[str] = ()) -> dict:
    """`conf` merged over the entry of `confs` it names by `keys` (named_default): what each stage's
    `main` runs with, so a partial conf is not a KeyError."""
    return merge_conf(named_default(confs, conf, keys), conf)
