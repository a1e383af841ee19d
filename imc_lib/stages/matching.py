"""Match local features of image pairs with a registered matcher (imc_lib/networks: LightGlue, LighterGlue for
XFeat, mutual nearest neighbours; kornia) -> `matches-*.h5`.

LightGlue is the accurate choice (~0.2-0.6 s per pair at 1024-2048 keypoints on 2 CPU cores);
`mnn` (mutual nearest neighbours passing a ratio test, kornia's `DescriptorMatcher("smnn")`) costs
milliseconds per pair and is the CPU speed setting: COLMAP's geometric verification drops its outliers.

HDF5 layout, one group per pair `name0/name1` (as in the pairs file):
    matches  (M, 2) int32, indices into name0's and name1's keypoints
    scores   (M,)   float32, match confidence (LightGlue's; 1 - distance ratio for mnn)
A pair with fewer than `min_matches` matches is kept as an empty group (so a rerun does not
match it again) and is never handed to reconstruction. Each group's `fingerprint` attribute records
both images' feature fingerprints and this conf (`io.match_fingerprint`): a pair is matched again
when either image's features changed.

`reuse`: matches another stage already made (the `mnn` orientation's of each pair as stored), each
group keyed by `io.matcher_fingerprint` (both images' features, the matcher's conf); a pair found
there with the fingerprint this stage's features and matcher give is copied instead of matched again.

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .. import networks
from ..execution import budget
from ..execution.progress import bar as progress_bar
from ..storage import io
from ..storage.io import read_matches  # noqa: F401  (its old home; callers may import it from here)
from ..utils import full_conf, pick_device, resolve_network

logger = logging.getLogger(__name__)

# Every registered matcher's named confs (imc_lib/networks: lightglue, mnn, mnn+lightglue, ...), the first the
# default: "lightglue" is the accurate choice, "mnn" the CPU's speed setting.
confs = networks.Registered("confs", networks.MATCHERS)

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name or network name), else over lightglue.
DEFAULT_BY = ("output", "model.name")

# What a finished pair's group holds; "scores" is written last, so a group without it was cut short.
MATCH_KEYS = ("matches", "scores")


def _tensors(feats: dict[str, np.ndarray], i: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One image's features as the matchers' contract takes them (networks.MATCHER), keys ending in `i`."""
    # LightGlue rejects positions outside the image; a keypoint at the border of a small, upscaled
    # image maps back to just beyond it (e.g. x = -0.48 in a 16 px image).
    size = feats["image_size"].astype(np.float32)
    kpts = np.clip(feats["keypoints"], 0, np.maximum(size - 1, 0))
    return {
        f"keypoints{i}": torch.from_numpy(kpts).float()[None].to(device),
        f"descriptors{i}": torch.from_numpy(feats["descriptors"]).float()[None].to(device),
        f"image_size{i}": torch.from_numpy(feats["image_size"]).float()[None].to(device),
    }


@torch.inference_mode()
def match_pair(
    network: torch.nn.Module, feats0: dict, feats1: dict, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) index pairs, in the order of the first image's keypoints, and (M,) scores of the matches
    `network` (any registered matcher: networks.MATCHER's contract) finds between two images."""
    if len(feats0["keypoints"]) == 0 or len(feats1["keypoints"]) == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0,), np.float32)
    out = network({**_tensors(feats0, 0, device), **_tensors(feats1, 1, device)})
    matches0 = out["matches0"][0]
    index0 = torch.nonzero(matches0 > -1).squeeze(-1)
    matches = torch.stack([index0, matches0[index0]], -1)
    return matches.cpu().numpy().astype(np.int32), out["matching_scores0"][0][index0].float().cpu().numpy()


def main(
    conf: dict,
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    features: str,
    device=None,
    overwrite: bool = False,
    network: torch.nn.Module | None = None,
    weights: str | Path | None = None,
    deadline: float | None = None,
    reuse: Path | None = None,
    progress=None,
) -> Path:
    """Match every pair of `pairs_path` that `match_path` does not hold yet.

    `features` names the LightGlue weights (networks.lightglue_key); it must fit the features file.
    `network`: a loaded matcher or a zero-argument loader, called only if some pair needs matching.
    `deadline` (time.monotonic seconds): past it, budget.OutOfTime is raised before the next pair.
    `reuse`: a file of matches another stage made (see the module's docstring); the pairs it holds
    from the same features by the same matcher are copied from it, in the order of the pairs file.
    `progress`: callback(done, total, desc) after each pair (default: a tqdm bar).
    """
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    device = pick_device(device)
    match_path = Path(match_path)
    pairs = io.read_pairs(pairs_path)
    keys = {io.pair_key(*p): p for p in pairs}
    with io.FeatureReader(feature_path) as reader:
        expected = fingerprints(conf, pairs, reader)
        pending = io.pending(match_path, list(keys), MATCH_KEYS, overwrite, "pairs", expected)
        todo = _copy_reusable(reuse, match_path, pending, keys, reader, conf, expected)
        if not pending:
            return match_path
        if todo:
            network = resolve_network(network, lambda: networks.load_matcher(features, conf, weights, device))
        dropped, copied = 0, set(pending) - set(todo)
        # The bar counts the copied pairs too: the stage reports every pair it made, as without `reuse`.
        for key in progress_bar(pending, desc=f"matching {conf['output']}", callback=progress, unit="pair"):
            if key in copied:
                continue
            name0, name1 = keys[key]
            budget.check(deadline, f"matching ({match_path})")
            logger.debug("%s: matching %s %s", match_path, name0, name1)  # the pairs before it are stored
            matches, scores = match_with_retry(network, reader[name0], reader[name1], device)
            dropped += _store(match_path, key, matches, scores, conf, expected[key])
    if dropped:
        logger.info(
            "%s: %d of %d pairs had fewer than %d matches and were dropped",
            match_path,
            dropped,
            len(todo),
            conf["min_matches"],
        )
    return match_path


def fingerprints(conf: dict, pairs: list[tuple[str, str]], reader: io.FeatureReader) -> dict[str, str]:
    """pair key -> the fingerprint its matches group must carry: both photos' features (`reader`), `conf`."""
    conf = full_conf(confs, conf, DEFAULT_BY)
    prints = {n: reader.fingerprint(n) for pair in pairs for n in pair}
    return {io.pair_key(a, b): io.match_fingerprint(prints[a], prints[b], conf) for a, b in pairs}


def _store(match_path: Path, key: str, matches: np.ndarray, scores: np.ndarray, conf: dict, fingerprint: str) -> bool:
    """Write one pair's matches, none when fewer than `conf['min_matches']`; whether they were too few."""
    weak = len(matches) < conf["min_matches"]
    if weak:
        matches, scores = matches[:0], scores[:0]
    io.write_group(match_path, key, {"matches": matches, "scores": scores}, {io.FINGERPRINT: fingerprint})
    return weak


def _copy_reusable(
    reuse: Path | None, match_path: Path, todo: list[str], keys: dict, reader: io.FeatureReader, conf: dict,
    expected: dict[str, str],
) -> list[str]:  # fmt: skip
    """Copy from `reuse` the pairs of `todo` it holds in the same order, made from the features of
    `reader` by this conf's matcher (`io.matcher_fingerprint`); the rest of `todo`."""
    if reuse is None or not Path(reuse).exists():
        return todo
    made_by = {k: io.matcher_fingerprint(*(reader.fingerprint(n) for n in keys[k]), conf["model"]) for k in todo}
    with io.MatchReader(reuse) as stored:
        found = [k for k in todo if stored.holds(*keys[k]) and stored.fingerprint(*keys[k]) == made_by[k]]
        dropped = sum(_store(match_path, k, *stored(*keys[k]), conf, expected[k]) for k in found)
    if found:
        logger.info(
            "%s: %d of %d pairs copied from %s (same features, same matcher), %d of them with fewer than %d "
            "matches; %d to match",
            match_path, len(found), len(todo), reuse, dropped, conf["min_matches"], len(todo) - len(found),
        )  # fmt: skip
    found = set(found)
    return [k for k in todo if k not in found]


def _strongest(feats: dict, keep: int) -> tuple[dict, np.ndarray]:
    index = np.sort(np.argsort(-feats["scores"], kind="stable")[:keep]) if "scores" in feats else np.arange(keep)
    return {**feats, "keypoints": feats["keypoints"][index], "descriptors": feats["descriptors"][index]}, index


def match_with_retry(
    network: torch.nn.Module, feats0: dict, feats1: dict, device: torch.device, attempts: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """`match_pair`, retried with the strongest half of the keypoints each time memory runs out."""
    device = pick_device(device)
    index0, index1 = np.arange(len(feats0["keypoints"])), np.arange(len(feats1["keypoints"]))
    for attempt in range(attempts):
        try:
            matches, scores = match_pair(network, feats0, feats1, device)
            return np.stack([index0[matches[:, 0]], index1[matches[:, 1]]], axis=1).astype(np.int32), scores
        except torch.OutOfMemoryError:
            if attempt == attempts - 1:
                raise
            keep = max(len(index0), len(index1)) // 2
            logger.warning(
                "out of memory matching %d x %d keypoints; retrying with the strongest %d",
                len(index0),
                len(index1),
                keep,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
            feats0, sub0 = _strongest(feats0, keep)
            feats1, sub1 = _strongest(feats1, keep)
            index0, index1 = index0[sub0], index1[sub1]


def weak_pairs(counts: dict[tuple[str, str], int], strong: int, min_strong_pairs: int) -> list[tuple[str, str]]:
    """The pairs with fewer than `strong` matches that hold a photo tied by fewer than `min_strong_pairs`
    pairs of `strong` matches or more (`counts`: matches per pair)."""
    tied: dict[str, int] = {}
    for (a, b), n in counts.items():
        for name in (a, b):
            tied[name] = tied.get(name, 0) + (n >= strong)
    return [(a, b) for (a, b), n in counts.items() if n < strong and min(tied[a], tied[b]) < min_strong_pairs]


def rescue(
    conf: dict,
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    features: str,
    device=None,
    network: torch.nn.Module | None = None,
    weights: str | Path | None = None,
    deadline: float | None = None,
    progress=None,
) -> int:
    """LightGlue on the weak pairs of weakly tied photos (`weak_pairs`, conf["rescue"]) of a finished
    matches file; a pair keeps whichever of the two found more matches, and is marked so a rerun does
    not match it again. `network`: LightGlue, or a loader called only when some pair needs it. Returns
    the number of pairs that gained matches."""
    conf = full_conf(confs, conf, DEFAULT_BY)
    if not conf.get("rescue"):
        return 0
    pairs = io.read_pairs(pairs_path)
    strong = conf["rescue"]["strong"]
    counts, weak = {}, {}  # matches per pair; the weak pairs' own (nearest neighbours'), kept if LightGlue finds fewer
    with io.MatchReader(match_path) as stored:
        for pair in pairs:
            found = stored(*pair)
            counts[pair] = len(found[0])
            if counts[pair] < strong:
                weak[pair] = found
        done = {p for p in pairs if stored.file[io.pair_key(*p)].attrs.get("rescued", False)}
    todo = [p for p in weak_pairs(counts, strong, conf["rescue"]["min_strong_pairs"]) if p not in done]
    if not todo:
        return 0
    device = pick_device(device)
    network = resolve_network(
        network, lambda: networks.load_matcher(features, {"model": conf["rescue"]["model"]}, weights, device)
    )
    gained = 0
    with io.FeatureReader(feature_path) as reader:
        expected = fingerprints(conf, todo, reader)
        for name0, name1 in progress_bar(todo, desc=f"rescue {conf['output']}", callback=progress, unit="pair"):
            budget.check(deadline, f"matching ({match_path})")
            matches, scores = match_with_retry(network, reader[name0], reader[name1], device)
            if len(matches) < conf["min_matches"] or len(matches) <= counts[(name0, name1)]:
                matches, scores = weak[(name0, name1)]
            else:
                gained += 1
            io.write_group(match_path, io.pair_key(name0, name1), {"matches": matches, "scores": scores},
                           {io.FINGERPRINT: expected[io.pair_key(name0, name1)], "rescued": True})  # fmt: skip
    logger.info("%s: %d weak pairs of weakly tied photos matched again by LightGlue, %d gained matches", match_path,
                len(todo), gained)  # fmt: skip
    return gained
