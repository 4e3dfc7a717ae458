"""Screenshots of the serve page for the README (docs/serve.png, docs/serve_annotate.png).

    python scripts/serve_screenshot.py --run results/pretrain/cmp/demo --gallery-index 0 \\
        --arrow 60 70 15 0 --click 60 70

Starts the server on the run in this process, drives Debian's headless chromium with Selenium,
drags the arrow (image px: x y dx dy) and clicks the point (x y) on the chosen gallery frame.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from models.serve.cli import build_state
from models.serve.server import make_server

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1250,620",
)


def on_image(driver, x: float, y: float, width: int) -> ActionChains:
    canvas = driver.find_element(By.ID, "canvas")
    shown_w, shown_h = driver.execute_script(
        "return [arguments[0].clientWidth, arguments[0].clientHeight]", canvas
    )
    scale = shown_w / width
    return ActionChains(driver).move_to_element_with_offset(
        canvas, round((x + 0.5) * scale - shown_w / 2), round((y + 0.5) * scale - shown_h / 2)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--gallery-index", type=int, default=0)
    parser.add_argument("--arrow", type=float, nargs=4, default=(60, 70, 15, 0))
    parser.add_argument("--click", type=float, nargs=2, default=(60, 70))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    server = make_server(build_state(args.run), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (*FLAGS, "--user-data-dir=/tmp/serve-screenshot-profile"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService("/usr/bin/chromedriver")
    )
    try:
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
        WebDriverWait(driver, 60).until(lambda d: body(d).get_attribute("data-loaded"))
        Select(driver.find_element(By.ID, "gallery")).select_by_index(args.gallery_index + 1)
        WebDriverWait(driver, 60).until(lambda d: body(d).get_attribute("data-ready"))
        width = driver.execute_script("return document.getElementById('canvas').width")
        x, y, dx, dy = args.arrow
        scale = (
            driver.execute_script(
                "return arguments[0].clientWidth", driver.find_element(By.ID, "canvas")
            )
            / width
        )
        on_image(driver, x, y, width).click_and_hold().move_by_offset(
            round(dx * scale), round(dy * scale)
        ).release().perform()
        WebDriverWait(driver, 120).until(
            lambda d: (d.find_element(By.ID, "next").get_attribute("src") or "").startswith("data:")
        )
        driver.save_screenshot(str(args.out / "serve.png"))
        driver.find_element(By.CSS_SELECTOR, "input[value=annotate]").click()
        on_image(driver, *args.click, width).click().perform()
        WebDriverWait(driver, 120).until(lambda d: body(d).get_attribute("data-updates") == "1")
        driver.save_screenshot(str(args.out / "serve_annotate.png"))
        print("wrote", args.out / "serve.png", args.out / "serve_annotate.png")
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
