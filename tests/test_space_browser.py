"""The Space in a real browser: headless Debian Chromium fills the Generate tab, clicks, and waits for the face.

Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's chromium and chromium-driver; `make browser-deps`
installs them, and `make test-all` runs it first). No browser is ever downloaded: Selenium gets both paths and runs
offline. The screenshot lands in docs/images/space.png.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unif2ace_hf
from space_server import launched_space

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "space.png"
PROMPT = (
    "A portrait of a young woman with light skin and an oval face, set against a light blue background. "
    "She is smiling. She has long wavy red hair."
)
STEPS = 24
SEED = 5  # one of the seeds where the small default model draws eyes and a mouth clearly

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        reason="Debian chromium and chromium-driver are not installed (run `make browser-deps`)",
    ),
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, sandbox off (root), and no background traffic: this machine has no network.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_generate_tab_in_chromium_shows_the_generated_face(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    with launched_space(tmp_path / "gradio") as url:
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        tab = wait.until(
            ready.element_to_be_clickable((By.XPATH, "//button[@role='tab'][normalize-space()='Generate']"))
        )
        tab.click()
        prompt = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#generate-prompt textarea")))
        prompt.send_keys(PROMPT)
        for element_id, value in (("generate-steps", STEPS), ("generate-seed", SEED)):
            field = browser.find_element(By.CSS_SELECTOR, f"#{element_id} input[type='number']")
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(str(value), Keys.TAB)
        browser.find_element(By.ID, "generate-button").click()
        image = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#generate-output img")))
        wait.until(
            lambda driver: driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))
        with urllib.request.urlopen(image.get_attribute("src"), timeout=30) as response:
            shown = np.asarray(Image.open(BytesIO(response.read())).convert("RGB"), dtype=np.int16)

    pipe = unif2ace_hf.UniF2acePipeline.from_pretrained(unif2ace_hf.DEFAULT_MODEL)
    expected = pipe(
        PROMPT, num_inference_steps=STEPS, guidance_scale=3.0, generator=torch.Generator().manual_seed(SEED)
    ).images[0]
    assert np.abs(shown - np.asarray(expected, dtype=np.int16)).max() == 0  # the page shows the steps and seed typed
    with Image.open(SCREENSHOT) as screenshot:
        assert screenshot.size[0] >= 1000
