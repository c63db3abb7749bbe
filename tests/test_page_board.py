"""The web page in a real browser: the board's limit of cards, and Show older paging older
tasks back in.

The fixtures (one browser and one live server per module, a user per test) are tests/browser.py's.
"""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.browser import (
    browser,
    by_name,
    drop,
    named_copy,
    page_errors,
    page_server,
    server_tasks,
    signed_in,
    user,
    wait,
    wait_for_cards,
)
from tests.conftest import corpus

__all__ = ["browser", "page_server", "signed_in", "user"]  # the shared fixtures


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


DELETE_TASK = """
const done = arguments[arguments.length - 1];
fetch(`/api/tasks/${arguments[0]}`, {method: "DELETE"}).then((r) => done(r.status),
                                                               (e) => done(String(e)));
"""


def test_a_deleted_task_leaves_the_board_and_its_batch_counts_the_rest(
        signed_in: WebDriver, tmp_path: Path) -> None:
    browser = signed_in
    texture = corpus("Collada/duckCM.tga")
    drop(browser, [named_copy(tmp_path, texture, f"gone-{n}.tga") for n in range(2)])
    found = wait_for_cards(browser, lambda cs: len(cs) == 2 and all(
        c["state"] == "SUCCESS" for c in cs), "both should finish")
    gone = found[0]["task_id"]
    assert browser.execute_async_script(DELETE_TASK, gone) == 204
    left = wait_for_cards(browser, lambda cs: len(cs) == 1, "the deleted card should go")
    assert left[0]["task_id"] != gone
    wait(browser).until(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, ".batch .batch-summary"), "1 of 1 done"))
    assert [t["task_id"] for t in server_tasks(browser)] == [left[0]["task_id"]]
    assert page_errors(browser) == []
