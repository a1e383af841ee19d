"""Every bad option or path of `imc-lib run` is refused before any work starts: exit 2, one line naming
the value and the fix, no traceback, nothing computed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imc_lib import cli

SAMPLE = Path(__file__).resolve().parents[1] / "data"  # the shipped sample: IMC 2024 layout, 8 photos


def _refused(capsys, argv: list[str], *named: str) -> str:
    """Runs `imc-lib run` + argv; asserts exit 2 with one error line holding each of `named`."""
    assert cli.main(["run", *argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imc-lib: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _nothing_computed(*folders: Path) -> None:
    made = [p for f in folders if f.exists() for p in f.rglob("*") if p.is_file()]
    assert made == [], made


@pytest.fixture
def photos(tmp_path) -> Path:
    """A plain folder of two photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in sorted((SAMPLE / "train/herzjesu-p8/images").iterdir())[:2]:
        shutil.copy(name, folder / name.name)
    return folder


@pytest.mark.parametrize(
    "option, value, fix",
    [
        ("--resize-to", "-5", "at least 32"),
        ("--resize-to", "0", "or auto"),
        ("--max-keypoints", "-3", "at least 1"),
        ("--max-keypoints", "0", "at least 1"),
        ("--prefilter", "-1", "at least 0"),
    ],
)
def test_a_size_or_count_below_its_least_is_refused(capsys, tmp_path, option, value, fix):
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    _refused(capsys, [str(SAMPLE), "--work", str(work), "--out", str(out), option, value], f"{option} {value}", fix)
    _nothing_computed(work)
    assert not out.exists()


def test_a_work_path_that_is_a_file_is_refused(capsys, tmp_path):
    work = tmp_path / "work.txt"
    work.write_text("not a folder\n")
    out = tmp_path / "submission.csv"
    _refused(capsys, [str(SAMPLE), "--work", str(work), "--out", str(out)], str(work), "is a file", "--work")
    assert work.read_text() == "not a folder\n" and not out.exists()


def test_a_plain_folders_out_that_is_a_file_is_refused_before_computing(capsys, tmp_path, photos):
    out, work = tmp_path / "out.csv", tmp_path / "work"
    out.write_text("x\n")
    _refused(capsys, [str(photos), "--work", str(work), "--out", str(out)], str(out), "is a file", "--out")
    _nothing_computed(work)


def test_a_submission_path_that_is_a_folder_is_refused(capsys, tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    out.mkdir()
    _refused(capsys, [str(SAMPLE), "--work", str(work), "--out", str(out)], str(out), "is a folder", "submission.csv")
    _nothing_computed(work, out)


def test_an_export_path_that_is_a_file_is_refused(capsys, tmp_path):
    export, work = tmp_path / "export", tmp_path / "work"
    export.write_text("x\n")
    argv = [str(SAMPLE), "--work", str(work), "--out", str(tmp_path / "s.csv"), "--export", str(export)]
    _refused(capsys, argv, str(export), "--export")
    _nothing_computed(work)


def _unwritable(tmp_path) -> Path:
    """A folder this process cannot create or write in: under /sys (read-only even for root), else a
    folder without write permission (for other users)."""
    try:
        (Path("/sys") / "imc-lib-probe").mkdir()
    except OSError:
        return Path("/sys") / "imc-lib-out"
    if os.geteuid() == 0:
        pytest.skip("root here can write /sys and every folder: nothing to refuse")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked / "out"


def test_an_output_folder_that_cannot_be_written_is_refused(capsys, tmp_path, photos):
    out, work = _unwritable(tmp_path), tmp_path / "work"
    _refused(capsys, [str(photos), "--work", str(work), "--out", str(out)], str(out), "cannot be written", "--out")
    _nothing_computed(work)
    _refused(capsys, [str(photos), "--work", str(out / "work"), "--out", str(tmp_path / "o")], "--work")


def test_a_path_under_a_file_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("x\n")
    out = tmp_path / "file" / "submission.csv"
    _refused(capsys, [str(SAMPLE), "--work", str(tmp_path / "work"), "--out", str(out)], "file: is a file", "--out")
