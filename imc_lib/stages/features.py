"""Local features (ALIKED, DISK or XFeat, via kornia) for every image of a scene -> `feats-*.h5`.

HDF5 layout, one group per image name:
    keypoints    (N, 2) float32, pixel coordinates in the original image (pixel centres at integers)
    descriptors  (N, D) float32
    scores       (N,)   float32
    image_size   (2,)   int, original (width, height)
and attributes `turns` (quarter turns it was extracted at) and `fingerprint` (the photo's content,
its turns and this conf: `io.feature_fingerprint`); a group whose fingerprint differs is extracted again.

A partial conf is merged over the `confs` entry it names (DEFAULT_BY; utils.full_conf).
"""

from __future__ import annotations

import logging
from pathlib import Path

import kornia
import numpy as np
import torch

from .. import networks
from ..execution import budget
from ..execution.progress import bar as progress_bar
from ..storage import io
from ..storage.io import failed_images, read_features  # noqa: F401  (their old home; callers may import them from here)
from ..utils import (
    ImageError,
    PhotoTooLarge,
    autocast_dtype,
    full_conf,
    image_size,
    pick_device,
    read_image,
    resolve_network,
)

logger = logging.getLogger(__name__)

# Every registered extractor's named confs (imc_lib/networks: aliked-n16, aliked-n16rot, aliked-t16,
# disk, xfeat), read live so a network registered later is found too.
confs = networks.Registered("confs", networks.EXTRACTORS)

# A partial conf given to `main` is merged over the entry of `confs` it names by these keys (its
# output name, or the network: `{"model": {"name": "disk"}}` is DISK's), else over aliked-n16.
DEFAULT_BY = ("output", "model.name", "model.model_name")


def target_side(resize_to: int | list[int] | None, side: int) -> int | None:
    """The longest side a photo of longest side `side` is extracted at: `resize_to` pixels, or for
    bounds [low, high] its own size within them, where a photo under `low` (a video frame, a web
    thumbnail) is enlarged to twice its size (None: as decoded). Twice: the details of a low-resolution
    frame are a pixel or two wide, finer than the detector sees (imc-real rooftop's 480x270 frames:
    mAA 0.226 at 640 px, 0.405 at 960)."""
    if isinstance(resize_to, (list, tuple)):
        low, high = resize_to
        return int(min(max(2 * side if side < low else side, low), high))
    return resize_to


def max_side(conf: dict) -> int | None:
    """The most pixels on a side `conf` extracts at (what a photo need be decoded at, at least)."""
    resize_to = conf.get("resize_to")
    return max(resize_to) if isinstance(resize_to, (list, tuple)) else resize_to


def prepare(image: np.ndarray, resize_to, device: torch.device, multiple: int = 1) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, h, w) float tensor whose longest side is `resize_to` (pixels, or
    bounds: `target_side`), both sides rounded down to a `multiple` (at least one)."""
    # Contiguous: kornia's antialiasing blur on the (channels-last) view of the array ran 4.5x slower.
    tensor = kornia.image.image_to_tensor(image, keepdim=False).contiguous().float().div(255).to(device)
    h, w = image.shape[:2]
    resize_to = target_side(resize_to, max(h, w))
    scale = resize_to / max(h, w) if resize_to else 1.0
    size = tuple(max(multiple, round(side * scale) // multiple * multiple) for side in (h, w))
    if size != (h, w):
        tensor = kornia.geometry.resize(
            tensor, size, interpolation="area" if scale < 1 else "bilinear", antialias=scale < 1
        )
    return tensor


@torch.inference_mode()
def extract(
    network: torch.nn.Module,
    conf: dict,
    image: np.ndarray,
    device: torch.device,
    turns: int = 0,
    stored_size: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """Keypoints, descriptors and scores of one RGB image, keypoints on its stored pixel grid.

    `turns`: extract on the image turned by that many quarter turns counter-clockwise (see the
    orientation stage). `stored_size`: (w, h) of the file when `image` was decoded smaller.
    """
    stored = np.array(stored_size or (image.shape[1], image.shape[0]), dtype=np.int64)
    if turns % 4:
        image = np.ascontiguousarray(np.rot90(image, turns))
    mconf = conf["model"]
    net = networks.extractor(mconf["name"])
    tensor = prepare(image, conf.get("resize_to"), device, net.SIDE_MULTIPLE)
    turned = stored[::-1] if turns % 2 else stored
    scales = (turned / np.array([tensor.shape[-1], tensor.shape[-2]])).astype(np.float32)
    with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda" and net.HALF):
        kpts, desc, scores = net.detect(network, mconf, tensor)
    kpts = kpts.float().cpu().numpy().reshape(-1, 2)
    kpts = (kpts + 0.5) * scales[None] - 0.5
    if turns % 4:
        kpts = rotate_keypoints_back(kpts, turns, tuple(stored))
    return {
        "keypoints": kpts.astype(np.float32),
        "descriptors": desc.float().cpu().numpy().astype(np.float32).reshape(len(kpts), desc.shape[-1]),
        "scores": scores.float().cpu().numpy().astype(np.float32).reshape(-1),
        "image_size": stored,
    }


def extract_with_retry(
    network: torch.nn.Module,
    conf: dict,
    image: np.ndarray,
    device: torch.device,
    turns: int = 0,
    stored_size=None,
    attempts: int = 3,
) -> dict[str, np.ndarray]:
    """`extract`, retried at 70% of the resolution each time the device runs out of memory."""
    device = pick_device(device)
    for attempt in range(attempts):
        try:
            return extract(network, conf, image, device, turns, stored_size)
        except torch.OutOfMemoryError:
            if attempt == attempts - 1:
                raise
            smaller = int((target_side(conf.get("resize_to"), max(image.shape[:2])) or max(image.shape[:2])) * 0.7)
            logger.warning("out of memory extracting at %s px; retrying at %d px", conf.get("resize_to"), smaller)
            conf = {**conf, "resize_to": smaller}
            if device.type == "cuda":
                torch.cuda.empty_cache()


def rotate_keypoints_back(kpts: np.ndarray, turns: int, size: tuple[int, int]) -> np.ndarray:
    """Keypoints of `np.rot90(image, turns)` -> the stored image's pixel grid; `size` = stored (w, h)."""
    kpts = np.asarray(kpts, dtype=np.float32).copy()
    w, h = size
    for level in range(turns % 4, 0, -1):
        # np.rot90 once sends stored (x, y) to (y, W - 1 - x); undo one turn at a time.
        height = w if level % 2 else h  # height of np.rot90(image, level)
        kpts = np.stack([height - 1 - kpts[:, 1], kpts[:, 0]], axis=1)
    return kpts


FEATURE_KEYS = ("keypoints", "descriptors", "scores", "image_size")


def main(
    conf: dict,
    image_dir: Path,
    image_names: list[str],
    feature_path: Path,
    device=None,
    overwrite: bool = False,
    network: torch.nn.Module | None = None,
    weights: str | Path | None = None,
    turns: dict[str, int] | None = None,
    deadline: float | None = None,
    reuse: Path | None = None,
    progress=None,
) -> Path:
    """Extract features for `image_names` into `feature_path`, skipping images already there.

    An image that cannot be read is logged (naming the file) and stored with no keypoints, so the
    scene goes on without it and a rerun does not retry it (unless the file changed, or `overwrite`).
    Each image's group records the fingerprint of its photo's bytes, turns and `conf`: a photo
    replaced under its name, turned otherwise, or a changed conf is extracted again, the rest reused.
    `turns`: quarter turns per image from the orientation stage (default none).
    `network`: a loaded extractor or a zero-argument loader, called only if some image still needs
    extracting; by default the network of `conf` is loaded.
    `deadline` (time.monotonic seconds): past it, budget.OutOfTime is raised before the next image;
    what was extracted stays for a rerun.
    `reuse`: a file of features another stage already extracted with this conf at some photos' turns
    (the `mnn` orientation's); those photos are copied from it instead of extracted again.
    `progress`: callback(done, total, desc) after each image (default: a tqdm bar).
    """
    conf = full_conf(confs, conf, DEFAULT_BY)  # a partial conf over the default it names
    device = pick_device(device)
    feature_path = Path(feature_path)
    turns = turns or {}
    expected = fingerprints(conf, image_dir, image_names, turns)
    todo = io.pending(feature_path, list(image_names), FEATURE_KEYS, overwrite, "images", expected)
    todo = _copy_reusable(reuse, feature_path, todo, expected)
    if not todo:
        return feature_path
    network = resolve_network(network, lambda: networks.load_extractor(conf, weights, device))
    sides: dict[int, int] = {}  # longest side extracted at -> photos
    for name in progress_bar(todo, desc=f"features {conf['output']}", callback=progress, unit="img"):
        budget.check(deadline, f"feature extraction ({feature_path})")
        logger.debug("%s: extracting %s", feature_path, name)  # the images before it are stored
        path = Path(image_dir) / name
        try:
            size = image_size(path)
            image = read_image(path, max_side=max_side(conf))
        except (ImageError, FileNotFoundError) as err:  # a photo too large to decode is a choice, not a fault
            logger.log(logging.WARNING if isinstance(err, PhotoTooLarge) else logging.ERROR,
                       "%s; it gets no keypoints and no pose", err)  # fmt: skip
            io.write_group(feature_path, name, _no_features(), {"error": str(err), io.FINGERPRINT: expected[name]})
            continue
        feats = extract_with_retry(network, conf, image, device, turns.get(name, 0), size)
        io.write_group(feature_path, name, feats, {"turns": turns.get(name, 0), io.FINGERPRINT: expected[name]})
        side = target_side(conf.get("resize_to"), max(size))
        sides[side] = sides.get(side, 0) + 1
    _log_sides(feature_path, conf, sides)
    return feature_path


def _log_sides(feature_path: Path, conf: dict, sides: dict) -> None:
    """Which longest side the photos were extracted at, and why (bounds: their own size within them)."""
    if isinstance(conf.get("resize_to"), (list, tuple)) and sides:
        said = ", ".join(f"{n} at {side} px" for side, n in sorted(sides.items()))
        logger.info("%s: each photo at its own size within %d-%d px (larger ones reduced, smaller ones at twice "
                    "their size): %s", feature_path, *conf["resize_to"], said)  # fmt: skip


def fingerprints(conf: dict, image_dir: Path, image_names: list[str], turns: dict[str, int]) -> dict[str, str]:
    """image name -> the fingerprint its features group must carry: photo content, turns, `conf`."""
    photos = io.image_digests(image_dir, image_names)
    return {n: io.feature_fingerprint(photos[n], turns.get(n, 0), conf) for n in image_names}


def _copy_reusable(reuse: Path | None, feature_path: Path, todo: list[str], expected: dict[str, str]) -> list[str]:
    """Copy from `reuse` the groups of `todo` whose fingerprint is the one asked now; the rest of `todo`."""
    if reuse is None or not Path(reuse).exists():
        return todo
    with io.FeatureReader(reuse) as reader:
        found = [n for n in todo if reader.fingerprint(n) == expected[n]]
        for name in found:
            attrs = {"turns": reader.attrs(name).get("turns", 0), io.FINGERPRINT: expected[name]}
            io.write_group(feature_path, name, {k: reader[name][k] for k in FEATURE_KEYS}, attrs)
    if found:
        logger.info("%s: %d turned photos reused from %s", feature_path, len(found), reuse)
    return [n for n in todo if n not in set(found)]


def _no_features() -> dict[str, np.ndarray]:
    return {
        "keypoints": np.zeros((0, 2), np.float32),
        "descriptors": np.zeros((0, 0), np.float32),
        "scores": np.zeros((0,), np.float32),
        "image_size": np.zeros((2,), np.int64),
    }
