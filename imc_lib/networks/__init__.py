"""The networks: a registry of extractors and matchers, one module each, and the run's cache of them.

An extractor module (`aliked`, `disk`, `xfeat`: the models are hloc's `extractors/` and LightGlue's
wrappers) holds everything the pipeline needs to know of it:
    confs           its named features confs ({"output", "model": {"name": <registry key>, ...}, "resize_to"})
    PIPELINES       named pipeline configs it brings: {name: {"features": conf name, "matching": matcher}}
    WEIGHTS         {weights key: file name in IMC_WEIGHTS_DIR}
    LIGHTGLUE       the LightGlue weights its descriptors fit; NO_LIGHTGLUE {variant: why none fits}
    SIDE_MULTIPLE   what the image sides are rounded down to; HALF: whether fp16 is safe on CUDA
    lightglue(mconf) -> the LightGlue key of a conf (or the variant without one)
    load(mconf, weights_dir) -> the network, in eval mode
    detect(model, mconf, tensor) -> (keypoints in the tensor's pixels, descriptors, scores)
A matcher module (`lightglue`, `mnn`) holds WEIGHTS and `load(features, mconf, weights_dir, device, no_lightglue)`.

Adding a network is one module and one entry in EXTRACTORS or MATCHERS (a module path): the
features, matching and pipeline confs read the registry (`Registered`), nothing else names it.
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


def _module(registry: dict[str, str], name: str, what: str) -> ModuleType:
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    return importlib.import_module(registry[name])


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
                merged.update(getattr(importlib.import_module(path), self.attr, {}))
        return merged

    def __getitem__(self, key):
        return self._merged()[key]

    def __iter__(self) -> Iterator:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())


WEIGHT_FILES = Registered("WEIGHTS", EXTRACTORS, MATCHERS)  # weights key -> file name, every network's
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
