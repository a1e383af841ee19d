"""Which quarter turn makes each photo upright-consistent with the others -> `orient-*.csv`.

ALIKED and DISK are not rotation invariant: a photo taken sideways matches its upright neighbours
poorly. This stage matches cheap low-resolution features of each pair as stored, then, for pairs
across the groups that confident matches link, at 90, 180 and 270 degrees too; it keeps each
pair's best relative turn, chains those turns along a maximum spanning tree of the match graph,
and shifts each connected group so that most of its photos keep their stored orientation.
The features stage then extracts each photo turned by its quarter turns and maps the keypoints
back to the stored pixel grid, so nothing downstream changes.

Two configs: `upright` extracts its own 512 px features and matches them with LightGlue (a
separate, cheap pass before full-resolution features: the GPU default); `mnn` has no features of
its own: it reads each photo's as-stored features from the main features file (the pipeline
extracts them first) and matches them by mutual nearest neighbours, so on upright photos it costs
milliseconds per pair; only photos that need trying turned are extracted again (the CPU default).

Output: a CSV `image_name,quarter_turns,support` (turns counter-clockwise, as `np.rot90`;
support = matches on the tree edge that fixed it, 0 for the root or an unconnected photo), and,
when `prefilter_min_matches` is set, beside it `*-overlap.csv`: each pair's low-resolution matches
at those turns, which the pipeline uses to drop non-overlapping pairs before full matching.
The `mnn` config also writes, in its own files beside the CSV, the features it extracted at turned
photos' final turns (`turned_path`) and every pair's matches as stored (`matches_path`): the
features and matching stages copy those whose photos end upright instead of computing them again.

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import collections
import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.cluster.hierarchy import DisjointSet

from .. import networks
from ..execution.progress import bar as progress_bar
from ..storage import io
from ..utils import ImageError, full_conf, image_size, pick_device, read_image, resolve_network
from . import features, matching

logger = logging.getLogger(__name__)

confs = {
    "upright": {
        "output": "orient-aliked-512",
        "features": {
            "output": "orient-features",
            "model": {
                "name": "aliked",
                "model_name": "aliked-n16",
                "max_num_keypoints": 512,
                "detection_threshold": 0.01,
            },
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
    # As-stored features are the main features (`feature_path`); matches by mutual nearest neighbours.
    # Thresholds measured on imc-mini-rot at 2048 keypoints / 640 px: pairs whose photos are turned
    # relative to each other give at most 27 mutual matches as stored (so 50 links safely); at a
    # pair's best turn no wrong turn won above 20 matches; right turns give a median of 600 matches
    # on facades, 25 on the temple.
    "mnn": {
        "output": "orient-mnn",
        "features": None,
        "matching": {"model": {"name": "mnn", "ratio": 0.9}},
        "accept_upright_matches": 50,
        "min_matches": 25,
        "prefilter_min_matches": None,
    },
}
# Optional key "max_tries_per_group": photos of a group tried turned that joined nothing before the
# group's other photos are no longer tried (absent or None: no limit, the default). A mixed folder
# (IMC 2025) holds groups that are other scenes: with no limit every photo of them is extracted three
# more times for nothing (plan.MIXED_ORIENTATION sets one there). Not in the confs above, so
# the orientations of earlier runs keep their fingerprints.

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name, or the mnn matcher), else over upright; nested dicts (features, matching) key by key.
DEFAULT_BY = ("output", "matching.model.name")


def relative_turn(counts: list[int]) -> tuple[int, int]:
    """(turns of the second image that best match the first, matches there) from per-turn counts."""
    best = int(np.argmax(counts))
    return best, int(counts[best])


def solve(
    names: list[str], edges: dict[tuple[str, str], tuple[int, int]], min_matches: int
) -> dict[str, tuple[int, int]]:
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


class _TurnedFeatures:
    """Features of each photo at each quarter turn, computed on first use; as-stored ones are read
    from `stored` (a features file, opened once) when it holds this photo's, as it is now, unturned."""

    def __init__(self, conf: dict, image_dir: Path, extractor, device: torch.device, stored: Path | None = None):
        self.conf, self.image_dir, self.extractor, self.device = conf, Path(image_dir), extractor, device
        self.cache: dict[tuple[str, int], dict] = {}
        # As-stored features are read when needed, a few at a time, not the whole scene at once.
        self.reader = io.FeatureReader(stored) if stored else None
        self.stored: set[str] = set()

    def use_stored(self, names: list[str]) -> None:
        """Read as-stored features of `names` from the stored file where it holds them, unturned and current."""
        upright = features.fingerprints(self.conf, self.image_dir, names, {})
        self.stored = {
            n for n in names if self.reader.fingerprint(n) == upright[n] and "error" not in self.reader.attrs(n)
        }

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def __call__(self, name: str, turns: int) -> dict:
        if turns == 0 and name in self.stored:
            return self.reader[name]
        if (name, turns) not in self.cache:
            path = self.image_dir / name
            try:
                image = read_image(path, max_side=features.max_side(self.conf))
            except (ImageError, FileNotFoundError):  # the features stage reports it
                self.cache[(name, turns)] = {"keypoints": np.zeros((0, 2), np.float32)}
                return self.cache[(name, turns)]
            if self.reader is not None:
                # Shared with the features stage: keypoints on the stored grid, as the features file
                # holds them (the mnn matcher ignores positions).
                self.cache[(name, turns)] = features.extract_with_retry(
                    self.extractor(), self.conf, image, self.device, turns, image_size(path)
                )
            else:
                # LightGlue encodes positions: keep them in the turned image's frame.
                image = np.ascontiguousarray(np.rot90(image, turns))
                self.cache[(name, turns)] = features.extract(self.extractor(), self.conf, image, self.device)
        return self.cache[(name, turns)]

    def save_matches(self, path: Path, a: str, b: str, matches: np.ndarray, scores: np.ndarray, matcher: dict) -> None:
        """Write a pair's matches as stored into this stage's own file `path` when both photos' features
        are the stored file's, keyed as the matching stage asks (`io.matcher_fingerprint`), so that stage
        may copy them instead of matching again (pairs whose photos both end upright)."""
        if a in self.stored and b in self.stored:
            made_by = io.matcher_fingerprint(self.reader.fingerprint(a), self.reader.fingerprint(b), matcher)
            io.write_group(path, io.pair_key(a, b), {"matches": matches, "scores": scores}, {io.FINGERPRINT: made_by})

    def save_turned(self, path: Path, turns: dict[str, int]) -> int:
        """Write the features already extracted at each photo's final turns into this stage's own file
        `path`, each group with the fingerprint the features stage asks for, so that stage may copy
        them instead of extracting again; returns how many."""
        path.unlink(missing_ok=True)
        done = [(n, t) for n, t in turns.items() if t and (n, t) in self.cache and "descriptors" in self.cache[(n, t)]]
        expected = features.fingerprints(self.conf, self.image_dir, [n for n, _ in done], turns)
        for name, t in done:
            io.write_group(path, name, self.cache[(name, t)], {"turns": t, io.FINGERPRINT: expected[name]})
        return len(done)


def main(
    conf: dict,
    image_dir: Path,
    image_names: list[str],
    pairs_path: Path,
    orientation_path: Path,
    device=None,
    overwrite: bool = False,
    extractor=None,
    matcher=None,
    weights=None,
    feature_path: Path | None = None,
    features_conf: dict | None = None,
    progress=None,
) -> Path:
    """Estimate every photo's quarter turns from the pairs of `pairs_path`; reuse an existing file
    made from the same photos, pairs and confs (`fingerprint`; else the whole file is recomputed).

    `extractor` / `matcher`: loaded networks or zero-argument loaders (by default those of `conf`).
    A config without features of its own (`mnn`) needs `features_conf`, the main features' config
    (`extractor` is then that extractor), and reads as-stored features from `feature_path`.
    `progress`: callback(done, total, desc) after each pair, then each photo tried turned (default: tqdm).
    """
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    features_conf = None if features_conf is None else full_conf(features.confs, features_conf, features.DEFAULT_BY)
    orientation_path = Path(orientation_path)
    wants_overlap = conf.get("prefilter_min_matches") is not None
    fconf = conf["features"] or features_conf
    if fconf is None:
        raise ValueError(f"orientation config {conf['output']!r} uses the main features: pass features_conf")
    made_from = fingerprint(conf, fconf, image_dir, image_names, pairs_path)
    if (not wants_overlap or overlap_path(orientation_path).exists()) and io.reusable(
        orientation_path, made_from, overwrite, "orientations"
    ):
        return orientation_path
    device = pick_device(device)
    extractor_once = functools.cache(
        lambda: resolve_network(extractor, lambda: networks.load_extractor(fconf, weights, device))
    )
    matcher_once = functools.cache(
        lambda: resolve_network(
            matcher, lambda: networks.load_matcher(networks.lightglue_key(fconf), conf["matching"], weights, device)
        )
    )
    shared = conf["features"] is None and feature_path is not None and Path(feature_path).exists()
    if shared and conf["matching"]["model"].get("name") != "mnn":
        raise ValueError(
            f"orientation config {conf['output']!r}: shared features need the mnn matcher "
            "(their keypoints stay on the stored grid, which LightGlue would misread)"
        )
    feats = _TurnedFeatures(fconf, image_dir, extractor_once, device, feature_path if shared else None)
    if shared:
        feats.use_stored(list(image_names))
        matches_path(orientation_path).unlink(missing_ok=True)

    count = _pair_counter(feats, matcher_once, device, matches_path(orientation_path), conf["matching"]["model"])
    pairs = io.read_pairs(pairs_path)
    edges = _search(conf, list(image_names), pairs, count, feats, progress)
    result = solve(list(image_names), edges, conf["min_matches"])
    table = _write_side_files(
        conf, orientation_path, list(image_names), pairs, result, count, feats if shared else None
    )
    feats.close()  # (on an exception, the reader closes when the stage's frame is freed)
    _write_csv(table, orientation_path)
    io.stamp(orientation_path, made_from)  # last: marks the stage done
    return orientation_path


def _pair_counter(feats, matcher_once, device, matches_file: Path, model_conf: dict):
    """`count(a, b, k)`: matches of a as stored with b turned by k quarter turns, each computed once."""
    counts: dict[tuple[str, str, int], int] = {}

    def count(a: str, b: str, k: int) -> int:
        if (a, b, k) not in counts:
            matches, scores = matching.match_pair(matcher_once(), feats(a, 0), feats(b, k), device)
            counts[(a, b, k)] = len(matches)
            if k == 0:  # kept for the matching stage where both photos end upright
                feats.save_matches(matches_file, a, b, matches, scores, model_conf)
        return counts[(a, b, k)]

    return count


def _search(conf: dict, image_names: list[str], pairs: list, count, feats, progress) -> dict:
    """The pairwise turns found: {(a, b): (turns, matches)}.

    Pass 1, every pair as stored: confident matches link photos into groups. Pass 2, the other
    turns, one photo at a time from the smaller groups: a photo is turned and matched with its
    neighbours in other groups no smaller than its own (`_across`); a confident match at some
    turn joins the two groups, so the rest of a group need not be tried (each try costs three
    extractions). Pairs within a group that matched weakly as stored were not tried turned and
    say nothing."""
    stored = {
        (a, b): count(a, b, 0) for a, b in progress_bar(pairs, desc="orientation", callback=progress, unit="pair")
    }
    accept = conf["accept_upright_matches"]
    group = DisjointSet(image_names)
    for (a, b), n in stored.items():
        if n >= accept:
            group.merge(a, b)
    edges = {p: (0, n) for p, n in stored.items() if n >= accept}
    # A photo without keypoints (unreadable, too large) matches nothing at any turn: trying the
    # others turned against it would cost three extractions each, so it has no neighbours.
    blank = {n for pair in stored for n in pair if not len(feats(n, 0)["keypoints"])}
    neighbours: dict[str, dict[str, int]] = {n: {} for n in image_names}
    for (a, b), n in stored.items():
        if a not in blank and b not in blank:
            neighbours[a][b] = neighbours[b][a] = n
    tried: set[str] = set()
    failed: collections.Counter = collections.Counter()  # per group: photos tried turned that joined nothing
    cap = conf.get("max_tries_per_group")
    with progress_bar(
        desc="orientation, photos tried turned",
        callback=progress,
        unit="photo",
        disable=len({group[n] for n in image_names}) < 2,
    ) as bar:
        while True:
            sizes = collections.Counter(group[n] for n in image_names)
            outside = {b: _across(b, neighbours[b], group, sizes) for b in image_names if b not in tried}
            outside = {b: v for b, v in outside.items() if v and (cap is None or failed[group[b]] < cap)}
            if not outside:
                break
            # Smallest group first; within it, the photo most linked as stored to the others.
            b = min(outside, key=lambda n: (sizes[group[n]], -max(neighbours[n][a] for a in outside[n])))
            tried.add(b)
            joined = False
            for a in outside[b]:
                edges[(a, b)] = relative_turn([neighbours[b][a], *(count(a, b, k) for k in (1, 2, 3))])
                if edges[(a, b)][1] >= accept:
                    joined |= group.merge(a, b)
            if not joined:
                failed[group[b]] += 1
            bar.update()
    return edges


def _write_side_files(conf, orientation_path: Path, image_names, pairs, result, count, shared) -> pd.DataFrame:
    """The overlaps (with a prefilter) and, with the main features (`shared`), the turned photos'
    features for the later stages; returns the turns' table, which the stage writes last."""
    if conf.get("prefilter_min_matches") is not None:
        # Each pair's low-resolution matches once both photos are turned: lets the pipeline drop
        # pairs that do not overlap before full matching.
        overlap = pd.DataFrame(
            [(a, b, count(a, b, (result[b][0] - result[a][0]) % 4)) for a, b in pairs],
            columns=["name0", "name1", "matches"],
        )
        _write_csv(overlap, overlap_path(orientation_path))
    table = pd.DataFrame([(n, *result[n]) for n in image_names], columns=["image_name", "quarter_turns", "support"])
    turned = table[table["quarter_turns"] != 0]
    logger.info(
        "%s: %d of %d photos turned (%s)",
        orientation_path,
        len(turned),
        len(table),
        ", ".join(f"{n}:{90 * t}" for n, t in zip(turned["image_name"], turned["quarter_turns"])) or "none",
    )
    if shared is not None:
        saved = shared.save_turned(turned_path(orientation_path), {n: t for n, (t, _) in result.items()})
        if saved:
            logger.info(
                "%s: features of %d turned photos, for the features stage", turned_path(orientation_path), saved
            )
    return table


def _across(photo: str, neighbours: dict[str, int], group: DisjointSet, sizes: collections.Counter) -> list[str]:
    """The neighbours of `photo` to match with it turned: those in other groups no smaller than its own.
    A pair across two groups is tried from the smaller side only; from the larger it is the same
    question (the relative turn of the two groups) at three more extractions of a photo. So the
    largest group is tried against no smaller one: in a mixed folder (IMC 2025) it is a whole scene,
    and its tries against the other scenes joined nothing."""
    own = sizes[group[photo]]
    return [a for a in neighbours if group[a] != group[photo] and sizes[group[a]] >= own]


def fingerprint(conf: dict, features_conf: dict, image_dir: Path, image_names: list[str], pairs_path: Path) -> str:
    """What the orientations depend on: the photos' contents, the pairs tried, the confs. The file is
    small and cheap next to the features: any change recomputes all of it."""
    photos = io.image_digests(image_dir, image_names)
    return io.digest("orientation", conf, features_conf, photos, io.file_digest(pairs_path))


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with io.atomic_file(path, newline="") as handle:
        table.to_csv(handle, index=False)


def turned_path(orientation_path: Path) -> Path:
    """The features the `mnn` config extracted at each turned photo's final turn, beside the orientations."""
    return Path(orientation_path).with_suffix(".h5")


def matches_path(orientation_path: Path) -> Path:
    """The matches the `mnn` config made of each pair as stored, beside the orientations."""
    return Path(orientation_path).with_name(Path(orientation_path).stem + "-matches.h5")


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
