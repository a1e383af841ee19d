"""A toy matcher: mutual nearest neighbours with Lowe's ratio test, by hand in torch, as a network module of
imc_lib/networks would be written.

tests/test_networks.py and tests/test_app.py register it with one registry entry (`networks.MATCHERS["toy"]`)
and reconstruct a real scene with it from the CLI and from the explorer; nothing else in the library names it.
"""

from __future__ import annotations

import torch

confs = {"toy": {"output": "matches-toy", "model": {"name": "toy", "ratio": 0.85}, "min_matches": 15}}
LABELS = {"toy": "toy nearest neighbours"}


class Matcher(torch.nn.Module):
    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, data: dict) -> dict:
        distances = torch.cdist(data["descriptors0"][0], data["descriptors1"][0])
        two = distances.topk(min(2, distances.shape[1]), dim=1, largest=False)
        best = two.indices[:, 0]
        passes = two.values[:, 0] < self.ratio * two.values[:, -1] if distances.shape[1] > 1 else torch.ones_like(best)
        mutual = distances.argmin(dim=0)[best] == torch.arange(len(best))
        keep = passes.bool() & mutual
        matches0 = torch.where(keep, best, torch.full_like(best, -1))[None]
        scores0 = torch.where(keep, 1 - two.values[:, 0] / two.values[:, -1].clamp(min=1e-9), 0.0)[None]
        return {"matches0": matches0, "matching_scores0": scores0}


def load(features: str, mconf: dict, directory, device: torch.device, no_lightglue: dict) -> torch.nn.Module:
    return Matcher(mconf["ratio"]).eval().to(device)
