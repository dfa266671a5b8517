"""explore.html in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven
by Selenium through the system binaries; nothing is downloaded) opens the page of a trained VAE,
hovers the code plane and clicks two points; the decoded image must change, the strip appear, the
console stay clean and the page be ready within a second. `make test-browser` installs what it needs."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make test-browser)")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="no chromium / chromedriver on PATH (make test-browser installs them)"
)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1300,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def _decoded(driver) -> tuple[str, str]:
    return driver.execute_script(
        "const d=document.getElementById('decoded');return [d.dataset.cell||'', d.toDataURL()];"
    )


def test_the_explorer_page_follows_the_pointer_and_interpolates(browser, data_root, tmp_path):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = tmp_path / "vae"
    flags = ["--arch", "mlp", "--latent-dim", "2", "--max-steps", "200", "--no-compile", "--run-dir", run]
    run_cli("experiments.vae", flags, data_root)
    page = run / "explore.html"
    assert page.stat().st_size < 5e6
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched: self-contained

    browser.get(page.as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.exploreReady !== undefined"))
    ready_ms = browser.execute_script("return window.exploreReady")
    assert ready_ms < 1000, f"the page took {ready_ms:.0f} ms to be ready"
    scatter = browser.find_element(By.ID, "scatter")
    blank = _decoded(browser)
    shown = []
    for dx, dy in ((-150, -150), (150, 150)):  # two points of the plane, far apart
        ActionChains(browser).move_to_element_with_offset(scatter, dx, dy).perform()
        shown.append(_decoded(browser))
    assert shown[0][1] != blank[1] and shown[0][0] != ""  # the pointer drew a decoded image
    assert shown[0][0] != shown[1][0] and shown[0][1] != shown[1][1]  # another point, another image
    for dx, dy in ((-150, -150), (150, 150)):
        ActionChains(browser).move_to_element_with_offset(scatter, dx, dy).click().perform()
    cells = browser.execute_script("return document.getElementById('strip').dataset.cells || ''").split(";")
    assert len(cells) == 12 and len(set(cells)) > 2  # a strip of decoded images along the line
    assert "digit" not in browser.title and browser.find_element(By.ID, "legend").text.startswith("0")
    browser.save_screenshot(str(tmp_path / "explore.png"))
    assert (tmp_path / "explore.png").stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_the_gan_page_redraws_a_clicked_samples_neighbourhood(browser, data_root, tmp_path):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = tmp_path / "gan"
    flags = ["--max-steps", "10", "--no-compile", "--eval-samples", "0", "--probe-every", "0"]
    flags += ["--run-dir", run]
    run_cli("experiments.gan", flags, data_root)
    browser.get((run / "explore.html").as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.exploreReady !== undefined"))
    samples = browser.find_element(By.ID, "samples")
    near = "const n=document.getElementById('near');return [n.dataset.sample||'', n.toDataURL()];"
    shown = []
    for dx, dy in ((-180, -180), (150, 100)):  # the first draw, then one lower right
        ActionChains(browser).move_to_element_with_offset(samples, dx, dy).click().perform()
        shown.append(browser.execute_script(near))
    assert shown[0][0] == "0" and shown[1][0] not in ("", "0") and shown[0][1] != shown[1][1]
    browser.save_screenshot(str(tmp_path / "explore-gan.png"))
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
