"""The Gradio demo (examples/space/app.py) driven in a real headless Chromium through Selenium: upload the real clip,
press Predict, read the top-5 verbs, nouns and actions on the page, compare with a direct forward.

Needs Debian's chromium and chromium-driver (.ci/run installs them); skipped only where they are absent outside CI.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.ports import free_port
from helpers.tiny_checkpoint import BBB, assert_same_top_k, direct_top_k, tiny_checkpoint, write_test_video

APP = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAVE_BROWSER = Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()
if not HAVE_BROWSER and not os.environ.get("CI"):
    pytest.skip("Debian chromium / chromium-driver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)
if not os.environ.get("CI"):
    pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,2000")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from modeling_mambavl.ek100.synthetic import write_synthetic_clip

    folder = tmp_path_factory.mktemp("ckpt")
    model, processor = tiny_checkpoint(folder)
    write_synthetic_clip(folder / "examples" / "synthetic_take_plate.mp4", size=64, seconds=1.0)
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(folder / "tmp"),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    log = open(folder / "app.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, str(APP), "--model", str(folder), "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail(f"the demo did not start:\n{(folder / 'app.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url, model, processor, folder
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _previewed(driver, stem: str) -> bool:
    """Whether the video input shows a <video> preview of the clip named ``stem``."""
    return any(stem in (v.get_attribute("src") or "") for v in driver.find_elements(By.CSS_SELECTOR, "#video video"))


def _shown(driver, elem_id: str) -> list[dict]:
    """The classes a gr.Label shows, top first: names from its rows, scores from their <meter> values."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} button.confidence-set")
    shown = []
    for row in rows:
        name = row.find_element(By.CSS_SELECTOR, "dt").text.strip()
        score = float(row.find_element(By.CSS_SELECTOR, "meter").get_attribute("value"))
        shown.append({"label": name, "score": score})
    return shown


@pytest.mark.slow
def test_demo_in_a_real_browser(app, browser, tmp_path):
    url, model, processor, _ = app
    clip = BBB if BBB.is_file() else write_test_video(tmp_path / "clip.mp4")
    expected = direct_top_k(model, processor, clip)
    browser.get(url)
    wait = WebDriverWait(browser, 300)
    upload = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#video input[type=file]")))
    upload.send_keys(str(clip))
    wait.until(lambda d: _previewed(d, clip.stem))  # the upload plays in a <video> preview, not a file chip
    browser.find_element(By.ID, "predict").click()
    wait.until(lambda d: len(_shown(d, "actions")) == 5)
    for elem_id in ("verbs", "nouns", "actions"):
        assert_same_top_k(_shown(browser, elem_id), expected[elem_id])  # labels in order, scores to 1e-5
    frames = browser.find_elements(By.CSS_SELECTOR, "#frames img")
    assert len(frames) >= 1
    assert "What action is performed using hands in the video?" in browser.find_element(By.ID, "questions").find_element(
        By.TAG_NAME, "textarea").get_attribute("value")
    browser.save_screenshot(str(tmp_path / "demo.png"))


@pytest.mark.slow
def test_demo_example_clip_and_loading_note(app, browser, tmp_path):
    """The example clip saved with the checkpoint is offered; picking it previews it and predicts as a direct forward
    on that file; the page says the installed package (not remote code) loaded the model."""
    url, model, processor, folder = app
    example = folder / "examples" / "synthetic_take_plate.mp4"
    expected = direct_top_k(model, processor, example)
    browser.get(url)
    wait = WebDriverWait(browser, 300)
    note = wait.until(expected_conditions.presence_of_element_located((By.ID, "loaded-with")))
    assert "installed mambavl package" in note.text and "trust_remote_code" not in note.text
    items = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#examples .gallery-item"))
    assert len(items) == 1 and "synthetic_take_plate" in items[0].get_attribute("innerHTML")
    items[0].click()
    wait.until(lambda d: _previewed(d, example.stem))
    browser.find_element(By.ID, "predict").click()
    wait.until(lambda d: len(_shown(d, "actions")) == 5)
    for elem_id in ("verbs", "nouns", "actions"):
        assert_same_top_k(_shown(browser, elem_id), expected[elem_id])
    browser.save_screenshot(str(tmp_path / "example.png"))
