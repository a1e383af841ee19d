"""The one storage layer: HDF5 groups of features and matches, pairs files, fingerprints, atomic writes.

Every stage reads and writes through here. Each stored result records a fingerprint of what made
it (its inputs' fingerprints and its stage conf) in its `fingerprint` attribute (HDF5 groups) or in
a `<file>.fingerprint` file beside it (text files, model folders), so a photo replaced under the
same name, or a changed conf, is recomputed instead of served stale:

    photo       sha1 of the file's bytes                    (`file_digest`)
    features    photo, quarter turns, features conf          (`feature_fingerprint`, per image)
    matches     both images' feature fingerprints, conf      (`match_fingerprint`, per pair)
    matcher's   both images' feature fingerprints, matcher    (`matcher_fingerprint`, per pair: matches
    output                                                    one stage made that the matching stage may copy)
    pairs, orientations, model   their inputs' fingerprints + conf, whole file (`stamp`, `is_current`)
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np

logger = logging.getLogger(__name__)

FINGERPRINT = "fingerprint"  # the attribute (HDF5) or file suffix (text files, folders) holding it


# ---- fingerprints ----------------------------------------------------------------------------


def digest(*parts) -> str:
    """A short stable hash of JSON-able parts (dicts hashed with sorted keys; other objects by str)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


_file_digests: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """sha1 of a file's bytes ("missing" when there is no file); cached while its inode, size and
    modification and change times stay the same (a photo is hashed once per process, not per stage)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return "missing"
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _file_digests:
        _file_digests[key] = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:16]
    return _file_digests[key]


def image_digests(image_dir: Path, names: list[str]) -> dict[str, str]:
    """name -> `file_digest` of each photo: what its results are keyed by besides the name."""
    return {n: file_digest(Path(image_dir) / n) for n in names}


def feature_fingerprint(photo: str, turns: int, conf: dict) -> str:
    """What one image's features depend on: the photo's content, its quarter turns, the features conf."""
    return digest("features", photo, int(turns), conf)


def match_fingerprint(features0: str | None, features1: str | None, conf: dict) -> str:
    """What one pair's matches depend on: both images' feature fingerprints and the matching conf."""
    return digest("matches", features0, features1, conf)


def matcher_fingerprint(features0: str | None, features1: str | None, model: dict) -> str:
    """What a matcher's raw output for one pair depends on (before the matching stage drops weak pairs):
    both images' feature fingerprints and the matcher's conf (a matching conf's `model`)."""
    return digest("matcher", features0, features1, model)


def stamp_path(path: Path) -> Path:
    """Where the fingerprint of a whole file or folder is kept: `<path>.fingerprint` beside it."""
    return Path(path).with_name(Path(path).name + "." + FINGERPRINT)


def stamp(path: Path, fingerprint: str) -> None:
    """Record what made the file or folder `path` (written after it, so a killed run leaves it unstamped)."""
    with atomic_file(stamp_path(path), encoding="utf-8") as f:
        f.write(fingerprint + "\n")


def is_current(path: Path, fingerprint: str) -> bool:
    """Whether `path` exists and was stamped with `fingerprint` (a file from an older version has no stamp)."""
    stamp_file = stamp_path(path)
    if not Path(path).exists() or not stamp_file.exists():
        return False
    return stamp_file.read_text(encoding="utf-8").strip() == fingerprint


def reusable(path: Path, fingerprint: str, overwrite: bool, what: str) -> bool:
    """Whether a whole-file result can be reused: it exists, is stamped with `fingerprint`, and no
    `overwrite`; logs one line saying it is reused or recomputed because its inputs changed."""
    if overwrite:
        return False
    if is_current(path, fingerprint):
        logger.info("%s: reusing %s (same inputs and conf)", path, what)
        return True
    if Path(path).exists():
        logger.info("%s: recomputing %s, their inputs or conf changed", path, what)
    return False


# ---- resumable HDF5 groups ------------------------------------------------------------------


def pending(
    path: Path,
    keys: list[str],
    required: tuple[str, ...],
    overwrite: bool,
    what: str,
    fingerprints: dict[str, str] | None = None,
) -> list[str]:
    """Keys of `keys` whose HDF5 group in `path` must be (re)computed: the work left.

    A group is done when it holds every `required` dataset and, if `fingerprints` are given, its
    `fingerprint` attribute equals fingerprints[key] (else its inputs or conf changed). Resumes
    killed runs: an incomplete group counts as missing, and a file HDF5 cannot open (a run killed
    mid-write) is moved aside as `*.corrupt` and started afresh, with a warning. Logs one line:
    how many were reused, how many are recomputed because their inputs changed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and path.exists():
        path.unlink()
    done: set[str] = set()
    changed: set[str] = set()
    if path.exists():
        try:
            with h5py.File(path, "r") as f:
                done = {k for k in keys if k in f and all(r in f[k] for r in required)}
                if fingerprints is not None:
                    changed = {k for k in done if f[k].attrs.get(FINGERPRINT) != fingerprints[k]}
        except OSError as err:
            corrupt = path.with_name(path.name + ".corrupt")
            logger.warning(
                "%s: unreadable (%s), probably from a killed run; moved to %s and recomputing", path, err, corrupt
            )
            os.replace(path, corrupt)
    done -= changed
    todo = [k for k in keys if k not in done]
    logger.info(
        "%s: reusing %d of %d %s; %d recomputed because their inputs changed, %d new",
        path,
        len(done),
        len(keys),
        what,
        len(changed),
        len(todo) - len(changed),
    )
    return todo


def write_group(path: Path, key: str, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> None:
    """(Re)write one HDF5 group; datasets in the given order, so the last one marks it complete."""
    with h5py.File(path, "a") as f:
        if key in f:
            del f[key]
        group = f.create_group(key)
        for name, value in (attrs or {}).items():
            group.attrs[name] = value
        for name, value in arrays.items():
            group.create_dataset(name, data=value)


def pair_key(name0: str, name1: str) -> str:
    """HDF5 dataset name for a pair; '/' in image names would create nested groups."""
    return f"{name0.replace('/', '-')}/{name1.replace('/', '-')}"


@contextlib.contextmanager
def atomic_file(path: Path, **open_kwargs):
    """Write a text file through a temporary file beside it, moved into place only if the block
    succeeds: a killed run never leaves a partial file that a rerun would take as done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", **open_kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value) -> None:
    """A small JSON record (a stage's summary), written atomically."""
    with atomic_file(path) as handle:
        json.dump(value, handle, indent=1, sort_keys=True)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


# ---- features and matches --------------------------------------------------------------------


class _Reader:
    """One stage's HDF5 file opened once for reading (`what` and `stage` name it in the error when
    it is missing); a context manager that closes it."""

    def __init__(self, path: Path, what: str, stage: str):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no {what} file; run the {stage} stage first")
        self.file = h5py.File(self.path, "r")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()


class FeatureReader(_Reader):
    """Reads one features file, opened once: `reader[name]` -> that image's arrays (the last `size`
    images kept in memory), `reader.attrs(name)`, `reader.fingerprint(name)`. Use as a context manager."""

    def __init__(self, path: Path, size: int = 64):
        super().__init__(path, "features", "features")
        self.size = size
        self.cache: collections.OrderedDict[str, dict] = collections.OrderedDict()

    def __contains__(self, name: str) -> bool:
        return name in self.file

    def names(self) -> list[str]:
        return list(self.file)

    def _group(self, name: str) -> h5py.Group:
        if name not in self.file:
            raise KeyError(f"{self.path}: no features for image {name!r}; run the features stage first")
        return self.file[name]

    def __getitem__(self, name: str) -> dict[str, np.ndarray]:
        if name in self.cache:
            self.cache.move_to_end(name)
        else:
            self.cache[name] = {k: v[()] for k, v in self._group(name).items()}
            if len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return self.cache[name]

    def attrs(self, name: str) -> dict:
        return dict(self._group(name).attrs)

    def fingerprint(self, name: str) -> str | None:
        """The stored fingerprint of one image's features (None when absent or from an older version)."""
        return self.file[name].attrs.get(FINGERPRINT) if name in self.file else None


def read_features(feature_path: Path, name: str) -> dict[str, np.ndarray]:
    """All arrays stored for one image (opens the file; loops use a `FeatureReader`)."""
    with FeatureReader(feature_path, size=1) as reader:
        return reader[name]


def failed_images(feature_path: Path) -> dict[str, str]:
    """image name -> why it has no features (unreadable files), from a features file."""
    with h5py.File(feature_path, "r") as f:
        return {name: f[name].attrs["error"] for name in f if "error" in f[name].attrs}


class MatchReader(_Reader):
    """Reads one matches file, opened once: `reader(name0, name1)` -> ((M, 2) indices, (M,) scores)
    in the order asked, whichever order the pair was stored in. Use as a context manager."""

    def __init__(self, path: Path):
        super().__init__(path, "matches", "matching")

    def _find(self, name0: str, name1: str) -> tuple[h5py.Group | None, bool]:
        for a, b, flip in ((name0, name1, False), (name1, name0, True)):
            if pair_key(a, b) in self.file:
                return self.file[pair_key(a, b)], flip
        return None, False

    def __call__(self, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
        group, flip = self._find(name0, name1)
        if group is None:
            raise KeyError(f"{self.path}: pair {name0} {name1} not matched; run the matching stage first")
        matches, scores = group["matches"][()], group["scores"][()]
        return (matches[:, ::-1].copy() if flip else matches), scores

    def holds(self, name0: str, name1: str) -> bool:
        """Whether the pair is stored complete in this order (name0's keypoints first)."""
        key = pair_key(name0, name1)
        return key in self.file and all(k in self.file[key] for k in ("matches", "scores"))

    def fingerprint(self, name0: str, name1: str) -> str | None:
        """The stored fingerprint of a pair's matches (None when absent)."""
        group, _ = self._find(name0, name1)
        return None if group is None else group.attrs.get(FINGERPRINT)


def read_matches(match_path: Path, name0: str, name1: str) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) indices and (M,) scores of one pair (opens the file; loops use a `MatchReader`)."""
    with MatchReader(match_path) as reader:
        return reader(name0, name1)


# ---- pairs files ----------------------------------------------------------------------------


def write_pairs(pairs: list[tuple[str, str]], path: Path) -> None:
    """Write the pairs file atomically, so an interrupted run never leaves a partial file to reuse."""
    with atomic_file(path, encoding="utf-8") as f:
        f.writelines(f"{_escape(a)} {_escape(b)}\n" for a, b in pairs)


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The (name0, name1) pairs of a pairs file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pairs file not found; run the pairs stage (imc_lib.stages.pairs) first")
    pairs = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'name0 name1', got {line.rstrip()!r}")
            pairs.append((unquote(fields[0]), unquote(fields[1])))
    return pairs


def _escape(name: str) -> str:
    """A name as one whitespace-free field: '%' and whitespace percent-encoded (read back by unquote)."""
    return "".join(f"%{ord(c):02X}" if c == "%" or c.isspace() else c for c in name)
