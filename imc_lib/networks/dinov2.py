"""DINOv2 (transformers) for the pairs stage's retrieval: a local folder, the Kaggle model input, or the hub."""

from __future__ import annotations

import os
from pathlib import Path

DINOV2_KAGGLE_DIR = Path("/kaggle/input/dinov2/pytorch/base/1")
DINOV2_HUB_ID = "facebook/dinov2-base"


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
