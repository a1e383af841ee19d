"""Mutual nearest neighbours passing a ratio test (kornia's `DescriptorMatcher("smnn")`): no weights,
milliseconds per pair; any features. Also `mnn+lightglue`: these matches, then LightGlue again for the
photos they tie weakly (the matching stage's `rescue`)."""

from __future__ import annotations

import kornia
import torch

from .lightglue import confs as lightglue_confs

WEIGHTS: dict[str, str] = {}

confs = {
    "mnn": {
        "output": "matches-mnn",
        # ratio: best / second-best descriptor distance must be below it (Lowe's test, mutual check)
        "model": {"name": "mnn", "ratio": 0.9},
        "min_matches": 15,
    },
}
# Mutual nearest neighbours, then LightGlue for the photos they tie weakly (`rescue`): a photo with
# fewer than `min_strong_pairs` pairs of `strong` matches or more has its weaker pairs matched again
# by LightGlue, and each such pair keeps whichever matcher found more. Low-texture and compressed
# photos (white walls: 200-700 ALIKED keypoints) are where nearest neighbours fail and LightGlue
# does not (imc-real office frames 48/51: 3 -> 45 matches); elsewhere no photo is weak and it costs nothing.
confs["mnn+lightglue"] = {
    **confs["mnn"],
    "output": "matches-mnn-rescued",
    "rescue": {"model": lightglue_confs["lightglue"]["model"], "strong": 50, "min_strong_pairs": 3},
}
LABELS = {"mnn": "mutual nearest neighbours", "mnn+lightglue": "nearest neighbours, LightGlue for weakly tied photos"}


class NearestNeighbours(torch.nn.Module):
    """kornia's mutual nearest neighbours with a ratio test, in the matchers' contract (networks.MATCHER):
    a match's score is 1 - its distance ratio."""

    def __init__(self, ratio: float):
        super().__init__()
        self.matcher = kornia.feature.DescriptorMatcher("smnn", th=ratio)

    def forward(self, data: dict) -> dict:
        desc0, desc1 = data["descriptors0"][0], data["descriptors1"][0]
        ratios, idxs = self.matcher(desc0, desc1)
        matches0 = torch.full((1, len(desc0)), -1, dtype=torch.long, device=desc0.device)
        scores0 = torch.zeros((1, len(desc0)), dtype=torch.float32, device=desc0.device)
        idxs = idxs.long().reshape(-1, 2)
        matches0[0, idxs[:, 0]] = idxs[:, 1]
        scores0[0, idxs[:, 0]] = 1 - ratios.float().reshape(-1)
        return {"matches0": matches0, "matching_scores0": scores0}


def load(features: str, mconf: dict, directory, device: torch.device, no_lightglue: dict) -> torch.nn.Module:
    return NearestNeighbours(mconf["ratio"]).eval().to(device)
