"""Which image pairs to match: all of them, or those whose global descriptors look alike.

Matching every pair costs N(N-1)/2 matcher runs; for larger scenes a global descriptor per image
keeps only pairs that look alike, plus each image's nearest neighbours so that no image is left
without candidates. Two descriptors: max-pooled DINOv2 patch tokens (`dinov2`, downloaded weights)
or VLAD over the scene's own local features with a vocabulary learnt on the scene (`vlad`, no
weights: reads the features stage's file, so it runs after it, on the photos as turned upright).

The output is an hloc-style text file, one `name0 name1` per line, each unordered pair once,
`name0` before `name1` in the order of `image_names` ('%' and whitespace in names percent-encoded).
Beside it, `<file>.fingerprint` records what it was made from (`fingerprint`): the image names and
conf, and for retrieval the photos' contents, for VLAD their features'. The file is small: any
change recomputes all of it (DINOv2 descriptors are kept per photo and recomputed per photo).

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from scipy.spatial.distance import cdist

from .. import networks
from ..execution.progress import bar as progress_bar
from ..execution.progress import report as report_progress
from ..storage import io
from ..storage.io import read_pairs, write_pairs  # noqa: F401  (their old home; callers may import them from here)
from ..utils import ImageError, autocast_dtype, full_conf, pick_device, read_image, readable_image, resolve_network

logger = logging.getLogger(__name__)

confs = {
    "exhaustive": {"output": "pairs-exhaustive", "method": "exhaustive"},
    "dinov2": {
        "output": "pairs-dinov2",
        "method": "retrieval",
        "model": None,  # None: networks.load_dinov2 default sources ($IMC_DINOV2, Kaggle input, hub)
        "max_distance": 0.6,  # keep pairs whose descriptor distance is below this
        "min_pairs": 20,  # each image keeps at least this many nearest neighbours
        "exhaustive_if_less": 20,  # scenes with fewer images get all pairs, without DINOv2
        "p": 2.0,  # Minkowski p of the descriptor distance: 1, 2 or inf
    },
    # Weight-free retrieval: VLAD of each photo's local descriptors over a per-scene k-means vocabulary.
    "vlad": {
        "output": "pairs-vlad",
        "method": "vlad",
        "clusters": 64,  # vocabulary size
        # The strongest descriptors per photo used to learn the vocabulary, and k-means iterations:
        # 200 and 20 took 9 s on gold-cape (119 photos) for the same recall as 100 and 10 (3 s).
        "sample": 100,
        "iterations": 10,
        "min_pairs": 20,  # each image keeps this many nearest neighbours
        # ... or, in larger scenes, this share of the scene's photos, up to max_pairs (`neighbours`): a
        # photo of a dense scene has more views that overlap it. dino-full (363 photos, 39 pairs that
        # matter a photo; recall 0.52 at 20, 0.63 at 30): 30 neighbours registered all 363 photos in the
        # first mapping, mAA 0.838 -> 0.874, in about the same wall (no second, distortion-held
        # mapping); 40 also registered all, mAA 0.870, 66 s slower. Scenes under 247 photos keep 20.
        "min_pairs_share": 1 / 12,
        "max_pairs": 30,
        "max_distance": 0.0,  # also keep pairs closer than this distance (0: nearest neighbours only)
        "exhaustive_if_less": 20,
        "p": 2.0,
    },
}

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name or method: retrieval is dinov2's), else over exhaustive.
DEFAULT_BY = ("output", "method")

DESCRIPTOR_KEY = "global_descriptor"
VALID_P = (1.0, 2.0, math.inf)


def neighbours(conf: dict, n_images: int) -> int:
    """Nearest neighbours each photo keeps: `min_pairs`, or `min_pairs_share` of the scene's photos
    when that is more, up to `max_pairs`."""
    share = round(conf.get("min_pairs_share", 0.0) * n_images)
    return max(int(conf["min_pairs"]), min(share, int(conf.get("max_pairs", share))))


def exhaustive_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Every unordered pair once, in the order of `names`."""
    return list(itertools.combinations(names, 2))


def _check_p(p) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        value = None
    if value not in VALID_P:
        raise ValueError(f"p must be 1, 2 or inf (Minkowski distance of torch.cdist), not {p!r}")
    return value


def distance_matrix(desc, p: float = 2.0) -> torch.Tensor:
    """(N, N) Minkowski-p distances between global descriptors (what the selection thresholds)."""
    desc = torch.as_tensor(desc).float()
    if desc.ndim != 2:
        raise ValueError(f"descriptors must be an (N, D) tensor, got shape {tuple(desc.shape)}")
    return torch.cdist(desc, desc, p=_check_p(p))


def pairs_from_descriptors(
    desc: torch.Tensor, max_distance: float, min_pairs: int, p: float = 2.0
) -> list[tuple[int, int]]:
    """Index pairs (i < j, sorted, unique) whose descriptors are closer than `max_distance`,
    plus each image's `min_pairs` nearest neighbours (capped at N-1)."""
    dist = distance_matrix(desc, p)
    n = dist.shape[0]
    if n < 2:
        return []
    dist.fill_diagonal_(math.inf)  # an image is never its own pair or neighbour
    keep = dist < max_distance
    k = min(max(int(min_pairs), 0), n - 1)
    if k > 0:
        # Stable sort: among equal distances the lower index wins, so results are reproducible.
        nearest = torch.sort(dist, dim=1, stable=True).indices[:, :k]
        keep[torch.arange(n).unsqueeze(1), nearest] = True
    keep = keep | keep.T
    i, j = torch.triu_indices(n, n, offset=1)
    selected = keep[i, j]
    return list(zip(i[selected].tolist(), j[selected].tolist()))


def vlad_vocabulary(descriptors: np.ndarray, clusters: int, iterations: int = 10, seed: int = 0) -> np.ndarray:
    """(K, D) k-means centres of a scene's local descriptors: the vocabulary VLAD assigns them to."""
    descriptors = np.asarray(descriptors, np.float32)
    k = max(1, min(clusters, len(descriptors)))
    centres, _ = kmeans2(descriptors, kmeans_plusplus(descriptors, k, seed), iter=iterations, minit="matrix")
    return centres.astype(np.float32)


def kmeans_plusplus(data: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k, D) float64 k-means++ seeds: the very centres `kmeans2(data, k, minit="++", seed=seed)` draws
    (the same random draws on the same distances), but each draw updates every point's distance to
    its nearest centre with the new centre alone. scipy measures it against all centres again at each
    draw: k^2/2 distance passes, 7 of the 10 s VLAD took on 155 photos, against k here."""
    rng = np.random.RandomState(seed)  # what kmeans2's legacy `seed` argument makes of an int
    centres = np.empty((k, data.shape[1]))
    centres[0] = data[rng.randint(len(data))]
    nearest = cdist(centres[:1], data, "sqeuclidean")[0]
    for i in range(1, k):
        centres[i] = data[int(np.searchsorted(np.cumsum(nearest / nearest.sum()), rng.uniform()))]
        nearest = np.minimum(nearest, cdist(centres[i : i + 1], data, "sqeuclidean")[0])
    return centres


def vlad(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """One photo's VLAD (Jegou et al. 2010, with Arandjelovic and Zisserman's intra-normalisation):
    per-centre sums of residuals to the nearest centre, each L2-normalised, signed square root, then
    L2-normalised as a whole; shape (K*D,). Zero for a photo without descriptors."""
    out = np.zeros_like(centres)
    if len(descriptors):
        descriptors = np.asarray(descriptors, np.float32)
        nearest = cdist(descriptors, centres, "sqeuclidean").argmin(axis=1)
        np.add.at(out, nearest, descriptors - centres[nearest])
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    out = np.sign(out) * np.sqrt(np.abs(out))
    return (out / max(np.linalg.norm(out), 1e-12)).ravel()


def vlad_descriptors(
    feature_path: Path, image_names: list[str], clusters: int, sample: int, iterations: int = 10
) -> np.ndarray:
    """(N, K*D) VLAD of every photo's local features in `feature_path`, over a vocabulary learnt from the
    `sample` strongest descriptors of each photo (photos without features get zeros)."""
    with io.FeatureReader(feature_path, size=1) as reader:
        strongest = [
            reader[n]["descriptors"][np.argsort(-reader[n]["scores"], kind="stable")[:sample]] for n in image_names
        ]
        strongest = [d for d in strongest if len(d)]
        if not strongest:
            return np.zeros((len(image_names), 1), np.float32)
        centres = vlad_vocabulary(np.concatenate(strongest), clusters, iterations)
        return np.stack([vlad(reader[n]["descriptors"], centres) for n in image_names])


def load_network(conf: dict):
    """(processor, Dinov2Model) for a retrieval conf; load once and pass as `network=` to reuse across scenes."""
    return networks.load_dinov2(conf.get("model"))


@torch.inference_mode()
def global_descriptor(image: np.ndarray, processor, network, device: torch.device) -> torch.Tensor:
    """L2-normalised max-pool of DINOv2 patch tokens (CLS dropped) for one RGB image; shape (D,)."""
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    pixels = pixels.to(device=device, dtype=next(network.parameters()).dtype)
    dtype = autocast_dtype(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with autocast:
        tokens = network(pixel_values=pixels).last_hidden_state[:, 1:]
    return F.normalize(tokens.float().max(dim=1).values, dim=-1)[0]


def compute_descriptors(
    image_dir: Path,
    image_names: list[str],
    descriptors_path: Path,
    network_getter,
    device: torch.device,
    overwrite: bool = False,
    source: str | None = None,
    progress=None,
) -> np.ndarray:
    """Global descriptors of `image_names` as an (N, D) array, computing only those missing from
    `descriptors_path` or made from another photo or network `source` (all when `overwrite`; with no
    `source`, a stored descriptor of the same photo is taken whichever network made it).
    `network_getter()` is called only if something is to be computed;
    `progress`: callback(done, total, desc) after each image (default: a tqdm bar)."""
    descriptors_path = Path(descriptors_path)
    photos = io.image_digests(image_dir, image_names)
    models = (
        _stored_models(descriptors_path, image_names) if source is None else dict.fromkeys(image_names, str(source))
    )
    expected = {n: io.digest("global descriptor", photos[n], models[n]) for n in image_names}
    todo = io.pending(descriptors_path, list(image_names), (DESCRIPTOR_KEY,), overwrite, "global descriptors", expected)
    if todo:
        processor, network = network_getter()
        network = network.to(device).eval()
        for name in progress_bar(todo, desc="global descriptors", callback=progress, unit="img"):
            try:
                image = read_image(Path(image_dir) / name, max_side=1024)
            except (ImageError, FileNotFoundError) as err:  # the features stage reports it, once
                logger.debug("%s; its global descriptor is zero", err)
                desc = torch.zeros(network.config.hidden_size)
            else:
                desc = global_descriptor(image, processor, network, device)
            # one write per photo: an interrupted run keeps what it computed
            arrays = {DESCRIPTOR_KEY: desc.cpu().numpy().astype(np.float32)}
            io.write_group(descriptors_path, name, arrays, {io.FINGERPRINT: expected[name], "model": models[name]})
    with io.FeatureReader(descriptors_path, size=1) as reader:
        return np.stack([reader[n][DESCRIPTOR_KEY] for n in image_names])


def _stored_models(descriptors_path: Path, image_names: list[str]) -> dict[str, str]:
    """name -> the network its stored descriptor came from: a caller that does not name the network
    (reading what is there) accepts any, as long as the photo is the same."""
    if not descriptors_path.exists():
        return dict.fromkeys(image_names, "None")
    with io.FeatureReader(descriptors_path) as reader:
        return {n: str(reader.attrs(n).get("model", "None")) if n in reader else "None" for n in image_names}


def _check_names(image_names: list[str]) -> None:
    duplicates = sorted(n for n, count in Counter(image_names).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate image names: {duplicates[:5]}")
    if any(not n for n in image_names):
        raise ValueError("empty image name in the image list")


def main(
    conf: dict,
    image_dir: Path,
    image_names: list[str],
    pairs_path: Path,
    descriptors_path: Path | None = None,
    device=None,
    overwrite: bool = False,
    network=None,
    feature_path: Path | None = None,
    progress=None,
) -> Path:
    """Write the pairs file for one scene and return its path.

    `network`: an already loaded (processor, Dinov2Model), or a zero-argument loader of one, to use
    instead of loading `conf["model"]`; it is only called if some descriptor is missing.
    `descriptors_path` (retrieval only) defaults to `<pairs_path stem>-global.h5` beside the pairs.
    `feature_path` (vlad only): the features stage's file, whose local descriptors VLAD pools.
    `progress`: callback(done, total, desc): each global descriptor, then the selection (default: tqdm).
    """
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    pairs_path = Path(pairs_path)
    image_names = list(image_names)
    _check_names(image_names)
    made_from = fingerprint(conf, image_dir, image_names, feature_path)
    if io.reusable(pairs_path, made_from, overwrite, "pairs"):
        return pairs_path
    method = conf.get("method", "exhaustive")

    if method == "exhaustive":
        pairs = exhaustive_pairs(image_names)
    elif method == "retrieval":
        p = _check_p(conf["p"])  # fail before the expensive part
        if len(image_names) < conf["exhaustive_if_less"]:
            logger.info(
                "%d images < exhaustive_if_less=%d: using exhaustive pairs, not DINOv2.",
                len(image_names),
                conf["exhaustive_if_less"],
            )
            pairs = exhaustive_pairs(image_names)
        else:
            if descriptors_path is None:
                descriptors_path = pairs_path.with_name(pairs_path.stem + "-global.h5")
            desc = compute_descriptors(
                image_dir,
                image_names,
                descriptors_path,
                lambda: resolve_network(network, lambda: load_network(conf)),
                pick_device(device),
                overwrite=overwrite,
                source=conf.get("model"),
                progress=progress,
            )
            index_pairs = pairs_from_descriptors(torch.from_numpy(desc), conf["max_distance"], conf["min_pairs"], p=p)
            pairs = [(image_names[i], image_names[j]) for i, j in index_pairs]
    elif method == "vlad":
        if feature_path is None:
            raise ValueError(f"{pairs_path}: the vlad pairs pool local features; pass feature_path (the features file)")
        desc = vlad_descriptors(Path(feature_path), image_names, conf["clusters"], conf["sample"], conf["iterations"])
        k, p = neighbours(conf, len(image_names)), _check_p(conf["p"])
        index_pairs = pairs_from_descriptors(torch.from_numpy(desc), conf["max_distance"], k, p=p)
        pairs = [(image_names[i], image_names[j]) for i, j in index_pairs]
    else:
        raise ValueError(f"unknown pairs method {method!r}; expected 'exhaustive', 'retrieval' or 'vlad'")

    report_progress(progress, 1, 1, f"pairs {method}")
    io.write_pairs(pairs, pairs_path)
    io.stamp(pairs_path, made_from)
    unreadable = [n for n in image_names if not readable_image(Path(image_dir) / n)]
    logger.info("Wrote %d pairs for %d images to %s.%s", len(pairs), len(image_names) - len(unreadable), pairs_path,
                f" ({len(unreadable)} file(s) not readable as a photo, e.g. {unreadable[0]}: their pairs match nothing)"
                if unreadable else "")  # fmt: skip
    return pairs_path


def fingerprint(conf: dict, image_dir: Path, image_names: list[str], feature_path: Path | None = None) -> str:
    """What a pairs file depends on: names and conf; retrieval also the photos, VLAD their features."""
    method = conf.get("method", "exhaustive")
    if method == "exhaustive" or len(image_names) < conf.get("exhaustive_if_less", 0):
        return io.digest("pairs", conf, image_names)
    if method == "vlad" and feature_path is not None and Path(feature_path).exists():
        with io.FeatureReader(feature_path) as reader:
            return io.digest("pairs", conf, image_names, [reader.fingerprint(n) for n in image_names])
    return io.digest("pairs", conf, image_names, io.image_digests(image_dir, image_names))
