"""imc_lib.execution.progress: one loop, shown by tqdm, as log lines, or reported to a callback."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

from tqdm import tqdm

from imc_lib.execution import progress

ROOT = Path(__file__).resolve().parents[1]


def test_bar_reports_to_a_callback_or_drives_tqdm(monkeypatch):
    heard = []
    items = list(progress.bar(["a", "b", "c"], desc="features", callback=lambda *e: heard.append(e), unit="img"))
    assert items == ["a", "b", "c"]
    assert heard == [(0, 3, "features"), (1, 3, "features"), (2, 3, "features"), (3, 3, "features")]

    heard.clear()
    with progress.bar(desc="turned", callback=lambda *e: heard.append(e)) as bar:  # no length known
        bar.update()
        bar.update()
    assert heard == [(0, None, "turned"), (1, None, "turned"), (2, None, "turned")]

    heard.clear()
    with progress.bar(desc="off", callback=lambda *e: heard.append(e), disable=True) as bar:
        bar.update()
    assert heard == []

    monkeypatch.setattr(progress, "shown_on", lambda: "terminal")
    shown = progress.bar(range(2), desc="cli", disable=True)
    assert isinstance(shown, tqdm) and list(shown) == [0, 1]
    progress.report(None, 1, 1, "nobody listens")  # no callback: nothing to call
    progress.report(lambda *e: heard.append(e), 1, 1, "pairs")
    assert heard == [(1, 1, "pairs")]


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_bar_is_drawn_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))
    assert progress.shown_on() == "terminal"
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))
    assert progress.shown_on() == "log"  # a file, a pipe; no Jupyter kernel here
    assert not isinstance(progress.bar(range(3), desc="features"), tqdm)


def test_off_a_terminal_a_loop_is_one_log_line_or_one_every_interval(monkeypatch, caplog):
    monkeypatch.setattr(progress, "shown_on", lambda: "log")
    with caplog.at_level(logging.INFO, logger="imc_lib.execution.progress"):
        assert list(progress.bar(range(40), desc="features feats-x", unit="img")) == list(range(40))
    (line,) = caplog.messages
    assert re.fullmatch(r"features feats-x: 40 img in \d+\.\d s \(\d+\.\d\d s/img\)", line), line

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="imc_lib.execution.progress"):
        list(progress.bar([], desc="nothing to do"))
        with progress.bar(desc="orientation, turned", unit="photo", disable=True) as bar:
            bar.update()
    assert caplog.messages == []  # nothing done, or silenced: no line

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a slow loop: a line as it goes, then the summary
    with caplog.at_level(logging.INFO, logger=progress.__name__), progress.bar(desc="turned", unit="photo") as bar:
        bar.update()
        bar.update()
    *going, done = caplog.messages
    assert len(going) == 2 and all(re.fullmatch(r"turned: [12] photos? so far, \d+ s", m) for m in going), going
    assert done.startswith("turned: 2 photos in ")  # "photo" for one, "photos" for more

    caplog.clear()  # with a total: the time left, from the rate so far
    with (
        caplog.at_level(logging.INFO, logger=progress.__name__),
        progress.bar(range(4), desc="pairs", unit="pair") as bar,
    ):
        list(bar)
    *going, done = caplog.messages
    assert re.fullmatch(r"pairs: 1/4 pair so far, \d+ s, about \d+ s to go", going[0]), going
    assert done.startswith("pairs: 4 pairs in ")


def test_a_run_logged_to_a_file_is_a_few_lines_a_stage(tmp_path, imc_data_dir, weights_dir):
    """`imc-lib run` on imc-mini with stderr to a file (CI, nohup, a Kaggle log), small settings:
    no bar fragments, under 150 lines, and every stage's summary line for every scene."""
    log = tmp_path / "run.log"
    with log.open("w") as stderr:
        # fmt: off
        subprocess.run([sys.executable, "-m", "imc_lib.cli", "run", str(imc_data_dir), "--work", str(tmp_path / "work"),
                        "--out", str(tmp_path / "submission.csv"), "--weights", str(weights_dir), "--device", "cpu",
                        "--max-keypoints", "256", "--resize-to", "256"],
                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, check=True, timeout=600)
        # fmt: on
    text = log.read_text()
    lines = text.splitlines()  # "\r" splits too: a bar's refreshes would count one by one
    assert "\r" not in text and 40 < len(lines) < 150, len(lines)
    scenes = {"entry": 10, "fountain": 11, "herzjesu-p8": 8, "temple": 16}
    for scene, photos in scenes.items():
        summaries = [  # each stage's summary line, as the stage or its loop writes it
            rf"imc_lib\.execution\.progress: features feats-\S+: {photos} img in ",
            rf"imc_lib\.stages\.pairs: Wrote {photos * (photos - 1) // 2} pairs for {photos} images to \S+/{scene}/",
            rf"imc_lib\.execution\.progress: orientation: {photos * (photos - 1) // 2} pairs in ",
            rf"imc_lib\.stages\.orientation: \S+/{scene}/orient-mnn\S+: \d+ of {photos} photos turned",
            rf"imc_lib\.execution\.progress: matching matches-mnn: {photos * (photos - 1) // 2} pairs in ",
            rf"imc_lib\.stages\.reconstruction: \S+/{scene}/\S+/models: \d+ model\(s\) -> \d+ cluster\(s\), "
            rf"\d+ -> \d+ of {photos} photos registered",
            rf"imc_lib\.pipeline: scene {scene}: \d+ of {photos} images registered in \S+ s \(features \S+ s, pairs ",
        ]
        for summary in summaries:
            assert re.search(summary, text), (summary, text)
