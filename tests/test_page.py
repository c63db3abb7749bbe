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
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

from tests.browser import (
    PASSWORD,
    STAND_INS,
    WATCH_CONNECTION,
    by_name,
    cards,
    drop,
    page_errors,
    probe,
    screenshot,
    serve_on,
    server_tasks,
    sign_in,
    start_browser,
    submit_sign_in,
    wait,
    wait_for_cards,
    wait_live,
)
from tests.conftest import RedisProcess, corpus, free_port, make_settings
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
def signed_in(browser: WebDriver, page_server: LiveServer, user: str) -> Iterator[WebDriver]:
    browser.get_log("browser")  # type: ignore[no-untyped-call]  # forget earlier tests' lines
    sign_in(browser, page_server.url, user)
    wait_live(browser)
    yield browser
    # a stand-in left spinning would hold one of the module's two worker slots
    browser.execute_script("window.kiln && window.kiln.stream.stop()")
    browser.execute_async_script(CANCEL_ALL)


CANCEL_ALL = """
const done = arguments[arguments.length - 1];
fetch("/api/tasks?limit=200").then((r) => r.json()).then(async (body) => {
  for (const task of body.tasks || []) {
    if (!["SUCCESS", "FAILURE", "REVOKED"].includes(task.state)) {
      await fetch(`/api/tasks/${task.task_id}/cancel`, {method: "POST"});
    }
  }
}).then(() => done(null), () => done(null));
"""


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
    # after the account's button, the keyboard reaches the drop zone, then its two choosers
    browser.execute_script("document.getElementById('sign-out').focus()")
    focused = []
    for _ in range(3):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused.append(browser.switch_to.active_element.get_attribute("id"))
    assert focused == ["drop", "file-input", "folder-input"]
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
    width = turntable.size["width"]
    for fraction, frame in ((0.02, "0"), (0.52, "12"), (0.98, "23")):
        ActionChains(browser).move_to_element_with_offset(
            turntable, int(width * (fraction - 0.5)), 0).perform()
        assert turntable.get_attribute("data-frame") == frame
    turntable.send_keys(Keys.HOME)
    for _ in range(5):
        turntable.send_keys(Keys.ARROW_RIGHT)
    browser.execute_script(
        "arguments[0].closest('.card').querySelector('details').open = true", turntable)
    screenshot(browser, "page-success.png", height=1150)
    assert page_errors(browser) == []


def test_a_refused_file_shows_the_servers_message_and_the_rest_of_the_drop_is_sent(
        signed_in: WebDriver, page_server: LiveServer, user: str) -> None:
    browser = signed_in
    orphan = corpus("OBJ/cube_usemtl.mtl")
    with httpx.Client(base_url=page_server.url) as client:
        client.post("/api/auth/login", json={"username": user, "password": PASSWORD})
        refused = client.post("/api/uploads", files=[("file", (orphan.name, orphan.read_bytes()))])
    assert refused.status_code == 415
    assert refused.json()["file"] == orphan.name
    drop(browser, [corpus("OBJ/box.obj"), orphan, corpus("Collada/duckCM.tga")])

    row = '.upload-file[data-state="refused"]'
    wait(browser).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} .message"),
                                                         refused.json()["message"]))
    assert browser.find_element(By.CSS_SELECTOR, f"{row} .name").text == orphan.name
    found = wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "SUCCESS" for c in cs), "the other two files should be sent and succeed")
    assert {c["filename"] for c in found} == {"box.obj", "duckCM.tga"}
    wait(browser).until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, ".upload .summary"), "2 of 3 sent, 1 refused"))
    assert browser.find_element(By.CSS_SELECTOR, ".batch-summary").text == "2 of 2 done"
    screenshot(browser, "page-refused.png")
    assert page_errors(browser) == []


def test_a_folder_uploads_as_one_model_with_its_textures_and_shows_each_files_progress(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    folder = tmp_path / "spider"
    folder.mkdir()
    for name in ("spider.obj", "spider.mtl", "SpiderTex.jpg", "drkwood2.jpg", "engineflare1.jpg",
                 "wal67ar_small.jpg", "wal69ar_small.jpg"):
        shutil.copyfile(corpus(f"OBJ/{name}"), folder / name)
    (folder / ".DS_Store").write_bytes(b"junk a folder walk must skip")
    # slow the upload down so that the bytes can be seen going out file by file
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": 120 * 1024})
    try:
        browser.find_element(By.ID, "folder-input").send_keys(str(folder))
        partly = (
            "const rows = [...document.querySelectorAll('.upload-file')];"
            "const p = rows.map((r) => Number(r.dataset.progress));"
            "return p.length === 7 && p.some((x) => x > 0 && x < 1) ? p : null;")
        progress = wait(browser).until(lambda d: d.execute_script(partly))
        screenshot(browser, "page-uploading.png")
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    # the bytes are split over the files in the order they are sent
    moving = next(i for i, p in enumerate(progress) if 0 < p < 1)
    assert all(p == 1 for p in progress[:moving]) and all(p == 0 for p in progress[moving + 1:])
    found = wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "SUCCESS",
                           "the folder should become one mesh task", seconds=60)
    stats = dict(found[0]["stats"])
    assert found[0]["filename"] == "spider.obj"
    assert stats["Missing textures"] == "none"
    assert page_errors(browser) == []


def test_queue_position_while_two_tasks_spin_then_cancel_them(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    box = corpus("OBJ/box.obj")
    drop(browser, [named_copy(tmp_path, box, f"spin-{x}.obj") for x in "ab"])
    wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "PROGRESS" for c in cs), "both spinners should run")
    drop(browser, [box])
    found = wait_for_cards(browser, lambda cs: any(
        c["filename"] == "box.obj" and c["queue"].startswith("#1 ") for c in cs),
        "the box should wait first in the queue behind the two spinners")
    assert by_name(found)["box.obj"]["state"] == "PENDING"
    # elapsed time ticks while a task runs
    spinning = by_name(found)["spin-a.obj"]
    wait_for_cards(browser, lambda cs: by_name(cs)["spin-a.obj"]["elapsed"] not in (
        "", spinning["elapsed"]), "the elapsed time should tick")
    screenshot(browser, "page-running-queued.png", height=1250)
    # a refusal of Cancel or Retry stays on the card while the task only makes progress
    spinning = by_name(cards(browser))["spin-a.obj"]
    browser.execute_script("window.kiln.board.setNotice(arguments[0], 'Refused for the test.')",
                           spinning["task_id"])
    wait_for_cards(browser, lambda cs: by_name(cs)["spin-a.obj"]["progress"] > spinning[
        "progress"], "the spinner should make progress")
    notice = browser.find_element(
        By.CSS_SELECTOR, f'.card[data-task-id="{spinning["task_id"]}"] .notice')
    assert notice.text == "Refused for the test."

    for name in ("spin-a.obj", "spin-b.obj"):
        tid = by_name(found)[name]["task_id"]
        browser.find_element(By.CSS_SELECTOR, f'.card[data-task-id="{tid}"] button.cancel').click()
        wait_for_cards(browser, lambda cs: by_name(cs)[name]["state"] == "REVOKED",  # noqa: B023
                       f"{name} should be revoked")
    found = wait_for_cards(browser, lambda cs: by_name(cs)["box.obj"]["state"] == "SUCCESS",
                           "the box should run once a slot is free")
    assert by_name(found)["box.obj"]["queue"] == ""
    assert [c["state"] for c in found if c["filename"].startswith("spin")] == ["REVOKED"] * 2
    cancelled = browser.find_element(
        By.CSS_SELECTOR, f'.card[data-task-id="{by_name(found)["spin-a.obj"]["task_id"]}"]')
    assert cancelled.find_element(By.CSS_SELECTOR, "button.retry").is_displayed()
    assert not cancelled.find_element(By.CSS_SELECTOR, "button.cancel").is_displayed()
    summaries = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".batch-summary")]
    assert summaries == ["1 of 1 done", "0 of 2 done, 2 cancelled"]
    assert page_errors(browser) == []


def test_a_failed_task_shows_its_error_and_can_be_retried(signed_in: WebDriver) -> None:
    browser = signed_in
    drop(browser, [corpus("invalid/malformed.obj")])
    found = wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "FAILURE",
                           "the malformed OBJ should fail")
    tid = found[0]["task_id"]
    with_code = re.fullmatch(r".+ \(([a-z_]+)\)", found[0]["error"])
    assert with_code, found[0]["error"]
    screenshot(browser, "page-failure.png")
    card = browser.find_element(By.CSS_SELECTOR, f'.card[data-task-id="{tid}"]')
    card.find_element(By.CSS_SELECTOR, "button.retry").click()
    wait(browser).until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f'.card[data-task-id="{tid}"] .attempt'), "attempt 2"))
    found = wait_for_cards(browser, lambda cs: cs[0]["state"] == "FAILURE",
                           "the retry should fail again")
    assert len(found) == 1 and found[0]["error"].endswith(f"({with_code.group(1)})")
    assert browser.find_element(By.CSS_SELECTOR, ".batch-summary").text == "0 of 1 done, 1 failed"
    assert page_errors(browser) == []


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


def test_the_board_keeps_at_most_its_limit_of_cards_and_pages_older_ones_in(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    browser.execute_script("window.kiln.board.limit = 2")
    texture = corpus("Collada/duckCM.tga")
    drop(browser, [named_copy(tmp_path, texture, f"duck-{n}.tga") for n in range(4)])
    # the batch's header counts all four, also the two whose cards went
    wait(browser).until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, ".batch .batch-summary"), "4 of 4 done"))
    found = wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "SUCCESS" for c in cs), "two cards should stay")
    assert browser.find_element(By.CSS_SELECTOR, ".batch .batch-summary").text == "4 of 4 done"
    listed = server_tasks(browser)
    assert len(listed) == 4
    assert all(t["state"] == "SUCCESS" for t in listed)
    assert sorted(c["task_id"] for c in found) == sorted(t["task_id"] for t in listed[:2])
    older = browser.find_element(By.ID, "older")
    assert older.is_displayed()
    assert browser.find_element(By.ID, "older-count").text == "2 older tasks not shown"
    browser.find_element(By.ID, "show-older").click()
    found = wait_for_cards(browser, lambda cs: len(cs) == 4, "the older tasks should come back")
    assert sorted(c["task_id"] for c in found) == sorted(t["task_id"] for t in listed)
    assert not older.is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, ".batch .batch-summary").text == "4 of 4 done"
    assert page_errors(browser) == []


def test_show_older_brings_back_a_newer_finished_task_evicted_before_an_older_running_one(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    browser.execute_script("window.kiln.board.limit = 2")
    texture = corpus("Collada/duckCM.tga")
    drop(browser, [named_copy(tmp_path, corpus("OBJ/box.obj"), "spin-old.obj")])
    wait_for_cards(browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "PROGRESS",
                   "the spinner should run")
    drop(browser, [named_copy(tmp_path, texture, "first.tga")])
    wait_for_cards(browser, lambda cs: len(cs) == 2 and by_name(cs)["first.tga"][
        "state"] == "SUCCESS", "the first texture should succeed")
    # the third task evicts the finished one, newer than the spinner that stays
    drop(browser, [named_copy(tmp_path, texture, "second.tga")])
    found = wait_for_cards(browser, lambda cs: sorted(c["filename"] for c in cs) == [
        "second.tga", "spin-old.obj"] and by_name(cs)["second.tga"]["state"] == "SUCCESS",
        "the first texture's card should make way")
    assert browser.find_element(By.ID, "older-count").text == "1 older task not shown"
    browser.find_element(By.ID, "show-older").click()
    found = wait_for_cards(browser, lambda cs: len(cs) == 3, "the evicted task should come back")
    assert sorted(c["task_id"] for c in found) == sorted(
        t["task_id"] for t in server_tasks(browser))
    assert by_name(found)["first.tga"]["state"] == "SUCCESS"
    assert not browser.find_element(By.ID, "older").is_displayed()
    assert page_errors(browser) == []
