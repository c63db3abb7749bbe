"""The web page in a real browser: headless Chromium signs in, drops files, watches tasks finish.

One browser and one live server (real pipelines, with stand-ins for files named `spin-…` and
`slow-…`) serve the whole module; each test signs in as its own user, so sessions never mix.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

from tests.browser import (
    STAND_INS,
    by_name,
    drop,
    page_errors,
    screenshot,
    sign_in,
    start_browser,
    wait,
    wait_for_cards,
    wait_live,
)
from tests.conftest import RedisProcess, corpus, make_settings
from tests.live import LiveServer, start_live_server
from tests.users import add_user

_users = itertools.count(1)


@pytest.fixture(scope="module")
def page_server(redis_process: RedisProcess,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(redis_process.url, tmp_path_factory.mktemp("page") / "data")
    server = start_live_server(settings, pipelines=STAND_INS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


@pytest.fixture
def user(page_server: LiveServer) -> str:
    """A user of its own for each test (the module's Redis is not flushed between tests)."""
    name = f"artist{next(_users)}"
    asyncio.run(add_user(page_server.settings.redis_url or "", name))
    return name


@pytest.fixture
def signed_in(browser: WebDriver, page_server: LiveServer, user: str) -> WebDriver:
    browser.get_log("browser")  # type: ignore[no-untyped-call]  # forget earlier tests' lines
    sign_in(browser, page_server.url, user)
    wait_live(browser)
    return browser


def named_copy(tmp_path: Path, source: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(source, target)
    return target


def test_signed_out_page_shows_the_form_and_the_servers_message(
        browser: WebDriver, page_server: LiveServer, user: str) -> None:
    refused = httpx.post(page_server.url + "/api/auth/login",
                         json={"username": user, "password": "wrong"})
    assert refused.status_code == 401
    sign_in(browser, page_server.url, user, "wrong")
    message = (By.CSS_SELECTOR, "#sign-in .message")
    wait(browser).until(ec.text_to_be_present_in_element(message, refused.json()["message"]))
    assert not browser.find_element(By.ID, "app").is_displayed()
    screenshot(browser, "page-signed-out.png")
    assert page_errors(browser) == []


def test_three_dropped_files_succeed_with_previews_stats_and_a_turntable(
        signed_in: WebDriver) -> None:
    browser = signed_in
    assert browser.find_element(By.ID, "empty").is_displayed()
    files = [corpus("OBJ/box.obj"), corpus("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb"),
             corpus("Collada/duckCM.tga")]
    drop(browser, files)
    names = {f.name for f in files}

    def all_done(found: list[dict[str, Any]]) -> bool:
        done = {c["filename"] for c in found if c["state"] == "SUCCESS" and c["thumbnail"]}
        return done == names and len(found) == 3

    found = wait_for_cards(browser, all_done, "every card should succeed with its thumbnail")
    assert len({c["batch_id"] for c in found}) == 1, "one drop is one batch"
    summary = browser.find_element(By.CSS_SELECTOR, ".batch .batch-summary")
    assert summary.text == "3 of 3 done"
    assert not browser.find_element(By.ID, "empty").is_displayed()

    cards_by_name = by_name(found)
    box = dict(cards_by_name["box.obj"]["stats"])
    assert box["Vertices"] == "8"
    assert box["Faces"] == "12"
    assert box["Dimensions"] == "1 × 1 × 1"
    assert box["Watertight"] == "yes"
    assert box["Bounds"] == "(-0.5, -0.5, -0.5) → (0.5, 0.5, 0.5)"
    texture = dict(cards_by_name["duckCM.tga"]["stats"])
    assert texture["Size"] == "512 × 512 px"
    assert texture["Power of two"] == "yes"
    assert texture["Mip chain"].startswith("10 levels")
    for card in found:
        assert card["thumbnail"] > 0
        assert re.fullmatch(r"\d+\.\d s|\d+:\d\d", card["elapsed"]), card["elapsed"]
    tid = cards_by_name["duckCM.tga"]["task_id"]
    assert f"/api/tasks/{tid}/artifacts/mip-0-512x512.webp" in cards_by_name["duckCM.tga"]["links"]
    mesh_id = cards_by_name["box.obj"]["task_id"]
    assert {f"/api/tasks/{mesh_id}/artifacts/{name}"
            for name in ("thumbnail.png", "model.glb", "turntable.png")} <= set(
        cards_by_name["box.obj"]["links"])

    # the turntable: focus it, step with the arrow keys, then scrub with the mouse
    turntable = browser.find_element(
        By.CSS_SELECTOR, f'.card[data-task-id="{mesh_id}"] .preview.turntable')
    assert turntable.get_attribute("data-frame") == "0"
    browser.execute_script("arguments[0].focus()", turntable)
    wait(browser).until(lambda d: "loaded" in (turntable.get_attribute("class") or ""))
    turntable.send_keys(Keys.ARROW_RIGHT)
    turntable.send_keys(Keys.ARROW_RIGHT)
    assert turntable.get_attribute("data-frame") == "2"
    turntable.send_keys(Keys.ARROW_LEFT)
    assert turntable.get_attribute("data-frame") == "1"
    turntable.send_keys(Keys.END)
    assert turntable.get_attribute("data-frame") == "23"
    browser.execute_script(
        "arguments[0].closest('.card').querySelector('details').open = true", turntable)
    screenshot(browser, "page-success.png")
    assert page_errors(browser) == []
