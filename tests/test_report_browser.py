"""The run's report.html opened in a real headless Chromium (Selenium, the system chromium and
chromedriver; nothing downloaded): no console error, a thumbnail per photo, a drawn 3D plot per cluster.

Reports of imc-mini (IMC 2024, four scenes) and of the composed mixed set (IMC 2025: `small` and
`tabletop`, three scenes and 3 or 9 outliers each), each run at test speed (1024 keypoints, 640 px).
Screenshots are kept in `$IMC_TEST_ARTIFACTS` (default: the test's tmp folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imc_lib import cli
from imc_lib.formats import data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium/chromedriver not found; apt-get install -y chromium chromium-driver", allow_module_level=True)
pytest.importorskip("selenium", reason="selenium not installed; pip install selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # real runs of imc-mini and the composed set (193 photos) and a browser: minutes
FAST = ["--device", "cpu", "--max-keypoints", "1024", "--resize-to", "640"]


def _run(data_dir: Path, root: Path, weights_dir: Path, *extra: str) -> Path:
    argv = ["run", str(data_dir), "--out", str(root / "submission.csv"), "--work", str(root / "work"),
            "--weights", str(weights_dir), *FAST, *extra]  # fmt: skip
    assert cli.main(argv) == 0
    return root / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    # SwiftShader: WebGL (plotly's 3D) on a machine without a GPU, as a user's browser has it.
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--enable-unsafe-swiftshader",
        "--use-angle=swiftshader",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, report: Path, clusters: int, name: str) -> dict:
    """Load the report, wait for every 3D plot to draw, keep a screenshot; what the page shows."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(report.resolve().as_uri())
    plots = ".plot3d .js-plotly-plot .gl-container canvas"
    WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, plots)) >= clusters)
    thumbs = driver.find_elements(By.CSS_SELECTOR, "img.thumb")
    artifacts = Path(os.environ.get("IMC_TEST_ARTIFACTS", report.parent))
    artifacts.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(artifacts / f"report-{name}.png"))
    return {
        "errors": [e for e in driver.get_log("browser") if e["level"] == "SEVERE"],
        "thumbs": [t.get_attribute("title") for t in thumbs],
        "loaded": driver.execute_script("return Array.from(arguments[0]).every(i => i.naturalWidth > 0)", thumbs),
        "plots": len(driver.find_elements(By.CSS_SELECTOR, ".plot3d .js-plotly-plot")),
        "canvases": len(driver.find_elements(By.CSS_SELECTOR, plots)),
        "clusters": len(driver.find_elements(By.CSS_SELECTOR, "div.cluster")),
    }


def test_imc_mini_report_in_a_browser(tmp_path, imc_data_dir, weights_dir, browser):
    report = _run(imc_data_dir, tmp_path, weights_dir)
    shown = _open(browser, report, 4, "imc-mini")
    assert shown["errors"] == []
    names = [n for scene in data.load_scenes(imc_data_dir) for n in scene.image_names]
    assert sorted(shown["thumbs"]) == sorted(names) and shown["loaded"]  # a thumbnail per photo, each drawn
    assert shown["clusters"] == shown["plots"] == 4 and shown["canvases"] >= 4  # one model per scene


def test_mixed_set_report_in_a_browser(tmp_path, imc25_dir, weights_dir, browser):
    report = _run(imc25_dir, tmp_path, weights_dir)
    shown = _open(browser, report, 6, "mixed")
    assert shown["errors"] == []
    photos = sorted(p.name for d in ("small", "tabletop") for p in (imc25_dir / "train" / d).iterdir())
    assert sorted(shown["thumbs"]) == photos and shown["loaded"]  # clusters and outliers: every photo once
    assert shown["clusters"] == shown["plots"] == 6 and shown["canvases"] >= 6  # three scenes in each dataset
    html = report.read_text()
    assert '<div class="outliers"><h3>outliers: 3 photos</h3>' in html  # small
    assert '<div class="outliers"><h3>outliers: 9 photos</h3>' in html  # tabletop
