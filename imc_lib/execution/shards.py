"""A large scene's feature extraction and matching in shards: each shard a task of the executor's pool
writing its own file, one merge into the stage's usual file.

    WORK/<scene>/<features or matches file>.shards/<index>-<digest>.h5

A shard is computed into `<shard>.partial` (resumed like any features/matches file) and moved into
place when complete, so a shard file is always a finished one: a rerun (after a driver or a worker was
killed) skips it. Nothing appends to a file another task writes. The merge copies every shard's groups
(their fingerprints with them) into the stage's file, then removes the shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import h5py

from .. import networks
from ..stages import features, matching
from ..storage import io
from ..utils import full_conf

logger = logging.getLogger(__name__)

# When a scene is large enough to shard (`min_photos`), and a shard's size: photos per extraction
# shard, pairs per matching shard. `actors`: extraction/matching actors per large scene (None: one
# per GPU of the cluster, else one per CPU). The executors' default (imc_lib/executor.py).
SHARDING = {"min_photos": 300, "photos": 64, "pairs": 2000, "actors": None}


def shard_dir(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".shards")


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _shard_path(folder: Path, index: int, keys: list[str]) -> Path:
    """A shard's file, named by its place and its keys (another split of the work never reuses it)."""
    return folder / f"{index:05d}-{io.digest(keys)[:8]}.h5"


def _complete(path: Path, keys: list[str], required: tuple, expected: dict) -> bool:
    return Path(path).exists() and not io.pending(path, keys, required, False, "shard groups", expected)


def extract(pool, conf, image_dir, names, feature_path, overwrite, turns, reuse, size) -> dict[str, int]:
    """`features.main` over `names` in shards of `size` photos on `pool`, merged into `feature_path`;
    {"reused": finished shards found, "computed": shards run} (both 0 when the file held everything)."""
    feature_path, turns = Path(feature_path), turns or {}
    conf = full_conf(features.confs, conf, features.DEFAULT_BY)
    folder = shard_dir(feature_path)
    if overwrite:
        feature_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    expected = features.fingerprints(conf, image_dir, names, turns)
    todo = set(io.pending(feature_path, list(names), features.FEATURE_KEYS, False, "images", expected))
    chunks = [(i, c) for i, c in enumerate(_chunks(list(names), size)) if todo & set(c)]
    shards = [_shard_path(folder, i, c) for i, c in chunks]
    jobs = [(conf, image_dir, c, s, {n: turns.get(n, 0) for n in c}, reuse) for (_, c), s in zip(chunks, shards)]
    return _run(pool, extract_shard, jobs, shards, feature_path, "features")


def extract_shard(nets, conf, image_dir, names, shard, turns, reuse) -> bool:
    """One extraction shard (on a pool's worker); False when its finished file was there already."""
    expected = features.fingerprints(conf, image_dir, names, turns)
    if _complete(shard, names, features.FEATURE_KEYS, expected):
        return False
    partial = Path(f"{shard}.partial")
    features.main(conf, image_dir, names, partial, nets.device, network=nets.extractor(conf), turns=turns, reuse=reuse)
    os.replace(partial, shard)
    return True


def match(pool, conf, fconf, pairs_path, feature_path, match_path, overwrite, size, reuse=None) -> dict[str, int]:
    """`matching.main` over the pairs of `pairs_path` in shards of `size` pairs on `pool`, merged
    into `match_path` (`reuse`: as matching.main's); returns as `extract` does."""
    match_path = Path(match_path)
    folder = shard_dir(match_path)
    if overwrite:
        match_path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
    pairs = io.read_pairs(pairs_path)
    expected = _match_fingerprints(conf, pairs, feature_path)
    todo = set(io.pending(match_path, list(expected), matching.MATCH_KEYS, False, "pairs", expected))
    chunks = [(i, c) for i, c in enumerate(_chunks(pairs, size)) if todo & {io.pair_key(*p) for p in c}]
    shards = [_shard_path(folder, i, [io.pair_key(*p) for p in c]) for i, c in chunks]
    jobs = [(conf, fconf, c, feature_path, s, reuse) for (_, c), s in zip(chunks, shards)]
    return _run(pool, match_shard, jobs, shards, match_path, "matches")


def _match_fingerprints(conf: dict, pairs: list, feature_path: Path) -> dict[str, str]:
    with io.FeatureReader(feature_path) as reader:
        return matching.fingerprints(conf, pairs, reader)


def match_shard(nets, conf, fconf, pairs, feature_path, shard, reuse=None) -> bool:
    """One matching shard (on a pool's worker); False when its finished file was there already."""
    expected = _match_fingerprints(conf, pairs, feature_path)
    if _complete(shard, list(expected), matching.MATCH_KEYS, expected):
        return False
    pairs_path, partial = Path(f"{shard}.txt"), Path(f"{shard}.partial")
    io.write_pairs(pairs, pairs_path)
    matching.main(conf, pairs_path, feature_path, partial, networks.lightglue_key(fconf), nets.device,
                  network=nets.matcher(fconf, conf), reuse=reuse)  # fmt: skip
    os.replace(partial, shard)
    pairs_path.unlink()
    return True


def _run(pool, fn, jobs: list[tuple], shards: list[Path], path: Path, what: str) -> dict[str, int]:
    """Run the shard jobs on `pool`, merge their files (`shards`) into `path`, remove them."""
    if not jobs:
        return {"reused": 0, "computed": 0}
    computed = sum(pool.map(fn, jobs))
    merge(shards, path)
    logger.info("%s: %d %s shard(s) merged, %d reused from an earlier run", path, len(jobs), what, len(jobs) - computed)
    return {"reused": len(jobs) - computed, "computed": computed}


def merge(shard_paths: list[Path], path: Path) -> None:
    """Copy every group of the shard files into `path` (replacing groups of the same name), then remove
    the shards: a merge cut short leaves them for the next run to merge again."""
    with h5py.File(path, "a") as out:
        for shard in shard_paths:
            with h5py.File(shard, "r") as src:
                for key in _leaf_groups(src):
                    if key in out:
                        del out[key]
                    parent, _, leaf = key.rpartition("/")
                    src.copy(src[key], out.require_group(parent) if parent else out, name=leaf)
    for shard in shard_paths:
        Path(shard).unlink()
    with contextlib.suppress(OSError):
        shard_dir(path).rmdir()


def _leaf_groups(f: h5py.File) -> list[str]:
    """Names of the groups that hold datasets: images (features) or `name0/name1` pairs (matches)."""
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group) and
                 any(isinstance(v, h5py.Dataset) for v in obj.values()) else None)  # fmt: skip
    return found
