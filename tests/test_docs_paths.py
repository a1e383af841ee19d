"""Every file of the project that pyproject.toml, README.md or docs/ name exists: a renamed or moved file
leaves no reference to it behind (issue 40 found pyproject.toml naming three files that had moved)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A path into the project: from one of its top folders, or from a subpackage of imc_lib (as the docs say
# `stages/joining.py`), up to a space, a quote, a bracket or a backtick.
TOP = r"(?:imc_lib|tests|benchmarks|docs|tools|notebooks|submission|data|\.ci)"
SUB = r"(?:stages|storage|execution|formats|networks|app)"
PATH = re.compile(rf"(?<![\w./-])((?:{TOP}|{SUB})/[\w./-]*[\w/])")


def _documents() -> list[Path]:
    return [ROOT / "pyproject.toml", ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _ignored(path: str) -> bool:
    """A path git ignores: what a command makes (data/weights, work/), not a file of the project."""
    for form in (path, path + "/"):  # a pattern for folders ("data/weights/") matches the second
        if subprocess.run(["git", "check-ignore", "-q", form], cwd=ROOT, capture_output=True).returncode == 0:
            return True
    return False


def named_paths(text: str) -> set[str]:
    return {m.group(1).rstrip("/") for m in PATH.finditer(text)}


def test_the_pattern_finds_paths_as_the_documents_write_them():
    text = "see `imc_lib/stages/joining.py` and [docs](docs/results.md), stages/checks.py; ../shared/data/x.py"
    assert named_paths(text) == {"imc_lib/stages/joining.py", "docs/results.md", "stages/checks.py"}


def test_every_project_file_the_documents_name_exists():
    missing = []
    for document in _documents():
        for path in sorted(named_paths(document.read_text())):
            there = (ROOT / path).exists() or (ROOT / "imc_lib" / path).exists()
            if not there and not _ignored(path):
                missing.append(f"{document.relative_to(ROOT)}: {path}")
    assert missing == [], "\n".join(missing)
