"""The explorer in a real browser: `streamlit run` on a free local port, loaded in headless Chromium
through Selenium with the system chromium and chromedriver (nothing is downloaded).

Screenshots are kept as test artifacts in `$IMC_TEST_ARTIFACTS` (default: the test's tmp folder).
Skips when chromium, chromedriver or selenium is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from imc_lib import app

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None:
    pytest.skip(
        "chromium not found; install it with `apt-get install -y chromium chromium-driver`", allow_module_level=True
    )
if CHROMEDRIVER is None:
    pytest.skip("chromedriver not found; install it with `apt-get install -y chromium-driver`", allow_module_level=True)
pytest.importorskip("selenium", reason="selenium not installed; pip install selenium")
pytest.importorskip("streamlit", reason="streamlit not installed; pip install -e '.[app]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # a Streamlit server and a headless Chromium: a minute or more
logger = logging.getLogger(__name__)
START_TIMEOUT = 90  # seconds for the server to answer its health check (imports torch, pycolmap)
PAGE_TIMEOUT = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The explorer served by `streamlit run` from the repo root, so its default dataset folder is
    the shipped sample `data/` (8 photos of herzjesu-p8)."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "streamlit.log"
    cmd = app.command(
        port,
        [
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
    )
    env = {k: v for k, v in os.environ.items() if k not in ("IMC_DATA_DIR", "IMC_DINOV2")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"streamlit did not answer on {url} within {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("IMC_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _body(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def _wait_for_text(driver, text: str) -> None:
    try:
        WebDriverWait(driver, PAGE_TIMEOUT).until(lambda d: text in _body(d))
    except Exception:
        pytest.fail(f"the page never showed {text!r}; it shows:\n{_body(driver)[:3000]}")


def test_page_shows_the_title_and_the_first_step(server, browser, artifacts):
    browser.get(server)
    _wait_for_text(browser, "Next: 2. Pairs")  # the last element of step 1: the page is complete
    assert browser.title == "imc_lib explorer"
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h1, h2")]
    assert "imc_lib explorer" in headings and "1. Images" in headings
    body = _body(browser)
    assert "herzjesu-p8/herzjesu-p8 in" in body  # the shipped sample, data/ under the working directory
    assert "Images\n8" in body and "768×512" in body
    # The sidebar speaks the CLI's settings, the CPU default orientation `mnn` among them.
    assert "Orientation (--orientation)" in body and "mnn (from the keypoints)" in body
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stImage'] img")
    assert len(thumbnails) == 8
    WebDriverWait(browser, PAGE_TIMEOUT).until(  # every thumbnail decoded by the browser
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in thumbnails
        )
    )
    shot = artifacts / "explorer-1-images.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    logger.info("screenshot: %s", shot)

    # Jumping ahead shows the step's error, not a traceback.
    browser.find_element(By.XPATH, "//label[.//p[normalize-space()='4. Matches']]").click()
    _wait_for_text(browser, "Run step 2. Pairs first")
    assert "Traceback" not in _body(browser)
    browser.save_screenshot(str(artifacts / "explorer-4-matches-blocked.png"))
