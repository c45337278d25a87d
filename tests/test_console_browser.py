"""The console end to end in a real headless Chromium (Debian's chromium and chromium-driver,
driven by selenium; nothing is downloaded): a reviewer logs in with a second factor, opens a
proposal and approves it with the keyboard, and the A40 reaches a fake PACS; an analyst resends
a message from its page. Screenshots of each page are kept in ``$CROSSWALK_ARTIFACTS/console``
(default ``artifacts/console``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import Engine

from engine.testing import FakeReceiver, free_port, wait_for_port
from engine.users.accounts import Role, add_user
from tests.console_support import PASSWORD, console_folder
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, running_provider
from tests.support import Pipeline, cli_env, crosswalk
from tests.test_console import stored
from tests.test_review import prepared

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("CROSSWALK_ARTIFACTS", "artifacts")) / "console"

webdriver = pytest.importorskip("selenium.webdriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("Debian chromium and chromium-driver are not installed", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def running_console(db_url: str, folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = log.open("wb")
    process = subprocess.Popen(
        crosswalk("console", "--config", str(folder), "--db", db_url, "--port", str(port)),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}"


LABELLED = """
return Array.from(document.querySelectorAll("input, select, textarea"))
  .filter(e => e.type !== "hidden")
  .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`)))
  .map(e => e.outerHTML);
"""


def shot(driver: WebDriver, name: str) -> None:
    """Save a screenshot of the page, after checking that every field has a label and the
    browser reported nothing (a script or style the Content-Security-Policy refused)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    assert driver.execute_script(LABELLED) == [], name
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not [p for p in problems if "Content Security Policy" in p], problems


def log_in(driver: WebDriver, url: str, name: str) -> str:
    """Log in through the pages; returns the TOTP secret enrolled (if one was asked)."""
    driver.get(f"{url}/login")
    shot(driver, "01-login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD + "\n")
    WebDriverWait(driver, 10).until(lambda d: d.current_url.removeprefix(url) != "/login")
    secret = ""
    if driver.current_url.endswith("/login/code"):
        shot(driver, "02-enrol")
        secret = driver.find_element(By.ID, "totp-key").text
        driver.find_element(By.ID, "code").send_keys(pyotp.TOTP(secret).now() + "\n")
    WebDriverWait(driver, 10).until(lambda d: d.current_url.rstrip("/") == url)
    return secret


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_reviewer_approves_with_the_keyboard_and_the_a40_reaches_the_pacs(
    store: Engine, db_url: str, tmp_path: Path, browser: WebDriver
) -> None:
    prepared(store, tmp_path)
    add_user(store, "rita", Role.REVIEWER, PASSWORD)
    pacs = FakeReceiver()
    folder = console_folder(tmp_path, pacs.port)
    pipeline = Pipeline(db_url, folder).start()
    process, url = running_console(db_url, folder, tmp_path / "console.log")
    try:
        assert log_in(browser, url, "rita")
        shot(browser, "03-dashboard")
        browser.get(f"{url}/review")
        shot(browser, "04-worklist")
        first = browser.find_element(By.CSS_SELECTOR, "tbody a")
        proposal = first.text
        first.click()
        WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/review/{proposal}"))
        assert browser.find_element(By.CSS_SELECTOR, "svg.waterfall")
        shot(browser, "05-proposal")
        browser.find_element(By.TAG_NAME, "body").send_keys("a")
        WebDriverWait(browser, 10).until(lambda d: not d.current_url.endswith(f"/{proposal}"))
        shot(browser, "06-next-proposal")
        assert pacs.wait_for(1, timeout=15)
        assert "ADT^A40" in pacs.texts[0]
        browser.get(f"{url}/review/{proposal}")
        WebDriverWait(browser, 10).until(
            lambda d: "delivered" in d.find_element(By.ID, "merge-delivery").text or d.refresh()  # type: ignore[func-returns-value]
        )
        shot(browser, "07-approved")
    finally:
        process.terminate()
        process.wait(10)
        pipeline.stop()
        pacs.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_analyst_resends_a_message_from_its_page(
    store: Engine, db_url: str, tmp_path: Path, browser: WebDriver
) -> None:
    add_user(store, "ann", Role.ANALYST, PASSWORD)
    message = stored(store)
    pacs = FakeReceiver()
    folder = console_folder(tmp_path, pacs.port)
    pipeline = Pipeline(db_url, folder).start()
    process, url = running_console(db_url, folder, tmp_path / "console.log")
    try:
        assert log_in(browser, url, "ann") == ""  # an analyst needs no second factor
        browser.get(f"{url}/messages")
        shot(browser, "08-messages")
        browser.get(f"{url}/messages/{message}")
        shot(browser, "09-message")
        browser.find_element(By.ID, "resend").send_keys(Keys.ENTER)  # keyboard only
        confirm = WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.ID, "confirm-resend")
        )
        shot(browser, "10-resend-confirm")
        confirm.send_keys(Keys.ENTER)
        done = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "resent"))
        assert "queued for pacs" in done.text
        shot(browser, "11-resent")
        assert pacs.wait_for(1, timeout=15)
        assert "CHANGED" in pacs.texts[0]  # the inbound route's step ran
        browser.get(f"{url}/routes")
        shot(browser, "12-routes")
    finally:
        process.terminate()
        process.wait(10)
        pipeline.stop()
        pacs.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_single_sign_on_from_another_site(
    store: Engine, db_url: str, tmp_path: Path, browser: WebDriver
) -> None:
    """The login page's button, a provider on another site (localhost; the console is on
    127.0.0.1) and back from a page of the provider's: the pending sign-on's SameSite=Lax
    cookie comes back with that navigation, and the page it lands on brings the
    SameSite=Strict session along to the dashboard."""
    secret = tmp_path / "oidc-secret"
    secret.write_text(CLIENT_SECRET)
    with running_provider("localhost") as provider:
        provider.claims = {"sub": "id-9", "preferred_username": "dr.lind", "groups": ["radiology"]}
        provider.consent = True
        console = (
            "console:\n  oidc:\n"
            f"    issuer: {provider.issuer}\n    client_id: {CLIENT_ID}\n"
            f"    client_secret: ${{file:{secret}}}\n"
            "    role_map: {radiology: reviewer}\n    label: Hospital login\n"
        )
        folder = console_folder(tmp_path, console=console)
        process, url = running_console(db_url, folder, tmp_path / "console.log")
        try:
            browser.get(f"{url}/login")
            shot(browser, "13-login-sso")
            browser.find_element(By.LINK_TEXT, "Hospital login").send_keys(Keys.ENTER)
            WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "continue")).click()
            WebDriverWait(browser, 15).until(lambda d: d.current_url.rstrip("/") == url)
            assert "dr.lind (reviewer)" in browser.find_element(By.TAG_NAME, "header").text
            shot(browser, "14-signed-on")
        finally:
            process.terminate()
            process.wait(10)
