"""The networks: a registry of extractors and matchers, one module each, and the run's cache of them.

An extractor module (`aliked`, `disk`, `xfeat`: the models are hloc's `extractors/` and LightGlue's
wrappers) holds everything the pipeline needs to know of it (EXTRACTOR_PARTS, checked when it is first
imported through the registry):
    confs           its named features confs ({"output", "model": {"name": <registry key>, ...}, "resize_to"})
    SIDE_MULTIPLE   what the image sides are rounded down to; HALF: whether fp16 is safe on CUDA
    lightglue(mconf) -> the LightGlue key of a conf (or the variant without one)
    load(mconf, weights_dir) -> the network, in eval mode
    detect(model, mconf, tensor) -> (keypoints in the tensor's pixels, descriptors, scores)
and, where it has them: PIPELINES (named pipeline configs it brings: {name: {"features", "matching"}}),
WEIGHTS ({weights key: file name in IMC_WEIGHTS_DIR}), NO_LIGHTGLUE ({variant: why no LightGlue fits}).

A matcher module (`lightglue`, `mnn`) holds (MATCHER_PARTS):
    confs           its named matching confs ({"output", "model": {"name": <registry key>, ...}, "min_matches"})
    LABELS          {conf name: what the explorer calls it}
    load(features, mconf, weights_dir, device, no_lightglue) -> the network, in eval mode, whose
                    forward(data) keeps hloc's matcher contract (MATCHER)
and WEIGHTS where it has weights.

Adding a network is one module and one entry in EXTRACTORS or MATCHERS (a module path; `register` checks it
at once): the features, matching and pipeline confs and the explorer's labels read the registry
(`Registered`), nothing else names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import torch

from ..utils import pick_device
from .dinov2 import DINOV2_HUB_ID, DINOV2_KAGGLE_DIR, load_dinov2, local_dinov2  # noqa: F401
from .weights import WeightsError, weights_dir  # noqa: F401

EXTRACTORS = {"aliked": f"{__name__}.aliked", "disk": f"{__name__}.disk", "xfeat": f"{__name__}.xfeat"}
MATCHERS = {"lightglue": f"{__name__}.lightglue", "mnn": f"{__name__}.mnn"}


# What a network module must hold, by the registry it is in: (name, what it is).
EXTRACTOR_PARTS = (
    ("confs", "a dict of named features confs"),
    ("SIDE_MULTIPLE", "the multiple image sides are rounded down to"),
    ("HALF", "whether fp16 is safe on CUDA"),
    ("lightglue", "a function: features conf -> LightGlue key"),
    ("load", "a function: (model conf, weights dir) -> network"),
    ("detect", "a function: (network, model conf, image tensor) -> (keypoints, descriptors, scores)"),
)
MATCHER_PARTS = (
    ("confs", "a dict of named matching confs"),
    ("LABELS", "a dict: conf name -> label"),
    ("load", "a function: (features, model conf, weights dir, device, no_lightglue) -> network"),
)
# The matchers' contract (hloc's): forward(data) -> {"matches0": (1, N0) long, the index in image 1 of each
# keypoint's match or -1, "matching_scores0": (1, N0) float, 0 where unmatched}; data holds, for i in 0, 1,
# "keypoints{i}" (1, Ni, 2) pixels, "descriptors{i}" (1, Ni, D), "image_size{i}" (1, 2) as (width, height).
MATCHER = ("matches0", "matching_scores0")


def check(module: ModuleType, parts: tuple) -> ModuleType:
    """`module`, or an ImportError naming the first part of `parts` it lacks (a network module half written
    fails when registered or first imported, not at the first photo)."""
    for name, what in parts:
        if not hasattr(module, name):
            raise ImportError(f"{module.__name__} ({module.__file__}): a network module needs `{name}` ({what})")
    return module


def _parts(registry: dict[str, str]) -> tuple:
    return MATCHER_PARTS if registry is MATCHERS else EXTRACTOR_PARTS


def register(registry: dict[str, str], name: str, path: str) -> ModuleType:
    """Add the module at `path` to EXTRACTORS or MATCHERS as `name`, once it is checked (`check`)."""
    module = check(importlib.import_module(path), _parts(registry))
    registry[name] = path
    return module


def _module(registry: dict[str, str], name: str, what: str) -> ModuleType:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    return check(importlib.import_module(registry[name]), _parts(registry))


def extractor(name: str) -> ModuleType:
    """The extractor module registered as `name` (a features conf's model.name)."""
    return _module(EXTRACTORS, name, "feature model")


def matcher(name: str) -> ModuleType:
    return _module(MATCHERS, name, "matcher")


class Registered(Mapping):
    """One dict attribute of every module of `registries`, merged and read live: a network registered
    later (a test's toy extractor) is seen without touching the module that holds this view."""

    def __init__(self, attr: str, *registries: dict[str, str]):
        self.attr, self.registries = attr, registries

    def _merged(self) -> dict:
        merged = {}
        for registry in self.registries:
            for path in registry.values():
                merged.update(getattr(check(importlib.import_module(path), _parts(registry)), self.attr, {}))
        return merged

    def __getitem__(self, key):
        return self._merged()[key]

    def __iter__(self) -> Iterator:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())


WEIGHT_FILES = Registered("WEIGHTS", EXTRACTORS, MATCHERS)  # weights key -> file name, every network's
MATCHER_LABELS = Registered("LABELS", MATCHERS)  # matching conf name -> what the explorer calls it
NO_LIGHTGLUE = Registered("NO_LIGHTGLUE", EXTRACTORS)  # features variant -> why no LightGlue fits it


def lightglue_key(fconf: dict) -> str:
    """Which LightGlue weights fit these features, or the name of a variant that has none."""
    return extractor(fconf["model"]["name"]).lightglue(fconf["model"])


def load_extractor(fconf: dict, weights: str | Path | None = None, device=None) -> torch.nn.Module:
    """The extractor of a features conf, on `device`."""
    return extractor(fconf["model"]["name"]).load(fconf["model"], weights).to(pick_device(device))


def load_matcher(features: str, mconf: dict, weights: str | Path | None = None, device=None) -> torch.nn.Module:
    """The matcher of a matching conf for `features` (a `lightglue_key`), on `device`. Features with no
    LightGlue and the lightglue matcher: WeightsError naming `--matcher mnn`."""
    model = dict(mconf["model"])
    name = model.get("name", "lightglue")
    return matcher(name).load(features, model, weights, pick_device(device), dict(NO_LIGHTGLUE))


class Networks:
    """Each network of a run, loaded at most once and only when some stage still needs it; `cache`
    is a dict the caller may keep between runs so the next run reuses what this one loaded."""

    def __init__(self, weights, device: torch.device, cache: dict | None = None):
        self.weights, self.device = weights, device
        self.cache = {} if cache is None else cache

    def _once(self, *key, load):
        key = (*key, str(self.weights), str(self.device))
        return lambda: self.cache[key] if key in self.cache else self.cache.setdefault(key, load())

    def extractor(self, fconf: dict):
        return self._once(
            "features", repr(fconf["model"]), load=lambda: load_extractor(fconf, self.weights, self.device)
        )

    def matcher(self, fconf: dict, mconf: dict):
        name = lightglue_key(fconf)
        return self._once("matching", name, repr(mconf["model"]),
                          load=lambda: load_matcher(name, mconf, self.weights, self.device))  # fmt: skip

    def retrieval(self, pconf: dict):
        source = str(pconf.get("model") or local_dinov2())
        if ("pairs", source) in self.cache:
            return self.cache[("pairs", source)]
        return lambda: self.cache.setdefault(("pairs", source), load_dinov2(pconf.get("model")))
