"""The serve page in a real browser: headless Debian Chromium driven by Selenium.

Start the server on a tiny run folder, open the page, pick a gallery image, drag an arrow, click
positive and negative points, see the overlay change, export the mask and the clicks, check the
files. Screenshots are kept under the test's tmp folder (printed; ``pytest -s`` shows the paths).
Skips with the reason when chromium, chromedriver or selenium is missing (``.ci/run`` installs
them: ``apt-get install chromium chromium-driver``, selenium in the ``dev`` extras).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.serve.cli import build_state
from models.serve.engine import CMPEngine
from models.serve.server import make_server
from tests.serve_helpers import RegionPropagator, two_region_image, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "headless browser tests need Debian's chromium and chromium-driver "
        "(apt-get install -y chromium chromium-driver; .ci/run does it as root)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extras) is missing")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
WIDTH, HEIGHT = 128, 96  # shown 384 px wide: 3 screen px per image px


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    run = write_run(root / "run")
    (run / "gallery").mkdir()
    Image.fromarray(two_region_image(HEIGHT, WIDTH)).save(run / "gallery" / "val00_halves.png")
    state = build_state(run, device="cpu")  # the tiny random CMP loads and serves ...
    # ... but the masks are checked against a hand-made propagator whose answer is known:
    # motion fills the colour region of the point that asks for it (tests/serve_helpers.py)
    state.engine = CMPEngine(RegionPropagator(), num_bins=99, max_flow=50.0, stride=8)
    server = make_server(state, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    downloads = root / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={root / 'profile'}"):
        options.add_argument(flag)
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
    yield driver, root, downloads
    driver.quit()
    server.shutdown()
    server.server_close()


def wait(driver, condition, timeout: float = 15.0):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def at(driver, x: int, y: int) -> ActionChains:
    """Actions positioned on image pixel (x, y) of the canvas (offsets from its centre)."""
    canvas = driver.find_element(By.ID, "canvas")
    width, height = driver.execute_script(
        "return [arguments[0].clientWidth, arguments[0].clientHeight]", canvas
    )
    scale = width / WIDTH  # the border is symmetric: the centres of box and content agree
    dx, dy = (x + 0.5) * scale - width / 2, (y + 0.5) * scale - height / 2
    return ActionChains(driver).move_to_element_with_offset(canvas, round(dx), round(dy))


def shot(driver, root: Path, name: str) -> None:
    path = root / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def downloaded(folder: Path, name: str) -> Path:
    """``folder/name`` once Chrome has finished writing it: the file can appear empty, with a
    ``.crdownload`` beside it, before its bytes land."""
    path = folder / name

    def done() -> bool:
        partial = any(p.suffix == ".crdownload" for p in folder.iterdir())
        return path.exists() and path.stat().st_size > 0 and not partial

    deadline = time.monotonic() + 15
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done(), f"{name} was not downloaded: {sorted(folder.iterdir())}"
    return path


def updates(count: str):
    """Condition: the page has shown ``count`` annotation results."""
    return lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-updates") == count


def test_pick_drag_click_export(page):
    driver, root, downloads = page
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    Select(driver.find_element(By.ID, "gallery")).select_by_visible_text("val00_halves.png")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    # propagation: one arrow dragged on the left half
    at(driver, 30, 40).click_and_hold().move_by_offset(30, 0).release().perform()
    wait(
        driver,
        lambda d: (d.find_element(By.ID, "flow").get_attribute("src") or "").startswith("data:"),
    )
    assert "ms model" in driver.find_element(By.ID, "latency").text
    shot(driver, root, "propagate")
    # annotation: a positive click on the left half, then a negative one on the right half
    driver.find_element(By.CSS_SELECTOR, "input[value=annotate]").click()
    at(driver, 20, 50).click().perform()
    wait(driver, updates("1"))
    first = driver.find_element(By.ID, "overlay").get_attribute("src")
    assert driver.find_element(By.ID, "area").text == f"mask: {WIDTH * HEIGHT} px"
    at(driver, 100, 50).key_down(Keys.SHIFT).click().key_up(Keys.SHIFT).perform()
    wait(driver, updates("2"))
    assert driver.find_element(By.ID, "overlay").get_attribute("src") != first
    assert driver.find_element(By.ID, "area").text == f"mask: {WIDTH * HEIGHT // 2} px"
    assert not driver.find_element(By.ID, "message").is_displayed()
    shot(driver, root, "annotate")
    driver.find_element(By.ID, "export-mask").click()
    mask = np.asarray(Image.open(downloaded(downloads, "mask.png")))
    expected = np.zeros((HEIGHT, WIDTH), np.uint8)
    expected[:, : WIDTH // 2] = 255
    assert np.array_equal(mask, expected)
    driver.find_element(By.ID, "export-clicks").click()
    clicks = json.loads(downloaded(downloads, "clicks.json").read_text())
    assert clicks["positive"] == [[20, 50]] and clicks["negative"] == [[100, 50]]
    assert clicks["image"] == "val00_halves.png" and clicks["width"] == WIDTH


def test_a_bad_upload_shows_a_message(page, tmp_path):
    driver, root, _ = page
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    driver.find_element(By.ID, "upload").send_keys(str(bad))
    message = driver.find_element(By.ID, "message")
    wait(driver, lambda d: message.is_displayed())
    assert "not an image" in message.text
    shot(driver, root, "bad_upload")
    assert driver.find_element(By.ID, "run-info").text.startswith("run run")
