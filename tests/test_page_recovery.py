"""The web page in a real browser, recovering: a reload mid-task, a server restart, an expired
token; and never more than one EventSource, nor a loop of refreshes.

The fixtures (one browser and one live server per module, a user per test) are tests/browser.py's;
`own_server` is a server of a test's own, to stop and start again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.browser import (
    STAND_INS,
    WATCH_CONNECTION,
    browser,
    by_name,
    drop,
    named_copy,
    page_errors,
    page_server,
    probe,
    screenshot,
    serve_on,
    server_tasks,
    sign_in,
    signed_in,
    submit_sign_in,
    user,
    wait,
    wait_for_cards,
    wait_live,
)
from tests.conftest import RedisProcess, corpus, free_port, make_settings
from tests.live import LiveServer
from tests.users import add_user

__all__ = ["browser", "page_server", "signed_in", "user"]  # the shared fixtures


def test_a_reload_mid_task_shows_exactly_the_servers_tasks_and_the_bar_keeps_moving(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    drop(browser, [corpus("OBJ/box.obj")])
    wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "SUCCESS",
                   "the box should succeed")
    drop(browser, [named_copy(tmp_path, corpus("OBJ/box.obj"), "slow-box.obj")])
    # reloaded early in its eight seconds, the slow task is still running when the page is back
    wait_for_cards(browser, lambda cs: len(cs) == 2 and 0.05 < by_name(cs)["slow-box.obj"][
        "progress"] < 0.4, "the slow task should be under way")
    browser.refresh()
    wait_live(browser)
    found = wait_for_cards(browser, lambda cs: len(cs) == 2, "both cards should come back")
    before = by_name(found)["slow-box.obj"]["progress"]
    assert by_name(found)["slow-box.obj"]["state"] in ("STARTED", "PROGRESS")
    assert before < 1
    listed = server_tasks(browser)
    assert sorted(c["task_id"] for c in found) == sorted(t["task_id"] for t in listed)
    wait_for_cards(browser, lambda cs: by_name(cs)["slow-box.obj"]["progress"] > before,
                   "the bar should keep moving after the reload")
    found = wait_for_cards(browser, lambda cs: all(c["state"] == "SUCCESS" for c in cs),
                           "the slow task should finish")
    assert len(found) == 2
    listed = server_tasks(browser)
    assert sorted((c["task_id"], c["state"]) for c in found) == sorted(
        (t["task_id"], t["state"]) for t in listed)
    seen = probe(browser)
    assert (seen["most"], seen["open"]) == (1, 1), seen
    assert page_errors(browser) == []


@pytest.fixture
def own_server(redis_process: RedisProcess, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A server of this test's own on a fixed port, which the test may stop and start again.

    It uses Redis database 1: the module's server, on database 0, has a worker of its own that
    would otherwise take this server's jobs (and miss their files, in another data directory)."""
    redis_url = redis_process.url.rsplit("/", 1)[0] + "/1"
    box: dict[str, Any] = {"port": free_port(), "server": None,
                           "settings": make_settings(redis_url, tmp_path / "data", token_ttl=5)}

    def start() -> LiveServer:
        server = serve_on(box["settings"], box["port"], pipelines=STAND_INS)
        box["server"] = server
        return server

    box["start"] = start
    yield box
    if box["server"] is not None and box["server"].thread.is_alive():
        box["server"].stop()


def _states(browser: WebDriver) -> list[str]:
    states: list[str] = browser.execute_script("return window.connectionStates")
    return states


def test_the_stream_resumes_when_the_server_comes_back(
        browser: WebDriver, own_server: dict[str, Any]) -> None:
    server: LiveServer = own_server["start"]()
    asyncio.run(add_user(server.settings.redis_url or "", "returning"))
    sign_in(browser, server.url, "returning")
    wait_live(browser)
    drop(browser, [corpus("Collada/duckCM.tga")])
    wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "SUCCESS",
                   "the texture should succeed")
    browser.execute_script(WATCH_CONNECTION)
    server.stop()
    wait(browser).until(lambda d: d.find_element(By.ID, "connection").get_attribute(
        "data-state") in ("reconnecting", "offline"))
    screenshot(browser, "page-reconnecting.png")
    server = own_server["start"]()
    wait_live(browser)
    drop(browser, [corpus("OBJ/box.obj")])
    found = wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "SUCCESS" for c in cs), "new events should arrive after the restart")
    assert sorted(c["task_id"] for c in found) == sorted(
        t["task_id"] for t in server_tasks(browser))
    assert "live" in _states(browser)[1:]
    assert page_errors(browser) == []


def _upload_in_the_pages_session(browser: WebDriver, url: str, path: Path) -> str:
    """Upload `path` as the page's own session (its refresh cookie, rotated, handed back to the
    page) and wait until the task has finished on the server: its events go to the page's log."""
    cookies = browser.execute_cdp_cmd("Network.getCookies", {"urls": [url + "/api/auth/refresh"]})
    secret = next(c["value"] for c in cookies["cookies"] if c["name"] == "kiln_refresh")
    with httpx.Client(base_url=url) as client:
        renewed = client.post("/api/auth/refresh", headers={"Cookie": f"kiln_refresh={secret}"})
        assert renewed.status_code == 200, renewed.text
        rotated = renewed.cookies["kiln_refresh"]
        auth = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
        accepted = client.post("/api/uploads", headers=auth,
                               files=[("file", (path.name, path.read_bytes()))])
        assert accepted.status_code == 202, accepted.text
        task_id: str = accepted.json()["tasks"][0]["task_id"]
        wait(browser).until(lambda _: client.get(f"/api/tasks/{task_id}", headers=auth).json()[
            "state"] == "SUCCESS", "the task uploaded beside the page should succeed")
    browser.execute_cdp_cmd("Network.setCookie", {
        "name": "kiln_refresh", "value": rotated, "url": url + "/api/auth", "path": "/api/auth",
        "httpOnly": True, "sameSite": "Strict"})
    return task_id


def test_an_expired_token_is_refreshed_the_stream_resumes_and_a_reload_keeps_the_session(
        browser: WebDriver, own_server: dict[str, Any]) -> None:
    server: LiveServer = own_server["start"]()
    asyncio.run(add_user(server.settings.redis_url or "", "sleepy"))
    sign_in(browser, server.url, "sleepy")
    wait_live(browser)
    # the page would refresh ahead of the expiry: stop that, and lose the access token
    browser.execute_script("window.kiln.session.stopRefreshTimer()")
    browser.execute_script(WATCH_CONNECTION)
    # the refresh is blocked at first, so the stream stays down while a task runs to its end
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/api/auth/refresh"]})
    try:
        browser.delete_cookie("kiln_token")
        # the server ends the stream when the token expires; EventSource then meets a 401
        wait(browser).until(lambda d: "offline" in _states(d),
                            "the stream should drop and its refresh fail")
        offline_task = _upload_in_the_pages_session(browser, server.url, corpus("OBJ/box.obj"))
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
    # back online: the page tries at once instead of at the end of its back-off
    browser.execute_script("window.dispatchEvent(new Event('online'))")
    wait_live(browser)
    assert browser.find_element(By.ID, "app").is_displayed()
    found = wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "SUCCESS",
                           "the events of the task made while the stream was down should arrive")
    assert [(c["task_id"], c["state"]) for c in found] == [(offline_task, "SUCCESS")]
    assert [(t["task_id"], t["state"]) for t in server_tasks(browser)] == [
        (offline_task, "SUCCESS")]
    drop(browser, [corpus("Collada/duckCM.tga")])
    found = wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "SUCCESS" for c in cs), "events should still arrive after the refresh")
    assert sorted((c["task_id"], c["state"]) for c in found) == sorted(
        (t["task_id"], t["state"]) for t in server_tasks(browser))
    seen = probe(browser)
    assert seen["most"] == 1 and seen["open"] == 1, seen
    # blocked refreshes back off (1 s, 2 s, 4 s...): a loop would ask for many more
    assert seen["refreshes"] <= 6, seen

    # a reload after the access token expired keeps the session through the refresh cookie
    browser.execute_script("window.kiln.session.stopRefreshTimer()")
    expired = """
    const done = arguments[arguments.length - 1];
    fetch("/api/auth/me").then((r) => done(r.status), () => done(0));
    """
    wait(browser).until(lambda d: d.execute_async_script(expired) == 401,
                        "the access token should expire")
    browser.refresh()
    wait_live(browser)
    assert browser.find_element(By.ID, "whoami").text == "sleepy"
    wait_for_cards(browser, lambda cs: len(cs) == 2 and all(c["state"] == "SUCCESS" for c in cs),
                   "the snapshot should bring the cards back")
    seen = probe(browser)
    assert (seen["most"], seen["open"], seen["refreshes"]) == (1, 1, 1), seen

    # signing out closes the stream; signing in again, on the same page, opens one
    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "sign-in")))
    wait(browser).until(lambda d: probe(d)["open"] == 0, "signing out should close the stream")
    submit_sign_in(browser, "sleepy")
    wait_live(browser)
    seen = probe(browser)
    assert (seen["most"], seen["open"]) == (1, 1), seen

    # signing out ends the session: a reload shows the form again
    browser.find_element(By.ID, "sign-out").click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "sign-in")))
    browser.refresh()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "sign-in")))
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert probe(browser)["made"] == 0
    assert page_errors(browser) == []
