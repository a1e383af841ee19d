"""Small helpers shared by the stages: device choice, image loading, conf merging (storage: `io`)."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger("imc_lib")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present unless `device` says otherwise."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_smoke_test(device: torch.device) -> None:
    """Run one small real CUDA kernel (a matmul) on `device` and wait for it; raises when CUDA cannot run."""
    a = torch.arange(64, dtype=torch.float32, device=device).reshape(8, 8)
    (a @ a).sum().item()
    torch.cuda.synchronize(device)


def usable_device(requested: str | torch.device | None = "auto") -> torch.device:
    """`pick_device(requested)`, or the CPU when CUDA is reported but cannot run a kernel.

    Kaggle's image reports CUDA on GPUs its torch has no kernels for (the P100, sm_60): the first
    real op fails, so every scene would fail. One small kernel at start-up finds out; on failure this
    says so in one loud line and returns cpu, so `pipeline.run` takes its CPU settings.
    """
    device = pick_device(requested)
    if device.type != "cuda":
        return device
    try:
        cuda_smoke_test(device)
    except Exception as err:  # RuntimeError/AcceleratorError "no kernel image is available", AssertionError, ...
        logger.error(
            "!!! CUDA is present but cannot run kernels on %s (%s: %s): running on the CPU with the CPU settings",
            device,
            type(err).__name__,
            str(err).strip().splitlines()[0] if str(err) else "",
        )
        return torch.device("cpu")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """fp16 on CUDA, full precision elsewhere (CPU bf16 is slower and less accurate here)."""
    return torch.float16 if device.type == "cuda" else None


# A photo is decoded whole only while its pixels, as decoded, number at most this many: 2**28, 268
# megapixels (0.8 GB as 8-bit RGB). A JPEG over it is decoded at 1/2, 1/4 or 1/8 scale (PIL's draft), so
# it is always read; another format over it is not read at all (PhotoTooLarge). PIL's own limit (179
# megapixels, a "decompression bomb") would refuse stitched panoramas, aerial and scanned photos outright.
MAX_DECODED_PIXELS = 2**28

_PIL_LIMIT = threading.Lock()  # guards PIL's module-wide bomb limit while `open_image` lifts it


class ImageError(OSError):
    """An image file that exists but cannot be decoded."""


class PhotoTooLarge(ImageError):
    """A photo that cannot be decoded within MAX_DECODED_PIXELS (not a JPEG, so not reducible)."""


@contextlib.contextmanager
def _naming(path: Path):
    """Errors of reading `path` as FileNotFoundError / ImageError that name the file and the fix."""
    try:
        yield
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found; check the data folder and the image list") from None
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: cannot read image ({err}); remove or replace the file") from err


@contextlib.contextmanager
def open_image(path: Path):
    """`PIL.Image.open(path)` as a context, its header read and its pixels not, without PIL's refusal
    of photos over 179 megapixels (read_image bounds what it decodes instead: MAX_DECODED_PIXELS).
    Errors in the block name the file (ImageError, FileNotFoundError)."""
    with _naming(path):
        with _PIL_LIMIT:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with im:
            yield im


def readable_image(path: Path) -> bool:
    """Whether PIL can read the photo's header (cheap: the pixels are not decoded)."""
    try:
        with open_image(path):
            return True
    except (ImageError, FileNotFoundError):
        return False


def read_image(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array on its stored pixel grid, or a reduced one.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB. A JPEG may come
    back smaller than stored (callers map positions back with `image_size`): decoded at a reduced
    scale when it is over twice `max_side` (at least `max_side` on its longest side, as asked), and
    always reduced to fit MAX_DECODED_PIXELS; another format over that bound raises PhotoTooLarge.
    The EXIF orientation tag is deliberately not applied: IMC ground-truth poses refer to the pixels
    as stored, as COLMAP reads them.
    """
    path = Path(path)
    with open_image(path) as im:
        _draft(im, max_side)
        if im.size[0] * im.size[1] > MAX_DECODED_PIXELS:
            raise PhotoTooLarge(
                f"{path}: a {im.size[0]}x{im.size[1]} {im.format} photo is over the {MAX_DECODED_PIXELS / 1e6:.3g} "
                "megapixels a photo may take decoded (imc_lib.utils.MAX_DECODED_PIXELS), and only JPEGs decode "
                "reduced; save it as JPEG, or smaller, to use it"
            )
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(im, dtype=np.float32)
            top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
            im = Image.fromarray((np.clip(array / top, 0, 1) * 255).round().astype(np.uint8))
        array = np.array(im.convert("RGB"))
    if array.size == 0:
        raise ImageError(f"{path}: image has no pixels; remove or replace the file")
    return array


def _draft(im: Image.Image, max_side: int | None) -> None:
    """Ask a JPEG to decode reduced (PIL's draft: 1/2, 1/4 or 1/8; other formats ignore it): as far
    as `max_side` allows when it is over twice that, and at least as far as MAX_DECODED_PIXELS needs."""
    w, h = im.size
    request = (max_side, max_side) if max_side and max(w, h) > 2 * max_side else None
    asked = min(w // max_side, h // max_side) if request else 1  # the reduction draft makes of `request`
    scale = next(s for s in (8, 4, 2, 1) if asked >= s)
    while scale < 8 and math.ceil(w / scale) * math.ceil(h / scale) > MAX_DECODED_PIXELS:
        scale, request = scale * 2, (w // (scale * 2), h // (scale * 2))
    if request:
        im.draft("RGB", request)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as stored, without decoding its pixels."""
    with open_image(path) as im:
        return im.size


def colmap_image_dir(image_dir: Path, names: list[str], folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """The folder COLMAP should read `names` from, and for each photo it sees reduced there the
    scale (x, y) from the stored photo's pixel grid to that copy's.

    COLMAP decodes every photo whole, to import it and to colour the model's points: 1.7 GB and 10 s
    for one 20000x20000 JPEG. When some of `names` are over MAX_DECODED_PIXELS (JPEGs: the features
    read them reduced), `folder` gets a copy of each decoded at 1/8 (EXIF kept, so COLMAP's focal
    guess scales with it) and a link to every other photo; else `image_dir` itself is the answer.
    """
    image_dir, folder = Path(image_dir), Path(folder)
    sizes = {n: image_size(image_dir / n) for n in names}
    large = {n for n, (w, h) in sizes.items() if w * h > MAX_DECODED_PIXELS}
    if not large:
        return image_dir, {}
    shutil.rmtree(folder, ignore_errors=True)
    scales = {}
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if name not in large:
            (folder / name).symlink_to((image_dir / name).resolve())
            continue
        with open_image(image_dir / name) as im:
            exif = im.info.get("exif", b"")
        reduced = read_image(image_dir / name, max_side=1)  # as far as a JPEG reduces: 1/8, 4+ megapixels here
        Image.fromarray(reduced).save(folder / name, "JPEG", quality=95, exif=exif)
        scales[name] = np.array([reduced.shape[1], reduced.shape[0]]) / np.array(sizes[name])
    logger.info("%s: %d photo(s) over %.3g megapixels reach COLMAP decoded at 1/8 (%s)", folder, len(large),
                MAX_DECODED_PIXELS / 1e6, ", ".join(sorted(large)))  # fmt: skip
    return folder, scales


def resolve_network(network, load):
    """The network to use: `network` if already loaded, `network()` if it is a loader, else `load()`.

    Stages take a loader so a caller can share one network across scenes yet load it only when
    some scene still has work for it.
    """
    if network is None:
        return load()
    if callable(network) and not isinstance(network, torch.nn.Module):
        return network()
    return network


def merge_conf(default: Mapping, conf: Mapping | None) -> dict:
    """A copy of `default` with `conf` over it, nested dicts merged key by key (LightGlue's
    `{**default_conf, **conf}`, recursively): a partial conf keeps every other key of the default.
    A value that is not a dict on both sides is replaced; neither argument is changed, and the
    result shares no dict or list with them."""
    merged = copy.deepcopy(dict(default))
    for key, value in (conf or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_conf(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


_UNSET = object()


def _lookup(conf: Mapping | None, path: str):
    """conf["a"]["b"] for path "a.b", or _UNSET where a key is missing."""
    for key in path.split("."):
        if not isinstance(conf, Mapping) or key not in conf:
            return _UNSET
        conf = conf[key]
    return conf


def named_default(confs: Mapping[str, Mapping], conf: Mapping | None, keys: Sequence[str]) -> Mapping:
    """The entry of a stage's `confs` that a partial `conf` names: the one agreeing with the most
    of the `keys` (dotted paths, e.g. "model.name") that `conf` sets, the earlier on a tie, so the
    first entry (the stage's default) when it sets none of them or none agrees."""
    given = {k: v for k in keys if (v := _lookup(conf, k)) is not _UNSET}
    return max(confs.values(), key=lambda c: sum(_lookup(c, k) == v for k, v in given.items()))


def full_conf(confs: Mapping[str, Mapping], conf: Mapping | None, keys: Sequence[str] = ()) -> dict:
    """`conf` merged over the entry of `confs` it names by `keys` (named_default): what each stage's
    `main` runs with, so a partial conf is not a KeyError."""
    return merge_conf(named_default(confs, conf, keys), conf)
