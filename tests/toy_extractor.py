"""A toy extractor: kornia's SIFT (no weights), as a network module of imc_lib/networks would be written.

tests/test_networks.py registers it with one registry entry (`networks.EXTRACTORS["toy"]`) and runs a
real scene with it; nothing else in the library names it.
"""

from __future__ import annotations

import kornia
import kornia.feature as KF
import torch

WEIGHTS: dict[str, str] = {}
LIGHTGLUE = None
NO_LIGHTGLUE = {"toy": "a toy: SIFT's descriptors fit no released LightGlue"}
SIDE_MULTIPLE = 1
HALF = False

confs = {"toy": {"output": "feats-toy", "model": {"name": "toy", "max_num_keypoints": 1024}, "resize_to": 640}}
PIPELINES = {"toy": {"features": "toy", "matching": "mnn"}}


def lightglue(mconf: dict) -> str:
    return "toy"


def load(mconf: dict, directory=None) -> torch.nn.Module:
    return KF.SIFTFeature(num_features=mconf["max_num_keypoints"], upright=True).eval()


def detect(model: torch.nn.Module, mconf: dict, tensor: torch.Tensor) -> tuple:
    lafs, responses, descriptors = model(kornia.color.rgb_to_grayscale(tensor))
    return KF.get_laf_center(lafs)[0], descriptors[0], responses[0]
