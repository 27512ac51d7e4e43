"""The web app driven in a real headless browser: Debian's chromium through Selenium.

The README's test command installs chromium, chromium-driver and selenium, so this runs in CI.
"""

import shutil
import socket
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emodiff.app import EditService, launch
from emodiff.assets import sample_faces


gradio = pytest.importorskip("gradio", reason="the web app needs gradio (pip install -e '.[test]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[test]' installs selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow  # a real browser against a served app

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(model_dir):
    port = _free_port()
    app = launch(EditService(str(model_dir), device="cpu"), "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("no chromium/chromedriver on PATH: apt-get install chromium chromium-driver (the README's test command does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1800",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _upload(browser, url, path: Path) -> None:
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))


def _page_shows(browser, text: str, seconds: float = 60) -> bool:
    return WebDriverWait(browser, seconds).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)


def test_an_uploaded_face_comes_back_edited(browser, app_url):
    face = sample_faces()[0]
    _upload(browser, app_url, face)
    _page_shows(browser, face.stem)  # the upload finished
    browser.find_element(By.ID, "edit").click()
    image = WebDriverWait(browser, 240).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#edited img"))[0]
    with urllib.request.urlopen(image.get_attribute("src")) as response:
        edited = np.asarray(Image.open(BytesIO(response.read())).convert("L"), dtype=np.int16)
    original = np.asarray(Image.open(face).convert("L"), dtype=np.int16)
    assert edited.shape == original.shape
    assert np.abs(edited - original).mean() > 1  # an edit, not the upload echoed back
    assert len(browser.find_elements(By.CSS_SELECTOR, "#strip img")) == 7


def test_a_non_image_upload_shows_a_clear_message(browser, app_url, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("these are notes, not a photo")
    _upload(browser, app_url, notes)
    _page_shows(browser, "notes.png is not an image this app can read")


def test_an_oversize_upload_shows_its_size_and_the_limit(browser, app_url, tmp_path):
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(21 * 2**20)
    _upload(browser, app_url, huge)
    _page_shows(browser, "huge.jpg is 21.0 MB; uploads are limited to 20 MB", seconds=120)
