"""The web page in a real browser: headless Chromium signs in, uploads, watches tasks finish."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import corpus
from tests.live import LiveServer
from tests.users import add_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "correct horse battery"
WAIT_SECONDS = 30
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1000,760",
]

# What the page shows, read in one go (no stale elements while cards re-render).
READ_CARDS = """
return [...document.querySelectorAll("#tasks .card")].map((card) => {
  const image = card.querySelector("img.thumbnail");
  return {
    task_id: card.dataset.taskId,
    filename: card.querySelector(".filename").textContent,
    kind: card.dataset.kind,
    state: card.dataset.state,
    stats: card.querySelector(".stats").textContent,
    thumbnail: image && image.complete ? image.naturalWidth : null,
    links: [...card.querySelectorAll("a.artifact")].map((a) => a.getAttribute("href")),
  };
});
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run scripts/test, which installs "
                    "Debian's chromium and chromium-driver", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given to Service keeps Selenium Manager from looking for (or fetching) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(browser: WebDriver, url: str, username: str, password: str) -> None:
    browser.get(url + "/")
    form = WebDriverWait(browser, WAIT_SECONDS).until(
        ec.visibility_of_element_located((By.ID, "sign-in")))
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def _cards(browser: WebDriver) -> list[dict[str, Any]]:
    cards: list[dict[str, Any]] = browser.execute_script(READ_CARDS)
    return cards


def _wait_for_success(browser: WebDriver, names: set[str], why: str) -> list[dict[str, Any]]:
    """The cards once every one named has succeeded and its thumbnail (if any) has loaded."""
    cards: list[dict[str, Any]] = []

    def finished(driver: WebDriver) -> bool:
        nonlocal cards
        cards = _cards(driver)
        done = {c["filename"] for c in cards if c["state"] == "SUCCESS"
                and (c["kind"] != "texture" or c["thumbnail"] is not None)}
        return names <= done

    WebDriverWait(browser, WAIT_SECONDS).until(finished, why)
    return cards


def _page_errors(browser: WebDriver) -> list[str]:
    """Console errors (a CSP violation, an exception) other than the expected 401 answers."""
    log = browser.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry["message"] for entry in log
            if entry["level"] == "SEVERE" and "status of 401" not in entry["message"]]


def test_upload_and_watch_both_tasks_succeed_then_reload(browser: WebDriver,
                                                         live_server: LiveServer,
                                                         redis_url: str) -> None:
    asyncio.run(add_user(redis_url, "alice"))
    wait = WebDriverWait(browser, WAIT_SECONDS)
    _sign_in(browser, live_server.url, "alice", PASSWORD)
    wait.until(ec.text_to_be_present_in_element((By.ID, "connection"), "live"))
    assert browser.find_element(By.ID, "whoami").text == "alice"

    mesh, texture = corpus("OBJ/box.obj"), corpus("Collada/duckCM.tga")
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(
        f"{mesh}\n{texture}")
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    names = {mesh.name, texture.name}
    cards = _wait_for_success(browser, names, "both cards should reach SUCCESS")

    by_name = {c["filename"]: c for c in cards}
    assert len(cards) == 2
    assert re.search(r"\b8 vertices\b", by_name["box.obj"]["stats"])
    assert re.search(r"\b12 faces\b", by_name["box.obj"]["stats"])
    assert re.fullmatch(r"\d+×\d+ px", by_name["duckCM.tga"]["stats"])
    assert by_name["duckCM.tga"]["thumbnail"] > 0
    task_id = by_name["duckCM.tga"]["task_id"]
    links = by_name["duckCM.tga"]["links"]
    assert f"/api/tasks/{task_id}/artifacts/thumbnail.png" in links
    assert f"/api/tasks/{task_id}/artifacts/mip-0-512x512.webp" in links

    browser.refresh()
    wait.until(ec.text_to_be_present_in_element((By.ID, "connection"), "live"))
    again = _wait_for_success(browser, names, "the snapshot should bring both cards back")
    assert sorted((c["task_id"], c["filename"], c["state"]) for c in again) == sorted(
        (c["task_id"], c["filename"], "SUCCESS") for c in cards)
    assert {c["filename"]: c["stats"] for c in again} == {c["filename"]: c["stats"] for c in cards}
    assert next(c for c in again if c["filename"] == "duckCM.tga")["thumbnail"] > 0
    mesh_id = by_name["box.obj"]["task_id"]
    mesh_card = browser.find_element(By.CSS_SELECTOR, f'.card[data-task-id="{mesh_id}"]')
    assert mesh_card.find_element(By.CSS_SELECTOR, ".stats").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, ".card button.cancel:not([hidden])")

    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "page-success.png"))
    assert _page_errors(browser) == []


def test_wrong_password_shows_the_servers_message(browser: WebDriver, live_server: LiveServer,
                                                  redis_url: str) -> None:
    asyncio.run(add_user(redis_url, "alice"))
    refused = httpx.post(live_server.url + "/api/auth/login",
                         json={"username": "alice", "password": "wrong"})
    assert refused.status_code == 401
    _sign_in(browser, live_server.url, "alice", "wrong")
    message = (By.CSS_SELECTOR, "#sign-in .message")
    WebDriverWait(browser, WAIT_SECONDS).until(
        ec.text_to_be_present_in_element(message, refused.json()["message"]))
    assert browser.find_element(*message).text == refused.json()["message"]
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert _page_errors(browser) == []
