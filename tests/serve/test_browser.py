"""The browser page in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium): it loads ``/``, uploads an image, and the boxes are drawn on the
canvas and listed; the slider filters without asking the server again; the webcam
(Chromium's fake camera) is detected frame after frame. The screenshot is kept in
$TEST_ARTIFACTS_DIR (else the test's temporary folder) as serve_page.png.

Without Chromium the test is skipped, unless CI is set: there it fails, because
``.ci/run`` installs it.
"""

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.helpers import varied_images

WAIT_S = 30
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


def _browser_paths():
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER) or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if binary and driver:
        return binary, driver
    reason = ("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run installs "
              "them)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + ", and CI is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--use-fake-device-for-media-stream",
                     "--use-fake-ui-for-media-stream"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _detect_requests(url):
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "detector_requests_total" and sample.labels["endpoint"] == "/v1/detect")


def test_page_draws_and_lists_boxes(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = Image.fromarray(varied_images(1, seed=7)[0]).resize((320, 240))
    path = tmp_path / "street.png"
    image.save(path)
    expected = requests.post(f"{server.url}/v1/detect", data=path.read_bytes(), timeout=30).json()["detections"]
    assert expected, "the tiny detector should find boxes at the served conf"

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(server.url + "/")
    wait.until(lambda d: "classes" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", \
        browser.find_element(By.ID, "status").text
    assert "ms per image" in browser.find_element(By.ID, "status").text

    listed = [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#detections li")]
    assert len(listed) == len(expected)
    assert all(any(name in line for name in ("cat", "traffic light", "dog")) for line in listed)
    # The canvas shows the picture with boxes over it: pixels differ from the picture alone.
    changed = browser.execute_script("""
        const shown = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        const plain = document.createElement("canvas");
        plain.width = canvas.width; plain.height = canvas.height;
        const context = plain.getContext("2d");
        context.drawImage(picture, 0, 0);
        const original = context.getImageData(0, 0, plain.width, plain.height).data;
        let count = 0;
        for (let i = 0; i < shown.length; i += 4) {
          if (Math.abs(shown[i] - original[i]) + Math.abs(shown[i + 1] - original[i + 1]) > 30) count++;
        }
        return [count, canvas.width, canvas.height];
    """)
    assert changed[1:] == [320, 240] and changed[0] > 100, changed
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "serve_page.png"
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(io.BytesIO(screenshot.read_bytes())).size[0] > 0
    print(f"screenshot: {screenshot}")

    # The slider filters here: at 1.0 nothing is left, and the server was not asked again.
    before = _detect_requests(server.url)
    browser.execute_script("""
        const slider = document.getElementById("conf");
        slider.value = slider.max;
        slider.dispatchEvent(new Event("input"));
    """)
    assert browser.find_elements(By.CSS_SELECTOR, "#detections li") == []
    assert browser.find_element(By.ID, "shown").text == "0"
    assert _detect_requests(server.url) == before + 0  # the metrics request itself is not a detection


def test_webcam_frames_are_detected(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(server.url + "/")
    wait.until(lambda d: "classes" in d.find_element(By.ID, "model").text)
    before = _detect_requests(server.url)
    browser.find_element(By.ID, "webcam").click()
    wait.until(lambda d: _detect_requests(server.url) >= before + 2)
    assert "ms per image" in browser.find_element(By.ID, "status").text
    browser.find_element(By.ID, "webcam").click()
    assert browser.find_element(By.ID, "webcam").text == "Start webcam"
    size = browser.execute_script("return [canvas.width, canvas.height];")
    assert np.prod(size) > 0
