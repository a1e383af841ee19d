"""Did a change keep the pipeline's behaviour? Compares two work folders of the same run (before and after
the change: `imc-lib run` with the same data and options, each from its own checkout) file by file: every
pairs file, every dataset of every matches file, and per model folder the registered photos and models.

    python benchmarks/same_outputs.py BEFORE_WORK AFTER_WORK

Prints one table row per scene and exits 1 when anything differs (the mapper is seeded, but a large scene's
multi-threaded bundle adjustment is not bit-stable: compare the scores too, `imc-lib score`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from imc_lib.storage import io


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return found


def _matches(before: Path, after: Path) -> tuple[int, int]:
    """(datasets in `before`'s matches files, how many differ or are missing after)."""
    total = differ = 0
    for path in sorted(before.glob("*matches*.h5")):
        a = _datasets(path)
        b = _datasets(after / path.name) if (after / path.name).is_file() else {}
        total += len(a)
        differ += sum(name not in b or not np.array_equal(value, b[name]) for name, value in a.items())
    return total, differ


def _models(before: Path, after: Path) -> list[str]:
    """The model folders whose registered photos or models differ."""
    bad = []
    for path in sorted(before.glob("sfm*/summary.json")):
        other = after / path.relative_to(before)
        a, b = io.read_json(path), io.read_json(other) if other.is_file() else {}
        keys = ("registered_after", "models_after")
        if [a.get(k) for k in keys] != [b.get(k) for k in keys]:
            bad.append(path.parent.name)
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    print("| scene | pairs files (differ) | matches datasets (differ) | model folders that differ |")
    print("|---|---|---|---|")
    differs = 0
    for scene in sorted(p for p in args.before.iterdir() if p.is_dir()):
        other = args.after / scene.name
        pairs = sorted(scene.glob("*.txt"))
        pairs_differ = sum(
            not (other / p.name).is_file() or p.read_text() != (other / p.name).read_text() for p in pairs
        )
        total, matches_differ = _matches(scene, other)
        models = _models(scene, other)
        differs += pairs_differ + matches_differ + len(models)
        row = [scene.name, f"{len(pairs)} ({pairs_differ})", f"{total} ({matches_differ})", ", ".join(models) or "-"]
        print("| " + " | ".join(row) + " |")
    print(f"\n{'the same' if not differs else f'{differs} differences'}")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
