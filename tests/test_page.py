"""The web page in a real browser: signing in, uploads, the cards with their stats and turntable.

The fixtures (one browser and one live server per module, a user per test) are tests/browser.py's.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec

from tests.browser import (
    PASSWORD,
    browser,
    by_name,
    cards,
    drop,
    named_copy,
    page_errors,
    page_server,
    screenshot,
    sign_in,
    signed_in,
    user,
    wait,
    wait_for_cards,
)
from tests.conftest import corpus
from tests.live import LiveServer

__all__ = ["browser", "page_server", "signed_in", "user"]  # the shared fixtures


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


def test_missing_textures_show_on_the_cards_face(signed_in: WebDriver) -> None:
    browser = signed_in
    # the spider's material library names five images; none of them is dropped with it
    drop(browser, [corpus("OBJ/spider.obj"), corpus("OBJ/spider.mtl"), corpus("OBJ/box.obj")])
    found = wait_for_cards(
        browser, lambda cs: len(cs) == 2 and all(c["state"] == "SUCCESS" for c in cs),
        "both models should succeed")
    line = {c["filename"]: browser.find_element(
        By.CSS_SELECTOR, f'.card[data-task-id="{c["task_id"]}"] .missing') for c in found}
    assert line["spider.obj"].is_displayed()  # on the face, with the details still folded
    text = line["spider.obj"].text
    assert text.startswith("⚠ 5 missing textures: ") and "SpiderTex.jpg" in text
    assert not line["box.obj"].is_displayed()
    assert page_errors(browser) == []


def test_a_running_models_card_shows_its_thumbnail_and_stats_so_far(
        signed_in: WebDriver, page_server: LiveServer, tmp_path: Path) -> None:
    browser = signed_in
    # a stand-in that shares a thumbnail and its stats, then waits to be let go
    drop(browser, [named_copy(tmp_path, corpus("OBJ/box.obj"), "share-box.obj")])
    (running,) = wait_for_cards(
        browser, lambda cs: len(cs) == 1 and cs[0]["state"] == "PROGRESS" and cs[0]["thumbnail"],
        "the running card should show the thumbnail it has so far")
    assert dict(running["stats"])["Faces"] == "12"
    release = page_server.settings.data_dir / "tasks" / running["task_id"] / "release"
    release.touch()
    (done,) = wait_for_cards(browser, lambda cs: cs[0]["state"] == "SUCCESS", "then it succeeds")
    assert done["thumbnail"] and dict(done["stats"])["Faces"] == "12"
    assert page_errors(browser) == []
