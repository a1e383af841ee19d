"""LightGlue (kornia) for ALIKED, DISK and XFeat features (LighterGlue), official weights."""

from __future__ import annotations

import re
from pathlib import Path

import kornia.feature as KF
import torch

from .weights import WeightsError, load_checked, local_file, official, torch_load, weights_dir

confs = {
    "lightglue": {
        "output": "matches-lightglue",
        "model": {"name": "lightglue", "filter_threshold": 0.1, "depth_confidence": 0.95, "width_confidence": 0.99},
        "min_matches": 15,
    },
}
LABELS = {"lightglue": "LightGlue"}
WEIGHTS = {
    "lightglue-aliked": "aliked_lightglue.pth",
    "lightglue-disk": "disk_lightglue.pth",
    "lightglue-xfeat": "xfeat-lighterglue.pt",  # LighterGlue: the small LightGlue trained for XFeat
}


class Matcher(torch.nn.Module):
    """kornia's LightGlue in the matchers' contract (networks.MATCHER)."""

    def __init__(self, net: KF.LightGlue):
        super().__init__()
        self.net = net

    def forward(self, data: dict) -> dict:
        keys = ("keypoints", "descriptors", "image_size")
        out = self.net({f"image{i}": {k: data[f"{k}{i}"] for k in keys} for i in (0, 1)})
        return {"matches0": out["matches0"], "matching_scores0": out["matching_scores0"]}


def load(features: str, mconf: dict, directory, device: torch.device, no_lightglue: dict) -> torch.nn.Module:
    """LightGlue trained for `features` (a `lightglue()` key of the extractor), mixed precision on CUDA."""
    conf = {k: v for k, v in mconf.items() if k != "name"}
    net = load_lightglue(features, directory, no_lightglue, mp=device.type == "cuda", **conf)
    return Matcher(net).eval().to(device)


def load_lightglue(
    features: str, directory: str | Path | None = None, no_lightglue: dict | None = None, **conf
) -> KF.LightGlue:
    """kornia LightGlue trained for `features` ('aliked', 'disk' or 'xfeat': LighterGlue), in eval mode.

    The settings kornia fixes for those features (LighterGlue: no early stop, point pruning at 0.95)
    win over `conf`, from a local folder as from the official URL. Features without LightGlue
    weights (`no_lightglue`: features -> why) raise WeightsError: the run stops rather than match otherwise.
    """
    no_lightglue = no_lightglue or {}
    if f"lightglue-{features}" not in WEIGHTS:
        why = no_lightglue.get(features, "no LightGlue was trained for them")
        raise WeightsError(f"no LightGlue weights for {features} features: {why}; match them with --matcher mnn")
    local = weights_dir(directory)
    if local is None:
        return official(
            lambda: KF.LightGlue(features, **conf).eval(),
            f"LightGlue-{features}",
            WEIGHTS[f"lightglue-{features}"],
        )
    model = KF.LightGlue(None, **{**conf, **KF.LightGlue.features[features], "weights": None})
    state = torch_load(local_file(local, WEIGHTS[f"lightglue-{features}"]))
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
    path = local / WEIGHTS[f"lightglue-{features}"]
    # A derived buffer; the DISK release also carries an unused constant `log_assignment.i.r`.
    skip = re.compile(r"confidence_thresholds|log_assignment\.\d+\.r")
    load_checked(model, state, path, f"LightGlue-{features}", derived=skip.fullmatch)
    return model.eval()
