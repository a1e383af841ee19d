"""Which quarter turn makes each photo upright-consistent with the others -> `orient-*.csv`.

ALIKED and DISK are not rotation invariant: a photo taken sideways matches its upright neighbours
poorly. This stage matches cheap low-resolution features of each pair as stored, then, for pairs
across the groups that confident matches link, at 90, 180 and 270 degrees too; it keeps each
pair's best relative turn, chains those turns along a maximum spanning tree of the match graph,
and shifts each connected group so that most of its photos keep their stored orientation.
The features stage then extracts each photo turned by its quarter turns and maps the keypoints
back to the stored pixel grid, so nothing downstream changes.

Output: a CSV `image_name,quarter_turns,support` (turns counter-clockwise, as `np.rot90`;
support = matches on the tree edge that fixed it, 0 for the root or an unconnected photo), and
beside it `*-overlap.csv`: each pair's low-resolution matches at those turns, which the pipeline
can use to drop non-overlapping pairs before full matching (`prefilter_min_matches`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import features, matching
from .pairs import read_pairs
from .utils import ImageError, atomic_file, pick_device, read_image, resolve_model

logger = logging.getLogger(__name__)

confs = {
    "upright": {
        "output": "orient-aliked-512",
        "features": {
            "output": "orient-features",
            "model": {"name": "aliked", "model_name": "aliked-n16", "max_num_keypoints": 512,
                      "detection_threshold": 0.01},
            "resize_to": 512,
        },
        "matching": {"model": {"filter_threshold": 0.1, "depth_confidence": 0.95, "width_confidence": 0.99}},
        # Pairs matching this well as stored link their photos without trying other turns.
        "accept_upright_matches": 60,
        # Fewer matches than this at the best turn: the pair says nothing about orientation.
        "min_matches": 25,
        # Pairs with fewer low-resolution matches skip full matching (None: match every pair).
        "prefilter_min_matches": None,
    },
}


def relative_turn(counts: list[int]) -> tuple[int, int]:
    """(turns of the second image that best match the first, matches there) from per-turn counts."""
    best = int(np.argmax(counts))
    return best, int(counts[best])


def solve(names: list[str], edges: dict[tuple[str, str], tuple[int, int]], min_matches: int) -> dict[str, tuple[int, int]]:
    """Absolute quarter turns from pairwise ones along a maximum spanning tree of match counts.

    `edges[(a, b)] = (r, n)`: turning b by r quarter turns matches a (unturned) with n matches.
    Returns name -> (turns, support), each connected component shifted so that most of its photos
    keep turns = 0.
    """
    graph: dict[str, list[tuple[int, str, int]]] = {n: [] for n in names}
    for (a, b), (r, n) in edges.items():
        if n >= min_matches:
            graph[a].append((n, b, r))
            graph[b].append((n, a, (-r) % 4))
    turns: dict[str, tuple[int, int]] = {}
    # Prim's algorithm from the best-connected unvisited photo, per connected component.
    for root in sorted(names, key=lambda n: -sum(e[0] for e in graph[n])):
        if root in turns:
            continue
        component = {root: (0, 0)}
        frontier = [(n, root, b, r) for n, b, r in graph[root]]
        while frontier:
            frontier.sort(key=lambda e: e[0])
            n, a, b, r = frontier.pop()
            if b in component:
                continue
            component[b] = ((component[a][0] + r) % 4, n)
            frontier.extend((n2, b, c, r2) for n2, c, r2 in graph[b] if c not in component)
        # Turning a whole component changes nothing for matching within it, and nothing relates it
        # to other components: pick the shift that leaves most of its photos as stored.
        shift = int(np.argmax(np.bincount([(-t) % 4 for t, _ in component.values()], minlength=4)))
        turns.update({n: ((t + shift) % 4, s) for n, (t, s) in component.items()})
    return turns


class _UnionFind:
    def __init__(self, items):
        self.parent = {i: i for i in items}

    def find(self, item):
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


class _TurnedFeatures:
    """Low-resolution features of each photo at each quarter turn, computed on first use."""

    def __init__(self, conf: dict, image_dir: Path, extractor, device: torch.device):
        self.conf, self.image_dir, self.extractor, self.device = conf, Path(image_dir), extractor, device
        self.cache: dict[tuple[str, int], dict] = {}

    def __call__(self, name: str, turns: int) -> dict:
        if (name, turns) not in self.cache:
            try:
                image = read_image(self.image_dir / name, max_side=self.conf["resize_to"])
            except (ImageError, FileNotFoundError):  # the features stage reports it
                self.cache[(name, turns)] = {"keypoints": np.zeros((0, 2), np.float32)}
                return self.cache[(name, turns)]
            image = np.ascontiguousarray(np.rot90(image, turns))
            self.cache[(name, turns)] = features.extract(self.extractor(), self.conf, image, self.device)
        return self.cache[(name, turns)]


def main(conf: dict, image_dir: Path, image_names: list[str], pairs_path: Path, orientation_path: Path,
         device=None, overwrite: bool = False, extractor=None, matcher=None, weights=None) -> Path:
    """Estimate every photo's quarter turns from the pairs of `pairs_path`; reuse an existing file.

    `extractor` / `matcher`: loaded ALIKED / LightGlue-ALIKED or zero-argument loaders.
    """
    orientation_path = Path(orientation_path)
    if orientation_path.exists() and not overwrite:
        logger.info("%s: orientations exist, reusing", orientation_path)
        return orientation_path
    device = pick_device(device)
    extractor_once = functools.cache(
        lambda: resolve_model(extractor, lambda: features.load_model(conf["features"], weights, device)))
    matcher_once = functools.cache(
        lambda: resolve_model(matcher, lambda: matching.load_model("aliked", conf["matching"], weights, device)))
    feats = _TurnedFeatures(conf["features"], image_dir, extractor_once, device)

    counts: dict[tuple[str, str, int], int] = {}

    def count(a: str, b: str, k: int) -> int:
        """Matches of a as stored with b turned by k quarter turns."""
        if (a, b, k) not in counts:
            counts[(a, b, k)] = len(matching.match_pair(matcher_once(), feats(a, 0), feats(b, k), device)[0])
        return counts[(a, b, k)]

    # Pass 1, every pair as stored: confident matches link photos into groups. Pass 2, the other
    # turns, for every pair across groups (few, unless many photos are turned). Pairs within a
    # group that matched weakly as stored were not tried turned and say nothing.
    pairs = read_pairs(pairs_path)
    stored = {(a, b): count(a, b, 0) for a, b in tqdm(pairs, desc="orientation", unit="pair")}
    group = _UnionFind(image_names)
    for (a, b), n in stored.items():
        if n >= conf["accept_upright_matches"]:
            group.union(a, b)
    edges = {p: (0, n) for p, n in stored.items() if n >= conf["accept_upright_matches"]}
    across = [(a, b) for a, b in pairs if group.find(a) != group.find(b)]
    for a, b in tqdm(across, desc="orientation, turned", unit="pair", disable=not across):
        edges[(a, b)] = relative_turn([stored[(a, b)], *(count(a, b, k) for k in (1, 2, 3))])
    result = solve(list(image_names), edges, conf["min_matches"])
    # Each pair's low-resolution matches once both photos are turned: lets the pipeline drop
    # pairs that do not overlap before full matching.
    overlap = pd.DataFrame([(a, b, count(a, b, (result[b][0] - result[a][0]) % 4)) for a, b in pairs],
                           columns=["name0", "name1", "matches"])
    _write_csv(overlap, overlap_path(orientation_path))
    table = pd.DataFrame([(n, *result[n]) for n in image_names], columns=["image_name", "quarter_turns", "support"])
    turned = table[table["quarter_turns"] != 0]
    logger.info("%s: %d of %d photos turned (%s)", orientation_path, len(turned), len(table),
                ", ".join(f"{n}:{90 * t}" for n, t in zip(turned["image_name"], turned["quarter_turns"])) or "none")
    _write_csv(table, orientation_path)  # last: its existence marks the stage done
    return orientation_path


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_file(path, newline="") as handle:
        table.to_csv(handle, index=False)


def overlap_path(orientation_path: Path) -> Path:
    """The per-pair low-resolution match counts written beside the orientations."""
    return Path(orientation_path).with_name(Path(orientation_path).stem + "-overlap.csv")


def overlapping_pairs(orientation_path: Path, min_matches: int) -> list[tuple[str, str]]:
    """The pairs with at least `min_matches` low-resolution matches at their photos' turns."""
    table = pd.read_csv(overlap_path(orientation_path), dtype={"name0": str, "name1": str})
    keep = table[table["matches"] >= min_matches]
    return list(zip(keep["name0"], keep["name1"]))


def read_orientations(orientation_path: Path) -> dict[str, int]:
    """image name -> quarter turns (counter-clockwise) to apply before extracting features."""
    orientation_path = Path(orientation_path)
    if not orientation_path.exists():
        raise FileNotFoundError(f"{orientation_path}: no orientations; run the orientation stage first")
    table = pd.read_csv(orientation_path, dtype={"image_name": str})
    return dict(zip(table["image_name"], table["quarter_turns"].astype(int)))

