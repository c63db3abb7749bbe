// Kiln's page: sign in, drop files, watch this session's tasks over one EventSource.
// Modules: session.js (requests, token refresh), stream.js (the EventSource and its recovery),
// uploads.js (drop zone, per-file progress, refusals), board.js (the tasks on the page: cards,
// eviction, snapshots), batch.js (a batch's section and counts), card.js (a task's card),
// states.js (task states), stats.js (result tables), turntable.js (the sprite scrubber),
// format.js (helpers).
// Everything that comes from the server is written with textContent, never as HTML.

import { Board } from "./board.js";
import { element, plural, setText } from "./format.js";
import { errorBody, Session } from "./session.js";
import { TaskStream } from "./stream.js";
import { filesOfDrop, filesOfInput, Uploader } from "./uploads.js";

const QUEUE_POLL_MS = 2000;
const OLDER_PAGE = 25;
const UNREACHABLE_RETRY_MS = [1000, 2000, 5000, 10000, 30000];

const $ = (id) => document.getElementById(id);
const ui = {
  loading: $("loading"),
  unreachable: $("unreachable"),
  tryAgain: $("try-again"),
  signIn: $("sign-in"),
  app: $("app"),
  account: $("account"),
  whoami: $("whoami"),
  connection: $("connection"),
  banner: $("banner"),
  signOut: $("sign-out"),
  drop: $("drop"),
  fileInput: $("file-input"),
  folderInput: $("folder-input"),
  uploads: $("uploads"),
  status: $("status"),
  empty: $("empty"),
  batches: $("batches"),
  older: $("older"),
  olderCount: $("older-count"),
  showOlder: $("show-older"),
};

const page = {
  queueTimer: null,
  queueAvailable: true, // false once GET /api/queue answered 404 (an older server)
  ticker: null,
  unreachableTries: 0,
  unreachableTimer: null,
  signedIn: false,
  generation: 0, // one more at each sign-in and sign-out: answers for an earlier one are dropped
};

const session = new Session({ onExpired: (message) => leave(message) });

const board = new Board({
  root: ui.batches,
  now: () => session.now(),
  announce,
  onAction: act,
  onChange: () => {
    ui.empty.hidden = board.size > 0;
    const hidden = board.hidden;
    ui.older.hidden = hidden === 0;
    setText(ui.olderCount, hidden ? `${plural(hidden, "older task")} not shown` : "");
    planQueuePoll();
  },
});

const stream = new TaskStream({
  onSnapshot: (snapshot) => board.applySnapshot(snapshot.tasks || []),
  onTask: (event) => {
    board.applyEvent(event, fetchTask);
    planQueuePoll();
  },
  onDeleted: (event) => board.applyDeleted(event),
  onState: setConnection,
  refresh: () => session.refresh(),
  onExpired: () => session.expired(),
});

const uploader = new Uploader({
  list: ui.uploads,
  session,
  announce,
  onAccepted: (batch) => board.noteUpload(batch),
});

// ---- screens -----------------------------------------------------------------------------

function show(screen) {
  for (const node of [ui.loading, ui.unreachable, ui.signIn, ui.app]) node.hidden = node !== screen;
  ui.account.hidden = screen !== ui.app;
}

function say(form, text) {
  form.querySelector(".message").textContent = text;
}

function announce(text) {
  // a fresh node each time, so the same words twice are read twice
  ui.status.replaceChildren(element("span", "", text));
}

function setConnection(state) {
  const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…",
    offline: "server unreachable", closed: "" };
  setText(ui.connection, labels[state] ?? state);
  ui.connection.dataset.state = state;
  ui.banner.hidden = state !== "reconnecting" && state !== "offline";
  ui.banner.dataset.state = state;
}

async function enter() {
  clearTimeout(page.unreachableTimer);
  let response;
  try {
    response = await session.request("GET", "/api/auth/me");
    if (response.status === 401 && await session.refresh()) {
      response = await session.request("GET", "/api/auth/me");
    }
  } catch {
    unreachable();
    return;
  }
  if (response.status >= 500) {
    unreachable();
    return;
  }
  page.unreachableTries = 0;
  if (!response.ok) {
    show(ui.signIn);
    say(ui.signIn, response.status === 401 ? "" : (await errorBody(response)).message);
    ui.signIn.elements.username.focus();
    return;
  }
  session.noteClock(response);
  const me = await response.json();
  session.planRefresh(me.expires_at - session.now());
  page.signedIn = true;
  page.generation += 1;
  setText(ui.whoami, me.username);
  board.clear();
  show(ui.app);
  clearInterval(page.ticker);
  page.ticker = setInterval(() => board.tick(), 1000);
  stream.open(false);
}

function unreachable() {
  show(ui.unreachable);
  const delay = UNREACHABLE_RETRY_MS[Math.min(page.unreachableTries, UNREACHABLE_RETRY_MS.length - 1)];
  page.unreachableTries += 1;
  page.unreachableTimer = setTimeout(enter, delay);
}

function leave(message) {
  page.signedIn = false;
  page.generation += 1;
  session.stopRefreshTimer();
  stream.stop();
  clearInterval(page.ticker);
  clearTimeout(page.queueTimer);
  page.queueTimer = null;
  board.clear();
  ui.uploads.replaceChildren();
  show(ui.signIn);
  say(ui.signIn, message);
  ui.signIn.elements.username.focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const form = ui.signIn;
  const button = form.querySelector("button[type=submit]");
  say(form, "");
  button.disabled = true;
  try {
    const response = await session.request("POST", "/api/auth/login", {
      username: form.elements.username.value,
      password: form.elements.password.value,
    });
    if (!response.ok) {
      say(form, (await errorBody(response)).message);
      form.elements.password.select();
      return;
    }
    form.reset();
    await enter();
  } catch {
    say(form, "Kiln cannot be reached; try again.");
  } finally {
    button.disabled = false;
  }
}

async function onSignOut() {
  try {
    await session.request("POST", "/api/auth/logout");
  } catch {
    // the cookie will expire on its own; the page forgets the session either way
  }
  leave("");
}

// ---- tasks -------------------------------------------------------------------------------

async function fetchTask(taskId) {
  try {
    const response = await session.call("GET", `/api/tasks/${encodeURIComponent(taskId)}`);
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

async function act(task, action) {
  const card = board.cards.get(task.task_id);
  const button = card && card[action];
  if (button) button.disabled = true;
  board.setNotice(task.task_id, "");
  try {
    const response = await session.call(
      "POST", `/api/tasks/${encodeURIComponent(task.task_id)}/${action}`);
    if (!response.ok) board.setNotice(task.task_id, (await errorBody(response)).message);
  } catch {
    board.setNotice(task.task_id, `The ${action} did not reach Kiln; try again.`);
  } finally {
    if (button) button.disabled = false;
  }
}

async function showOlder() {
  const generation = page.generation;
  ui.showOlder.disabled = true;
  board.beginPaging();
  try {
    // from the first task the page may lack (eviction leaves gaps among the newest), page by
    // page until one brings a task back
    let offset = board.covered;
    for (;;) {
      const response = await session.call(
        "GET", `/api/tasks?scope=session&limit=${OLDER_PAGE}&offset=${offset}`);
      if (generation !== page.generation) return;
      if (!response.ok) {
        announce((await errorBody(response)).message);
        return;
      }
      const listing = await response.json();
      if (generation !== page.generation) return;
      const added = board.addOlder(listing.tasks || [], Number(listing.total) || 0, offset);
      if (added > 0 || !Number.isInteger(listing.next_offset)) return;
      offset = listing.next_offset;
    }
  } catch {
    announce("Older tasks could not be loaded; try again.");
  } finally {
    if (generation === page.generation) board.endPaging();
    ui.showOlder.disabled = false;
  }
}

// Queue positions are polled only while some card waits, and not at all from a server without
// GET /api/queue.
function planQueuePoll() {
  if (page.queueTimer !== null || !page.queueAvailable || !page.signedIn) return;
  if (!board.hasQueued()) return;
  page.queueTimer = setTimeout(pollQueue, 0);
}

async function pollQueue() {
  const generation = page.generation;
  try {
    const response = await session.call("GET", "/api/queue");
    if (generation !== page.generation) return; // signed out (and maybe in again) meanwhile
    if (response.status === 404) {
      page.queueAvailable = false;
    } else if (response.ok) {
      const standing = await response.json();
      board.setQueue(standing.positions || {}, standing.queued);
    }
  } catch {
    // the stream's indicator already says the server is unreachable
  }
  if (generation !== page.generation) return;
  page.queueTimer = null;
  if (page.signedIn && page.queueAvailable && board.hasQueued()) {
    page.queueTimer = setTimeout(pollQueue, QUEUE_POLL_MS);
  }
}

// ---- the drop zone -----------------------------------------------------------------------

function onDrop(event) {
  event.preventDefault();
  ui.drop.classList.remove("over");
  filesOfDrop(event.dataTransfer)
    .then((files) => uploader.add(files))
    .catch(() => announce("The dropped folder could not be read."));
}

function wireDropZone() {
  let depth = 0; // dragenter/dragleave fire for every child crossed
  ui.drop.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    ui.drop.classList.add("over");
  });
  ui.drop.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) ui.drop.classList.remove("over");
  });
  ui.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  ui.drop.addEventListener("drop", (event) => {
    depth = 0;
    onDrop(event);
  });
  // a file dropped beside the zone must not make the browser navigate away
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!ui.app.hidden && !ui.drop.contains(event.target)) onDrop(event);
  });
  ui.drop.addEventListener("keydown", (event) => {
    if (event.target !== ui.drop) return;
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      ui.fileInput.click();
    }
  });
  for (const input of [ui.fileInput, ui.folderInput]) {
    input.addEventListener("change", () => {
      uploader.add(filesOfInput(input));
      input.value = "";
    });
  }
}

// ---- start -------------------------------------------------------------------------------

ui.signIn.addEventListener("submit", onSignIn);
ui.signOut.addEventListener("click", onSignOut);
ui.tryAgain.addEventListener("click", () => {
  page.unreachableTries = 0;
  enter();
});
ui.showOlder.addEventListener("click", showOlder);
wireDropZone();
// For the console and the browser tests: the page's parts, no secrets (there are none here).
window.kiln = { board, stream, session, uploader };
enter();
