// Kiln's page: sign in, upload files, watch this session's tasks over one EventSource.
// The session lives in an HttpOnly cookie; this script never sees or stores a token. A token
// cannot be refreshed once it has expired, so the page refreshes it ahead of time; the stream,
// which the server ends when the old token expires, then resumes on the new cookie by itself.
// Everything that comes from the server is written with textContent, never as HTML.
"use strict";

const ACTIVE = new Set(["PENDING", "STARTED", "PROGRESS", "RETRY"]);
const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
const RETRYABLE = new Set(["FAILURE", "REVOKED"]);
const THUMBNAIL = "thumbnail.png";
const MAX_RECONNECT_DELAY_MS = 30000;
const SESSION_ENDED = "Your session has ended: sign in again.";
const REFRESH_AT = 0.75; // of a token's lifetime
const REFRESH_RETRY_MS = 5000;

const ui = {
  loading: document.getElementById("loading"),
  signIn: document.getElementById("sign-in"),
  app: document.getElementById("app"),
  account: document.getElementById("account"),
  whoami: document.getElementById("whoami"),
  connection: document.getElementById("connection"),
  signOut: document.getElementById("sign-out"),
  upload: document.getElementById("upload"),
  empty: document.getElementById("empty"),
  list: document.getElementById("tasks"),
};

const page = {
  cards: new Map(), // task_id -> {task, root, parts}
  source: null, // the one EventSource, or null
  lastEventId: null, // where a new EventSource resumes after a refresh
  reconnectDelay: 0, // grows while the stream cannot be reopened, back to 0 once it opens
  reconnectTimer: null,
  refreshing: null, // the refresh in flight: concurrent callers share it
  refreshTimer: null, // the next refresh ahead of expiry
};

// ---- HTTP --------------------------------------------------------------------------------

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.message === "string") return body.message;
  } catch {
    // not JSON: fall through to the status line
  }
  return `The server answered ${response.status} ${response.statusText}`.trim();
}

function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  return fetch(path, init);
}

// A request that survives an expired token: one refresh, then one more try.
async function call(method, path, body) {
  const response = await request(method, path, body);
  if (response.status !== 401) return response;
  return (await refreshSession()) ? request(method, path, body) : response;
}

// True with a new cookie; false (and back to the sign-in form) when the session is over;
// throws when the server cannot say (network down, 5xx), so the caller can try again later.
function refreshSession() {
  if (page.refreshing === null) {
    page.refreshing = (async () => {
      try {
        const response = await request("POST", "/api/auth/refresh");
        if (response.ok) {
          planRefresh((await response.json()).expires_in);
          return true;
        }
        if (response.status === 401) {
          leave(SESSION_ENDED);
          return false;
        }
        throw new Error(await errorMessage(response));
      } finally {
        page.refreshing = null;
      }
    })();
  }
  return page.refreshing;
}

function planRefresh(secondsLeft) {
  clearTimeout(page.refreshTimer);
  const delay = Math.max(1, secondsLeft * REFRESH_AT) * 1000;
  page.refreshTimer = setTimeout(refreshAhead, delay);
}

async function refreshAhead() {
  try {
    await refreshSession();
  } catch {
    page.refreshTimer = setTimeout(refreshAhead, REFRESH_RETRY_MS);
  }
}

// Seconds the token of a /api/auth/me answer has left, by the server's clock where it says.
function secondsLeft(me, response) {
  const served = Date.parse(response.headers.get("Date") || "");
  const now = Number.isNaN(served) ? Date.now() : served;
  return me.expires_at - now / 1000;
}

// ---- screens -----------------------------------------------------------------------------

function show(screen) {
  ui.loading.hidden = true;
  ui.signIn.hidden = screen !== ui.signIn;
  ui.app.hidden = screen !== ui.app;
  ui.account.hidden = screen !== ui.app;
}

function say(form, text) {
  form.querySelector(".message").textContent = text;
}

async function enter() {
  let response;
  try {
    response = await request("GET", "/api/auth/me");
  } catch {
    show(ui.signIn);
    say(ui.signIn, "Kiln cannot be reached; reload the page to try again.");
    return;
  }
  if (!response.ok) {
    show(ui.signIn);
    say(ui.signIn, response.status === 401 ? "" : await errorMessage(response));
    return;
  }
  const me = await response.json();
  planRefresh(secondsLeft(me, response));
  ui.whoami.textContent = me.username;
  say(ui.upload, "");
  clearCards();
  page.lastEventId = null;
  show(ui.app);
  openStream();
}

function leave(message) {
  clearTimeout(page.refreshTimer);
  page.refreshTimer = null;
  closeStream();
  clearCards();
  page.lastEventId = null;
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
    const response = await request("POST", "/api/auth/login", {
      username: form.elements.username.value,
      password: form.elements.password.value,
    });
    if (!response.ok) {
      say(form, await errorMessage(response));
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
    await request("POST", "/api/auth/logout");
  } catch {
    // the cookie will expire on its own; the page forgets the session either way
  }
  leave("");
}

async function onUpload(event) {
  event.preventDefault();
  const form = ui.upload;
  const files = form.elements.file.files;
  if (files.length === 0) return;
  const body = new FormData();
  for (const file of files) body.append("file", file, file.name);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  say(form, `Uploading ${plural(files.length, "file")}…`);
  try {
    const response = await call("POST", "/api/uploads", body);
    if (!response.ok) {
      say(form, await errorMessage(response));
      return;
    }
    const batch = await response.json();
    say(form, `Uploaded ${plural(batch.tasks.length, "file")}.`);
    form.reset();
  } catch {
    say(form, "The upload did not reach Kiln; try again.");
  } finally {
    button.disabled = false;
  }
}

// ---- the event stream --------------------------------------------------------------------

function openStream() {
  closeStream();
  const url = page.lastEventId === null
    ? "/api/events"
    : `/api/events?last_event_id=${encodeURIComponent(page.lastEventId)}`;
  const source = new EventSource(url);
  page.source = source;
  setConnection("connecting");
  // Events from a source this page has since replaced are ignored.
  source.addEventListener("open", () => {
    if (page.source !== source) return;
    page.reconnectDelay = 0;
    setConnection("live");
  });
  source.addEventListener("snapshot", (event) => {
    if (page.source !== source) return;
    page.lastEventId = event.lastEventId;
    applySnapshot(JSON.parse(event.data));
  });
  source.addEventListener("task", (event) => {
    if (page.source !== source) return;
    page.lastEventId = event.lastEventId;
    applyTask(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    if (page.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (401 once the token has expired, or a 5xx): EventSource gives up for good.
      scheduleResume();
    } else {
      setConnection("reconnecting"); // EventSource retries by itself with Last-Event-ID
    }
  });
}

function closeStream() {
  clearTimeout(page.reconnectTimer);
  page.reconnectTimer = null;
  if (page.source !== null) {
    page.source.close();
    page.source = null;
  }
}

function scheduleResume() {
  closeStream();
  setConnection("reconnecting");
  const delay = page.reconnectDelay;
  page.reconnectDelay = Math.min(Math.max(delay * 2, 1000), MAX_RECONNECT_DELAY_MS);
  page.reconnectTimer = setTimeout(resume, delay);
}

async function resume() {
  page.reconnectTimer = null;
  try {
    if (await refreshSession()) openStream();
  } catch {
    setConnection("offline");
    scheduleResume();
  }
}

function setConnection(state) {
  ui.connection.textContent = state;
  ui.connection.dataset.state = state;
}

// ---- task cards --------------------------------------------------------------------------

function clearCards() {
  page.cards.clear();
  ui.list.replaceChildren();
  ui.empty.hidden = false;
}

function applySnapshot(snapshot) {
  clearCards();
  for (const task of snapshot.tasks) {
    const card = createCard(task);
    ui.list.append(card.root); // the snapshot lists the newest first
  }
  ui.empty.hidden = page.cards.size > 0;
}

function applyTask(event) {
  const { type: _type, ...change } = event;
  const card = page.cards.get(change.task_id);
  if (card === undefined) {
    ui.list.prepend(createCard(change).root);
    ui.empty.hidden = true;
    return;
  }
  if (!TERMINAL.has(change.state)) {
    // running (again, after a retry): the last outcome no longer holds
    Object.assign(card.task, { result: null, artifacts: [], error: null });
  }
  Object.assign(card.task, change);
  card.parts.notice.textContent = "";
  render(card);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function createCard(task) {
  const root = element("li", "card");
  root.dataset.taskId = task.task_id;
  const parts = {
    filename: element("span", "filename"),
    kind: element("span", "kind"),
    state: element("span", "state"),
    progress: element("progress"),
    stage: element("span", "stage"),
    attempt: element("span", "attempt"),
    stats: element("p", "stats"),
    artifacts: element("div", "artifacts"),
    error: element("p", "error"),
    notice: element("p", "notice"),
    cancel: element("button", "cancel", "Cancel"),
    retry: element("button", "retry", "Retry"),
  };
  parts.progress.max = 1;
  parts.cancel.type = "button";
  parts.retry.type = "button";
  parts.cancel.addEventListener("click", () => act(card, "cancel"));
  parts.retry.addEventListener("click", () => act(card, "retry"));

  const head = element("div", "head");
  head.append(parts.filename, parts.kind, parts.state);
  const meter = element("div", "meter");
  meter.append(parts.progress, parts.stage, parts.attempt);
  const actions = element("div", "actions");
  actions.append(parts.cancel, parts.retry);
  root.append(head, meter, parts.stats, parts.artifacts, parts.error, parts.notice, actions);

  const card = { task: { ...task }, root, parts, artifactsKey: "" };
  page.cards.set(task.task_id, card);
  render(card);
  return card;
}

function render(card) {
  const { task, root, parts } = card;
  const state = task.state || "PENDING";
  root.dataset.state = state;
  root.dataset.kind = task.kind || "";
  parts.filename.textContent = task.filename || task.task_id;
  parts.filename.title = task.filename || "";
  parts.kind.textContent = task.kind || "";
  parts.state.textContent = state;
  parts.progress.value = state === "SUCCESS" ? 1 : clamp(Number(task.progress) || 0);
  parts.stage.textContent = task.stage || "";
  parts.attempt.textContent = task.attempt ? `attempt ${task.attempt}` : "";

  const stats = state === "SUCCESS" ? describe(task) : "";
  parts.stats.textContent = stats;
  parts.stats.hidden = stats === "";

  const message = TERMINAL.has(state) ? failureMessage(task.error) : "";
  parts.error.textContent = message;
  parts.error.hidden = message === "";

  renderArtifacts(card, state === "SUCCESS" ? task.artifacts || [] : []);
  parts.notice.hidden = parts.notice.textContent === "";
  parts.cancel.hidden = !ACTIVE.has(state);
  parts.retry.hidden = !RETRYABLE.has(state);
}

function describe(task) {
  const result = task.result || {};
  if (task.kind === "mesh" && result.vertices !== undefined) {
    return `${plural(result.vertices, "vertex", "vertices")} · ${plural(result.faces, "face")}`;
  }
  if (task.kind === "texture" && result.width !== undefined) {
    return `${result.width}×${result.height} px`;
  }
  return "";
}

function failureMessage(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  return error.message || error.code || "";
}

function renderArtifacts(card, artifacts) {
  // Rebuilt only when the list changes, so a thumbnail is not fetched again on every event.
  const key = JSON.stringify(artifacts.map((a) => [a.name, a.size]));
  if (key === card.artifactsKey) return;
  card.artifactsKey = key;
  const box = card.parts.artifacts;
  box.replaceChildren();
  box.hidden = artifacts.length === 0;
  for (const artifact of artifacts) {
    const href = artifact.url || artifactUrl(card.task.task_id, artifact.name);
    if (artifact.name === THUMBNAIL) {
      const image = element("img", "thumbnail");
      image.src = href;
      image.alt = `thumbnail of ${card.task.filename}`;
      box.append(image);
    }
    const link = element("a", "artifact", artifact.name);
    link.href = href;
    link.download = artifact.name;
    if (artifact.size !== undefined) link.append(element("span", "size", ` ${bytes(artifact.size)}`));
    box.append(link);
  }
}

async function act(card, action) {
  const button = card.parts[action];
  button.disabled = true;
  card.parts.notice.textContent = "";
  try {
    const response = await call(
      "POST", `/api/tasks/${encodeURIComponent(card.task.task_id)}/${action}`);
    if (!response.ok) card.parts.notice.textContent = await errorMessage(response);
  } catch {
    card.parts.notice.textContent = `The ${action} did not reach Kiln; try again.`;
  } finally {
    button.disabled = false;
    card.parts.notice.hidden = card.parts.notice.textContent === "";
  }
}

// ---- formatting --------------------------------------------------------------------------

function artifactUrl(taskId, name) {
  return `/api/tasks/${encodeURIComponent(taskId)}/artifacts/${encodeURIComponent(name)}`;
}

function clamp(fraction) {
  return Math.min(1, Math.max(0, fraction));
}

function plural(count, one, many = `${one}s`) {
  return `${Number(count).toLocaleString()} ${count === 1 ? one : many}`;
}

function bytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / (1024 * 1024)).toFixed(1)} MB`;
}

// ---- start -------------------------------------------------------------------------------

ui.signIn.addEventListener("submit", onSignIn);
ui.signOut.addEventListener("click", onSignOut);
ui.upload.addEventListener("submit", onUpload);
enter();
