"""Mutual nearest neighbours passing a ratio test (kornia's `DescriptorMatcher("smnn")`): no weights,
milliseconds per pair; any features."""

from __future__ import annotations

import kornia
import torch

WEIGHTS: dict[str, str] = {}


def load(features: str, mconf: dict, directory, device: torch.device, no_lightglue: dict) -> torch.nn.Module:
    return kornia.feature.DescriptorMatcher("smnn", th=mconf["ratio"]).to(device)
