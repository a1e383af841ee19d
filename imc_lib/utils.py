"""Small helpers shared by the stages: device choice, image loading, HDF5 names."""

from __future__ import annotations

import logging
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


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """fp16 on CUDA, full precision elsewhere (CPU bf16 is slower and less accurate here)."""
    return torch.float16 if device.type == "cuda" else None


def read_image(path: Path) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array on its stored pixel grid.

    The EXIF orientation tag is deliberately not applied: IMC ground-truth poses refer to the
    pixels as stored, as COLMAP reads them.
    """
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; check the data folder and the image list") from None
    except OSError as err:
        raise OSError(f"{path}: cannot read image ({err}); remove or replace the file") from err


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels."""
    with Image.open(path) as im:
        return im.size


def pair_key(name0: str, name1: str) -> str:
    """HDF5 dataset name for a pair; '/' in image names would create nested groups."""
    return f"{name0.replace('/', '-')}/{name1.replace('/', '-')}"


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
