"""The studio in a real browser: headless Debian Chromium, driven through Selenium, uploads a rendered Bach vocal, asks a
tiny model for two candidates in two steps and finds both candidates' scores, players and downloadable WAVs.

A screenshot of the page goes to ``test-artifacts/studio.png`` (gitignored, for CI to keep) and, when
``DISCODIFF_SCREENSHOT`` names a file (``DISCODIFF_SCREENSHOT=docs/studio.png``, relative to the repository), there too.
"""

from __future__ import annotations

import base64
import io
import os
import re
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from test_training import free_port

from discodiff.build import build_pipeline
from discodiff.config import DiscoDiffConfig
from discodiff.corpus.render import render_corpus
from discodiff.ui import launch_studio
from test_pipeline import randomize_

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "test-artifacts" / "studio.png"
SCREENSHOT_VARIABLE = "DISCODIFF_SCREENSHOT"
PIECE, TRACK = "bach/bwv38.6", "bach-bwv38.6"
SECONDS = 3.0
RATE = 44100
WAIT_SECONDS = 120
WINDOW_WIDTH = 1400

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.exists()),
                       reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                              "scripts/install.sh --test installs them"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def vocal(tmp_path_factory):
    """The soprano of ``bach/bwv38.6``, rendered for its first 3 s."""
    out = tmp_path_factory.mktemp("rendered")
    render_corpus([PIECE], out, seconds=SECONDS, seed=0, progress=False)
    return out / TRACK / "vocals.wav"


@pytest.fixture
def studio_url(tmp_path, monkeypatch):
    """The studio of a tiny model (``tiny``, in this test's folder, the working directory), served on a free loopback
    port, its files in this test's folder too."""
    pipe = build_pipeline(DiscoDiffConfig.from_yaml(REPO / "configs" / "tiny.yaml"), seed=0)
    randomize_(pipe.primary, 1)
    randomize_(pipe.secondary, 2)
    port = free_port()
    pipe.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    studio = launch_studio(model_dir="tiny", port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    studio.close()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WINDOW_WIDTH},1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def type_into(field, text: str) -> None:
    """Replace a field's text and leave it, as a user would (gradio reads the value on input and blur)."""
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text, Keys.TAB)


def save_screenshots(driver) -> None:
    """The whole page (through the DevTools protocol: beyond the window), into :data:`ARTIFACT` and where
    ``DISCODIFF_SCREENSHOT`` asks."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    picture = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    asked = os.environ.get(SCREENSHOT_VARIABLE)
    targets = [ARTIFACT] + ([REPO / asked] if asked else [])  # a relative path is the repository's
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(picture["data"]))


def test_two_candidates_for_an_uploaded_vocal_play_and_download(studio_url, browser, vocal):
    wait = WebDriverWait(browser, WAIT_SECONDS)
    browser.get(studio_url)
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "model-status"), "A 'discodiff' model"))

    browser.find_element(By.CSS_SELECTOR, "#vocal input[type=file]").send_keys(str(vocal))
    # the take sets the length: the duration field goes (gradio's own players have an element with id "duration")
    wait.until(expected_conditions.invisibility_of_element_located((By.ID, "duration-seconds")))
    browser.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys("a Baroque chorale for strings")
    type_into(browser.find_element(By.CSS_SELECTOR, "#steps input"), "2")
    type_into(browser.find_element(By.CSS_SELECTOR, "#num-candidates input[type=number]"), "2")
    browser.find_element(By.ID, "generate").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "candidate-2-scores"), "Rank 2"))
    assert "latent statistics are not fitted" in browser.find_element(By.TAG_NAME, "body").text  # the model's warning

    summary = browser.find_element(By.ID, "summary").text
    assert summary == (f"2 candidates of {SECONDS:.1f} s from tiny ('discodiff' model, steps 2, text guidance 1, "
                       "vocal guidance 1), ranked by vocal fit"), summary
    seeds = set()
    for rank in (1, 2):
        scores = browser.find_element(By.ID, f"candidate-{rank}-scores").text
        found = re.fullmatch(rf"Rank {rank} · seed (\d+); fit -?\d\.\d{{3}} \(consonance \d\.\d{{3}}, rhythmic -?\d\.\d{{3}}, "
                             r"harmonic \d\.\d{3}\)", scores)
        assert found, scores
        seeds.add(int(found.group(1)))
        for player, name in (("accompaniment", f"accompaniment_rank{rank}.wav"), ("mix", f"mix_rank{rank}.wav")):
            slot = browser.find_element(By.ID, f"candidate-{rank}-{player}")
            assert slot.find_elements(By.TAG_NAME, "audio"), f"no player in candidate {rank}'s {player}"
            download = slot.find_element(By.CSS_SELECTOR, "a[download]")
            assert download.get_attribute("download") == name
            with urllib.request.urlopen(download.get_attribute("href"), timeout=30) as response:
                audio, rate = sf.read(io.BytesIO(response.read()), dtype="float32")
            assert rate == RATE and audio.shape == (round(SECONDS * RATE),)
        assert browser.find_element(By.CSS_SELECTOR, f"#candidate-{rank}-spectrogram img").get_attribute("src")
    assert seeds == {0, 1}
    assert not any(slot.is_displayed() for slot in browser.find_elements(By.ID, "candidate-3"))  # unused slots hidden
    for close in browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        close.click()
    wait.until(expected_conditions.invisibility_of_element_located((By.CSS_SELECTOR, "[data-testid=toast-body]")))
    save_screenshots(browser)
