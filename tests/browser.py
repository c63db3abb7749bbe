"""Helpers of the browser tests: headless Chromium, signing in, reading cards, dropping files.

Also the fixtures the page test modules share (each imports them): one browser and one live
server (real pipelines, with stand-ins for files named `spin-…` and `slow-…`) per module, and a
user of its own for each test, so sessions never mix.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from settings import Settings
from tests.conftest import RedisProcess, make_settings
from tests.live import LiveServer, start_live_server
from tests.users import add_user

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PASSWORD = "correct horse battery"
WAIT_SECONDS = 30
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1280,900",
]
STAND_INS = {"mesh": "tests.helpers.pipelines:named_mesh",
             "texture": "tests.helpers.pipelines:named_texture"}
"""The real pipelines, except for files named `spin-…` (forever) or `slow-…` (about 8 s)."""
MAX_REFUSED_REFRESHES = 3
"""Refreshes answered 401 a test may log (each signed-out page load asks once); a loop asks more."""
_users = itertools.count(1)
"""Numbers of the users the tests add: one counter for all modules, which share one Redis."""

# Installed before any script of every page: counts the EventSources open at once and the
# token refreshes the page asks for, in `window.kilnProbe` (one per document).
PROBE = """
(() => {
  const probe = { made: 0, most: 0, refreshes: 0, sources: [] };
  probe.open = () => probe.sources.filter((s) => s.readyState !== 2).length;
  Object.defineProperty(window, "kilnProbe", { value: probe });
  const NativeEventSource = window.EventSource;
  if (NativeEventSource) {
    window.EventSource = class extends NativeEventSource {
      constructor(...args) {
        super(...args);
        probe.sources = probe.sources.filter((s) => s.readyState !== 2);
        probe.sources.push(this);
        probe.made += 1;
        probe.most = Math.max(probe.most, probe.sources.length);
      }
    };
  }
  const nativeFetch = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : String(input && input.url);
    if (url.includes("/api/auth/refresh")) probe.refreshes += 1;
    return nativeFetch.call(window, input, init);
  };
})();
"""
READ_PROBE = """
const probe = window.kilnProbe;
return {made: probe.made, most: probe.most, open: probe.open(), refreshes: probe.refreshes};
"""

# What the page shows, read in one go (no stale elements while cards re-render).
READ_CARDS = """
return [...document.querySelectorAll("#batches .card")].map((card) => {
  const image = card.querySelector("img.thumbnail");
  const table = card.querySelector("table.stats");
  return {
    task_id: card.dataset.taskId,
    batch_id: card.closest(".batch").dataset.batchId,
    filename: card.querySelector(".filename").textContent,
    kind: card.dataset.kind,
    state: card.dataset.state,
    progress: Number(card.dataset.progress),
    stage: card.querySelector(".stage").textContent,
    queue: card.querySelector(".queue").textContent,
    elapsed: card.querySelector(".elapsed").textContent,
    error: card.querySelector(".error").textContent,
    stats: table ? [...table.rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent])
                 : [],
    thumbnail: image && image.complete ? image.naturalWidth : null,
    links: [...card.querySelectorAll("a.artifact")].map((a) => a.getAttribute("href")),
  };
});
"""

# Files chosen in a throwaway input (send_keys), dropped on the zone as a real DataTransfer.
MAKE_PICKER = """
let input = document.getElementById("test-picker");
if (!input) {
  input = document.createElement("input");
  input.type = "file"; input.multiple = true; input.id = "test-picker";
  input.className = "visually-hidden";
  document.body.append(input);
}
input.value = "";
"""
DROP_PICKED = """
const input = document.getElementById("test-picker");
const data = new DataTransfer();
for (const file of input.files) data.items.add(file);
const zone = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
}
input.value = "";
"""

# Every state the connection indicator goes through, from now on.
WATCH_CONNECTION = """
window.connectionStates = [document.getElementById("connection").dataset.state];
new MutationObserver(() => {
  window.connectionStates.push(document.getElementById("connection").dataset.state);
}).observe(document.getElementById("connection"), {attributes: true});
"""

# The signed-in session's tasks as the server lists them (the page's cookie).
FETCH_TASKS = """
const done = arguments[arguments.length - 1];
fetch("/api/tasks?limit=200", {headers: {Accept: "application/json"}})
  .then((r) => r.json()).then((body) => done(body.tasks), (e) => done(String(e)));
"""

# Cancels every unfinished task of the signed-in session.
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


def start_browser(profile: Path) -> WebDriver:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run scripts/test, which installs "
                    "Debian's chromium and chromium-driver", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given to Service keeps Selenium Manager from looking for (or fetching) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


def probe(browser: WebDriver) -> dict[str, int]:
    """Since this document loaded: EventSources `made`, the `most` open at once, those `open`
    now, and the token `refreshes` asked for."""
    found: dict[str, int] = browser.execute_script(READ_PROBE)
    return found


def wait(browser: WebDriver, seconds: float = WAIT_SECONDS) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, seconds)


def sign_out_everywhere(browser: WebDriver, url: str) -> None:
    """A clean page for the next test: no cookies, the sign-in form."""
    # WebDriver's delete_all_cookies misses kiln_refresh, whose path is /api/auth
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get(url + "/")
    wait(browser).until(ec.visibility_of_element_located((By.ID, "sign-in")))


def sign_in(browser: WebDriver, url: str, username: str, password: str = PASSWORD) -> None:
    sign_out_everywhere(browser, url)
    submit_sign_in(browser, username, password)


def submit_sign_in(browser: WebDriver, username: str, password: str = PASSWORD) -> None:
    """Fill in and send the sign-in form the page shows."""
    form = browser.find_element(By.ID, "sign-in")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def wait_live(browser: WebDriver) -> None:
    wait(browser).until(ec.text_to_be_present_in_element_attribute(
        (By.ID, "connection"), "data-state", "live"))


def cards(browser: WebDriver) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.execute_script(READ_CARDS)
    return found


def wait_for_cards(browser: WebDriver, check: Callable[[list[dict[str, Any]]], bool], why: str,
                   seconds: float = WAIT_SECONDS) -> list[dict[str, Any]]:
    """The cards once `check` holds for them."""
    seen: list[dict[str, Any]] = []

    def holds(driver: WebDriver) -> bool:
        nonlocal seen
        seen = cards(driver)
        return check(seen)

    wait(browser, seconds).until(holds, why)
    return seen


def by_name(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["filename"]: c for c in found}


def drop(browser: WebDriver, paths: list[Path]) -> None:
    """Drop these files on the drop zone, as one drop."""
    browser.execute_script(MAKE_PICKER)
    browser.find_element(By.ID, "test-picker").send_keys("\n".join(str(p) for p in paths))
    browser.execute_script(DROP_PICKED)


def server_tasks(browser: WebDriver) -> list[dict[str, Any]]:
    tasks = browser.execute_async_script(FETCH_TASKS)
    assert isinstance(tasks, list), tasks
    return tasks


def screenshot(browser: WebDriver, name: str, height: int | None = None) -> None:
    """Saved under tests/artifacts/; `height` makes the window taller for this one picture."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = browser.get_window_size()
    if height is not None:
        browser.set_window_size(size["width"], height)
    try:
        browser.save_screenshot(str(ARTIFACTS / name))
    finally:
        if height is not None:
            browser.set_window_size(size["width"], size["height"])


def page_errors(browser: WebDriver) -> list[str]:
    """Console errors (a CSP violation, an exception) other than expected refusals; 401s too
    to /api/auth/refresh when there are more than a few (a refresh loop)."""
    log = browser.get_log("browser")  # type: ignore[no-untyped-call]
    severe = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    expected = ("status of 401", "status of 415", "status of 413", "status of 400",
                "ERR_CONNECTION_REFUSED", "ERR_INCOMPLETE_CHUNKED_ENCODING",
                "ERR_BLOCKED_BY_CLIENT")
    refusals = [m for m in severe if "/api/auth/refresh" in m and "status of 401" in m]
    errors = [m for m in severe if not any(e in m for e in expected)]
    return errors + (refusals if len(refusals) > MAX_REFUSED_REFRESHES else [])


def serve_on(settings: Settings, port: int, *, pipelines: Mapping[str, str] | None = None,
             timeout: float = 60) -> LiveServer:
    """A live server on a chosen port (tests/live.py picks a free one): to stop and restart it."""
    return start_live_server(settings, pipelines=pipelines, timeout=timeout, port=port,
                             graceful_shutdown=1)


def named_copy(tmp_path: Path, source: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(source, target)
    return target


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
    """A user of its own for each test (the session's Redis is not flushed between tests)."""
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
