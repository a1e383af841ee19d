"""The run's HTML report (self-contained: thumbnails and plotly inlined) and `--export` of competition
layouts, on one real scene of imc-mini."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from imc_lib import cli
from imc_lib.formats import report

SCENE = "herzjesu-p8"
PLOTLY_JS = "plotly.js v"  # the banner of plotly's bundled JavaScript


@pytest.fixture(scope="module")
def competition_run(tmp_path_factory, imc_data_dir, weights_dir):
    """herzjesu-p8 from imc-mini's IMC 2024 layout, with --export, at test speed."""
    root = tmp_path_factory.mktemp("report")
    argv = ["run", str(imc_data_dir), "--scenes", SCENE, "--out", str(root / "submission.csv"), "--work",
            str(root / "work"), "--export", str(root / "export"), "--weights", str(weights_dir), "--device", "cpu",
            "--max-keypoints", "1024", "--resize-to", "640"]  # fmt: skip
    assert cli.main(argv) == 0
    return root


def _count(html: str, css_class: str) -> int:
    return len(re.findall(rf'class="{css_class}"', html))


def test_report_is_written_beside_the_submission_with_a_thumbnail_per_photo_and_a_3d_view(competition_run):
    html = (competition_run / "report.html").read_text()
    assert _count(html, "thumb") == 8 and _count(html, "plot3d") == 1
    assert html.count(PLOTLY_JS) == 1  # inlined once, so it opens offline
    assert not re.search(r"<script[^>]+src=", html)  # nothing loaded from elsewhere
    assert 'id="scene-herzjesu-p8"' in html and "time per stage" in html
    assert "8 photos, 8 registered; the mapper's 1 model(s) holding 8 photos" in html


def test_report_shows_the_score_where_labels_exist(competition_run):
    html = (competition_run / "report.html").read_text()
    table = html.split("<h3>score</h3>")[1].split("</table>")[0]
    headers = re.findall(r"<th>([^<]*)</th>", table)
    values = dict(zip(headers, re.findall(r"<td>([^<]*)</td>", table)))
    assert values["scene"] == SCENE and values["registered"] == "8"
    assert float(values["mAA"]) == pytest.approx(1.0, abs=0.05)


def test_report_command_writes_it_again_from_the_work_folder(competition_run, capsys):
    work = competition_run / "work"
    assert cli.main(["report", str(work)]) == 0
    assert f"wrote {work / 'report.html'}" in capsys.readouterr().out
    again = (work / "report.html").read_text()
    assert _count(again, "thumb") == 8 and again.count(PLOTLY_JS) == 1


def test_report_command_without_a_run_names_the_fix(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / report.RUN_RECORD}: no run record; run `imc-lib run" in capsys.readouterr().err


def test_export_of_a_competition_layout_writes_each_scenes_files(competition_run):
    scene = competition_run / "export" / SCENE
    poses = pd.read_csv(scene / "poses.csv")
    submission = pd.read_csv(competition_run / "submission.csv")
    assert len(poses) == len(submission) == 8 and set(poses["cluster"]) == {"cluster0"}
    rows = submission.set_index("image_name" if "image_name" in submission else "image_path")
    for name, R in zip(poses["image"], poses["rotation_matrix"]):
        key = name if name in rows.index else f"train/{SCENE}/images/{name}"
        assert rows.loc[key, "rotation_matrix"] == R  # the same poses as the submission
    assert (scene / "cluster0/sparse/0/images.bin").is_file() and (scene / "cluster0/transforms.json").is_file()
    assert (scene / "cluster0/points3D.ply").is_file()
    record = json.loads((competition_run / "work" / report.RUN_RECORD).read_text())
    assert record["export"] == str((competition_run / "export").resolve()) and "export" in record["times"]
