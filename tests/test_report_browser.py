"""Browser test of the report: headless Chromium (Debian packages) opens report.html via file://; every <img> has
decoded (naturalWidth > 0), every table has rows, and the console has no errors. Screenshot: test-output/report.png.
The report comes from the synthetic lab store of tests/test_report.py."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from test_report import build, labdir  # noqa: F401  (the module fixture)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


@pytest.fixture()
def driver():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed in the venv")
    profile = tempfile.mkdtemp(prefix="rlscale-chrome-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,2000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_chromium(labdir, driver):  # noqa: F811
    build(labdir)
    driver.get((labdir / "report.html").resolve().as_uri())
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
    assert len(images) == 13
    bad = [alt for complete, w, h, alt in images if not (complete and w > 0 and h > 0)]
    assert not bad, f"images that did not render: {bad}"
    tables = driver.execute_script(
        "return Array.from(document.querySelectorAll('table')).map(t => [t.rows.length, t.offsetHeight]);")
    assert len(tables) >= 10
    assert all(rows >= 2 and height > 0 for rows, height in tables), tables
    errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert not errors, errors
    OUTPUT.mkdir(exist_ok=True)
    driver.set_window_size(1280, max(2000, int(driver.execute_script("return document.body.scrollHeight;"))))
    assert driver.save_screenshot(str(OUTPUT / "report.png"))
