"""The playground page (``GET /``) driven in headless Chromium on loopback: type a prompt, press Generate, watch
frames stream in and the finished image appear; checked with screenshots (saved under the test's tmp dir).

Needs Debian's ``chromium`` + ``chromium-driver`` (``make browser``); skipped with a reason when absent.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import SIZE, debug_checkpoint, deploy, undeploy

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (run `make browser`)"),
    pytest.mark.skipif(not Path(CHROMEDRIVER).exists(), reason="chromedriver is absent (run `make browser`)"),
]


@pytest.fixture(scope="module")
def page_url(serve_url, tmp_path_factory):
    checkpoint = debug_checkpoint(tmp_path_factory.mktemp("serve_browser"))
    deploy({"checkpoint": checkpoint, "sampler": {"cfg_scale": 3.0}}, name="lumos", route_prefix="/")
    yield serve_url + "/"
    undeploy("lumos")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,800", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_playground_generates_and_shows_an_image(page_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(page_url)
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "model"), "debug"))
    browser.find_element(By.ID, "prompt").send_keys("a red circle on a grey background")
    Select(browser.find_element(By.ID, "mode")).select_by_value("t2i")
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("4")
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "generate").click()

    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 120).until(
        lambda d: result.is_displayed() and d.execute_script("return arguments[0].naturalWidth", result) > 0)
    assert browser.execute_script("return arguments[0].naturalWidth", result) == SIZE  # the checkpoint's resolution
    assert "done" in browser.find_element(By.ID, "status").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#frames-strip img")) == 1  # the streamed frame

    page_png, image_png = browser.get_screenshot_as_png(), result.screenshot_as_png
    (tmp_path / "playground.png").write_bytes(page_png)
    (tmp_path / "result.png").write_bytes(image_png)
    shown = _pixels(image_png)
    assert shown.shape[0] >= 200 and shown.shape[1] >= 200  # drawn at 256x256 CSS pixels
    assert shown.std() > 5.0, "the generated image element is blank"
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) > 8


def test_playground_reports_errors(page_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(page_url)
    browser.find_element(By.ID, "prompt").send_keys("no image given")
    Select(browser.find_element(By.ID, "mode")).select_by_value("i2v")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "status"), "choose an image"))
    frames = browser.find_element(By.ID, "frames")
    frames.clear()
    frames.send_keys("99")
    Select(browser.find_element(By.ID, "mode")).select_by_value("t2v")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "status"), "HTTP 422"))
    assert "num_frames" in browser.find_element(By.ID, "status").text
