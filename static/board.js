// The tasks on the page: one card per task, grouped by batch (one upload request), newest batch
// first. The board holds at most `limit` cards (finished ones are evicted first, oldest first) so
// a page left open for days does not grow; "Show older" raises the limit and pages older tasks in.

import {
  artifactUrl, bytes, clamp, clockTime, duration, element, plural, setText,
} from "./format.js";
import { statRows, statsTable } from "./stats.js";
import { attachTurntable } from "./turntable.js";

export const QUEUED = new Set(["PENDING", "RETRY"]);
const RUNNING = new Set(["STARTED", "PROGRESS"]);
const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
const RETRYABLE = new Set(["FAILURE", "REVOKED"]);
const LABEL = {
  PENDING: "queued", RETRY: "queued again", STARTED: "starting", PROGRESS: "running",
  SUCCESS: "done", FAILURE: "failed", REVOKED: "cancelled",
};
export const MAX_CARDS = 100;
const MAX_EVICTED = 1000; // evicted ids remembered, so their late events do not bring them back
const SHOWN_LINKS = 4; // artifact links shown before "N more files"

// The stages each pipeline goes through, in order: a stage's own fraction becomes the whole
// task's progress. A stage not listed here (a stand-in pipeline) shows its own fraction.
const PLANS = {
  mesh: ["load", "analyse", "thumbnail", "web_model", "lods", "turntable"],
  texture: ["open", "analyse", "thumbnail", "mips"],
  "material/sbsar": ["inspect", "extract", "parse", "thumbnail"],
  "material/sbs": ["inspect", "parse"],
  material: ["unpack", "open", "analyse", "preview"],
};

function overallProgress(task) {
  if (task.state === "SUCCESS") return 1;
  if (!RUNNING.has(task.state)) return TERMINAL.has(task.state) ? clamp(task.progress) : 0;
  const plan = PLANS[`${task.kind}/${task.format}`] || PLANS[task.kind] || [];
  const index = plan.indexOf(task.stage);
  const fraction = clamp(task.progress);
  if (index < 0) return task.stage === "starting" ? 0 : fraction;
  return (index + fraction) / plan.length;
}

export class Board {
  /**
   * `root`: where batch sections go; `onAction(task, action)`: cancel or retry pressed;
   * `now()`: seconds by the server's clock; `announce(text)`: for the live region;
   * `onChange()`: after cards were added or removed.
   */
  constructor({ root, onAction, now, announce, onChange }) {
    Object.assign(this, { root, onAction, now, announce, onChange });
    this.cards = new Map(); // task_id -> Card
    this.batches = new Map(); // batch_id -> Batch
    this.limit = MAX_CARDS;
    this.known = 0; // tasks the server has for this session, as far as the page knows
    // the session's newest tasks (the listing's offset, newest first) all on the page: where
    // Show older goes on from; eviction leaves gaps, so it starts over from 0 after one
    this.covered = 0;
    this.extra = new Map(); // task_id -> {format, size} from upload answers, until its card comes
    this.queue = {}; // task_id -> position, from GET /api/queue
    this.queued = null; // jobs waiting in all, from GET /api/queue
    this.evicted = new Set(); // ids of the newest evicted tasks, at most MAX_EVICTED
    this.fetching = new Map(); // id being read whole (GET /api/tasks/{id}) -> its latest event
    this.paging = null; // while older tasks are read: task_id -> its latest event meanwhile
  }

  get size() {
    return this.cards.size;
  }

  /** Tasks the page knows exist but does not show. */
  get hidden() {
    return Math.max(0, this.known - this.cards.size);
  }

  hasQueued() {
    for (const card of this.cards.values()) if (QUEUED.has(card.task.state)) return true;
    return false;
  }

  clear() {
    this.cards.clear();
    this.batches.clear();
    this.extra.clear();
    this.evicted.clear();
    this.fetching = new Map(); // reads still in flight belong to the board before this one
    this.paging = null;
    this.queue = {};
    this.known = 0;
    this.covered = 0;
    this.limit = MAX_CARDS;
    this.root.replaceChildren();
    this.onChange();
  }

  /** The server's state, replacing the page's: no card missing, none stale, none twice. */
  applySnapshot(tasks) {
    const shown = tasks.slice(0, this.limit); // newest first
    const ids = new Set(shown.map((t) => t.task_id));
    for (const [id, card] of this.cards) {
      if (!ids.has(id) && !card.older) this.remove(card);
    }
    for (const task of shown) this.upsert(task, false);
    // a batch counts all its tasks the snapshot lists, on the page or not
    const states = new Map();
    for (const task of tasks) {
      const id = task.batch_id || "unbatched";
      if (!states.has(id)) states.set(id, new Map());
      states.get(id).set(task.task_id, task.state);
    }
    for (const batch of this.batches.values()) batch.recount(states.get(batch.id));
    this.known = Math.max(tasks.length, this.cards.size);
    this.covered = shown.length;
    this.evict();
    this.onChange();
  }

  /** One event of the stream. `fetchTask(id)` fills in a task first seen mid-life. */
  async applyEvent(event, fetchTask) {
    const card = this.cards.get(event.task_id);
    if (card !== undefined) {
      this.applyToCard(card, event);
      return;
    }
    const id = event.task_id;
    // the batch counts its evicted tasks too
    const batch = this.batches.get(event.batch_id || "unbatched");
    if (batch !== undefined && batch.states.has(id)) batch.note(id, event.state);
    // a page of older tasks being read may hold this task: its copy may be older than this event
    if (this.paging !== null) this.paging.set(id, event);
    // an evicted task stays away until it is queued again (a retry from another tab)
    if (this.evicted.has(id) && !QUEUED.has(event.state)) return;
    const evicted = this.evicted.delete(id); // then it was counted already
    if (event.state !== "PENDING") {
      // first seen mid-life (evicted earlier, or retried elsewhere): read it whole, once, and
      // keep the latest event that comes meanwhile, which may be newer than what was read
      if (this.fetching.has(id)) {
        this.fetching.set(id, event);
        return;
      }
      const fetching = this.fetching;
      fetching.set(id, null);
      let task;
      let later;
      try {
        task = await fetchTask(id);
      } finally {
        later = fetching.get(id);
        fetching.delete(id);
      }
      if (fetching !== this.fetching) return; // the board was cleared (signed out) meanwhile
      if (task !== null && !this.cards.has(task.task_id)) {
        // counted when it was first seen (its first event, a snapshot or a listing)
        const added = this.upsert(task, false);
        this.known = Math.max(this.known, this.cards.size);
        this.catchUp(added, later);
        this.evict();
        this.onChange();
      } else if (task === null && later) {
        this.applyEvent(later, fetchTask); // the read failed: the latest event tries once more
      }
      return;
    }
    const { type: _type, ts, ...change } = event;
    this.upsert({ ...change, created: ts }, false);
    if (!evicted) {
      this.known += 1;
      this.covered += 1; // the newest task, on the page
    }
    this.evict();
    this.onChange();
  }

  /** An event that came while `card`'s task was being read: applied unless the copy is newer. */
  catchUp(card, event) {
    if (!event || this.cards.get(event.task_id) !== card) return;
    const updated = Number(card.task.updated);
    // `ts` is the event's time rounded to the millisecond, `updated` the same time unrounded
    if (Number.isFinite(updated) && event.ts < updated - 0.0005) return;
    this.applyToCard(card, event);
  }

  applyToCard(card, event) {
    const { type: _type, ts, ...change } = event;
    const task = card.task;
    const previous = task.state;
    const previousAttempt = task.attempt;
    if (change.state === "STARTED") {
      Object.assign(task, { started: ts, finished: null });
    } else if (QUEUED.has(change.state)) {
      // a new attempt: the last outcome no longer holds
      Object.assign(task, { started: null, finished: null, result: null, artifacts: [],
        error: null });
    }
    if (TERMINAL.has(change.state)) task.finished = ts;
    if (!TERMINAL.has(change.state)) Object.assign(task, { error: null });
    Object.assign(task, change);
    if (change.state === "SUCCESS") {
      task.artifacts = (change.artifacts || []).map((a) => ({
        ...a, url: a.url || artifactUrl(task.task_id, a.name),
      }));
    }
    if (QUEUED.has(change.state) || change.state === "STARTED") card.overall = 0;
    // a Cancel or Retry refusal stays until the task moves on, not until its next progress step
    if (previous !== task.state || previousAttempt !== task.attempt) card.notice = "";
    card.render(this.now(), this.queue[task.task_id]);
    card.batch.update();
    if (previous !== task.state && TERMINAL.has(task.state)) {
      this.announce(`${task.filename}: ${LABEL[task.state]}`);
    }
  }

  /** Show older begins: from now on the latest event of each task not on the page is kept. */
  beginPaging() {
    this.paging = new Map();
  }

  endPaging() {
    this.paging = null;
  }

  /**
   * Older tasks from GET /api/tasks at `offset`, below the others; the limit grows by what they
   * add. Returns how many were added.
   */
  addOlder(tasks, total, offset) {
    let added = 0;
    for (const task of tasks) {
      if (this.cards.has(task.task_id)) continue;
      this.evicted.delete(task.task_id);
      const card = this.upsert(task, true);
      // an event that came while the page was read may be newer than its copy
      if (this.paging !== null) this.catchUp(card, this.paging.get(task.task_id));
      added += 1;
    }
    if (offset <= this.covered) this.covered = Math.max(this.covered, offset + tasks.length);
    this.limit += added;
    this.known = Math.max(total, this.cards.size);
    this.onChange();
    return added;
  }

  /** format and size of tasks an upload created (events do not carry them). */
  noteUpload(batch) {
    for (const task of batch.tasks || []) {
      const card = this.cards.get(task.task_id);
      if (card !== undefined) {
        Object.assign(card.task, { format: task.format, size: task.size });
        card.render(this.now(), this.queue[task.task_id]);
      } else {
        this.extra.set(task.task_id, { format: task.format, size: task.size });
        while (this.extra.size > MAX_CARDS) this.extra.delete(this.extra.keys().next().value);
      }
    }
  }

  setQueue(positions, queued) {
    this.queue = positions || {};
    this.queued = Number.isInteger(queued) ? queued : null;
    for (const card of this.cards.values()) {
      if (QUEUED.has(card.task.state)) card.renderQueue(this.queue[card.task.task_id]);
    }
  }

  /** Once a second: elapsed times of the cards still running or waiting. */
  tick() {
    const now = this.now();
    for (const card of this.cards.values()) {
      if (!TERMINAL.has(card.task.state)) card.renderElapsed(now);
    }
  }

  setNotice(taskId, text) {
    const card = this.cards.get(taskId);
    if (card === undefined) return;
    card.notice = text;
    card.render(this.now(), this.queue[taskId]);
  }

  upsert(task, older) {
    if (Number.isInteger(task.queue_position)) this.queue[task.task_id] = task.queue_position;
    let card = this.cards.get(task.task_id);
    if (card === undefined) {
      const extra = this.extra.get(task.task_id);
      this.extra.delete(task.task_id);
      card = new Card({ ...extra, ...task }, (action) => this.onAction(card.task, action));
      card.older = older;
      card.board = this;
      this.cards.set(task.task_id, card);
      this.batchOf(card.task).add(card);
    } else {
      Object.assign(card.task, task);
      card.overall = 0;
    }
    card.render(this.now(), this.queue[task.task_id]);
    card.batch.update();
    return card;
  }

  batchOf(task) {
    const id = task.batch_id || "unbatched";
    let batch = this.batches.get(id);
    if (batch === undefined) {
      batch = new Batch(id, Number(task.created) || this.now());
      this.batches.set(id, batch);
      // newest batch first
      const after = [...this.root.children].find(
        (node) => node.kiln && node.kiln.created < batch.created);
      this.root.insertBefore(batch.root, after || null);
    }
    return batch;
  }

  /** `evicted`: the task still exists, and its batch goes on counting it. */
  remove(card, evicted = false) {
    this.cards.delete(card.task.task_id);
    const batch = card.batch;
    batch.delete(card, evicted);
    if (batch.cards.size === 0) {
      batch.root.remove();
      this.batches.delete(batch.id);
    } else {
      batch.update();
    }
  }

  /** Down to the limit: finished cards first, the oldest first; then the oldest of any state. */
  evict() {
    while (this.cards.size > this.limit) {
      let victim = null;
      for (const card of this.cards.values()) {
        const finished = TERMINAL.has(card.task.state);
        const better = victim === null
          || (finished && !TERMINAL.has(victim.task.state))
          || (finished === TERMINAL.has(victim.task.state) && card.created < victim.created);
        if (better) victim = card;
      }
      this.remove(victim, true);
      this.covered = 0;
      this.evicted.add(victim.task.task_id);
      if (this.evicted.size > MAX_EVICTED) this.evicted.delete(this.evicted.values().next().value);
    }
  }
}

class Batch {
  constructor(id, created) {
    this.id = id;
    this.created = created;
    this.cards = new Set();
    // task_id -> state of every task of the batch, evicted ones too (the counts are of all)
    this.states = new Map();
    this.root = element("section", "batch");
    this.root.kiln = this;
    this.root.dataset.batchId = id;
    const head = element("header", "batch-head");
    this.title = element("h2", "batch-title");
    this.summary = element("span", "batch-summary");
    this.detail = element("span", "batch-detail");
    this.bar = element("div", "bar batch-bar");
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.fill = element("div", "fill");
    this.bar.append(this.fill);
    head.append(this.title, this.summary, this.detail, this.bar);
    this.list = element("ol", "cards");
    this.root.append(head, this.list);
    this.root.setAttribute("aria-label", "upload");
  }

  add(card) {
    card.batch = this;
    this.cards.add(card);
    this.states.set(card.task.task_id, card.task.state);
    this.created = Math.min(this.created, card.created);
    // upload order within a batch
    const after = [...this.list.children].find((node) => node.kiln && node.kiln.created > card.created);
    this.list.insertBefore(card.root, after || null);
  }

  delete(card, evicted) {
    this.cards.delete(card);
    if (!evicted) this.states.delete(card.task.task_id);
    card.root.remove();
  }

  /** The state of a task of this batch that is not on the page (evicted). */
  note(taskId, state) {
    this.states.set(taskId, state);
    this.update();
  }

  /** The batch's tasks as a snapshot lists them (`states`: task_id -> state), and its cards. */
  recount(states) {
    this.states = new Map(states);
    for (const card of this.cards) this.states.set(card.task.task_id, card.task.state);
    this.update();
  }

  update() {
    const counts = { SUCCESS: 0, FAILURE: 0, REVOKED: 0, running: 0, queued: 0 };
    let progress = 0;
    const names = [];
    const shown = new Map();
    for (const card of this.cards) {
      shown.set(card.task.task_id, card);
      this.states.set(card.task.task_id, card.task.state);
      if (names.length < 3) names.push(card.task.filename);
    }
    for (const [id, state] of this.states) {
      if (state in counts) counts[state] += 1;
      else if (QUEUED.has(state)) counts.queued += 1;
      else counts.running += 1;
      const card = shown.get(id);
      progress += TERMINAL.has(state) ? 1 : card ? card.overall : 0;
    }
    const total = this.states.size;
    const parts = [`${counts.SUCCESS} of ${total} done`];
    if (counts.FAILURE) parts.push(`${counts.FAILURE} failed`);
    if (counts.REVOKED) parts.push(`${counts.REVOKED} cancelled`);
    setText(this.summary, parts.join(", "));
    const busy = [];
    if (counts.running) busy.push(`${counts.running} running`);
    if (counts.queued) busy.push(`${counts.queued} queued`);
    setText(this.detail, busy.join(" · "));
    const more = total > names.length ? ` and ${total - names.length} more` : "";
    setText(this.title, `${clockTime(this.created)} · ${names.join(", ")}${more}`);
    const fraction = total ? progress / total : 0;
    this.fill.style.transform = `scaleX(${fraction})`;
    this.bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    this.bar.setAttribute("aria-label", `progress of the upload: ${this.summary.textContent}`);
    this.root.dataset.state = counts.running || counts.queued ? "busy"
      : counts.FAILURE ? "failed" : "done";
  }
}

class Card {
  constructor(task, act) {
    this.task = { artifacts: [], ...task };
    this.created = Number(task.created) || 0;
    this.overall = 0; // never moves back within an attempt
    this.notice = "";
    this.outcomeKey = null; // what the preview, stats and links were last built from
    this.batch = null;
    this.older = false;

    const root = element("li", "card");
    root.kiln = this;
    root.dataset.taskId = task.task_id;
    this.root = root;
    this.preview = element("div", "preview");
    const body = element("div", "body");
    const head = element("div", "head");
    this.filename = element("h3", "filename");
    this.state = element("span", "state");
    head.append(this.filename, this.state);
    const meta = element("div", "meta");
    this.kind = element("span", "kind");
    this.size = element("span", "size");
    this.attempt = element("span", "attempt");
    meta.append(this.kind, this.size, this.attempt);
    this.bar = element("div", "bar");
    this.bar.setAttribute("role", "progressbar");
    this.bar.setAttribute("aria-valuemin", "0");
    this.bar.setAttribute("aria-valuemax", "100");
    this.fill = element("div", "fill");
    this.bar.append(this.fill);
    const line = element("div", "line");
    this.stage = element("span", "stage");
    this.queue = element("span", "queue");
    this.elapsed = element("span", "elapsed");
    this.elapsed.title = "elapsed";
    line.append(this.stage, this.queue, this.elapsed);
    this.error = element("p", "error");
    this.noticeLine = element("p", "notice");
    this.details = element("details", "details");
    this.details.hidden = true;
    this.summaryLine = element("summary", "summary");
    this.details.append(this.summaryLine);
    this.links = element("ul", "artifacts");
    this.links.hidden = true;
    const actions = element("div", "actions");
    this.cancel = element("button", "cancel", "Cancel");
    this.retry = element("button", "retry", "Retry");
    for (const [button, action] of [[this.cancel, "cancel"], [this.retry, "retry"]]) {
      button.type = "button";
      button.addEventListener("click", () => act(action));
    }
    actions.append(this.cancel, this.retry);
    body.append(head, meta, this.bar, line, this.error, this.noticeLine, this.details, this.links,
      actions);
    root.append(this.preview, body);
  }

  render(now, position) {
    const task = this.task;
    const state = task.state || "PENDING";
    this.root.dataset.state = state;
    this.root.dataset.kind = task.kind || "";
    const name = task.filename || task.task_id;
    setText(this.filename, name);
    this.filename.title = name;
    setText(this.state, LABEL[state] || state.toLowerCase());
    this.cancel.setAttribute("aria-label", `cancel ${name}`);
    this.retry.setAttribute("aria-label", `retry ${name}`);
    setText(this.kind, [task.kind, task.format && String(task.format).toUpperCase()]
      .filter(Boolean).join(" · "));
    setText(this.size, task.size ? bytes(task.size) : "");
    setText(this.attempt, task.attempt > 1 ? `attempt ${task.attempt}` : "");

    this.overall = Math.max(this.overall, overallProgress(task));
    const fraction = this.overall;
    this.fill.style.transform = `scaleX(${fraction})`;
    this.bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    this.bar.setAttribute("aria-label", `progress of ${name}`);
    this.root.dataset.progress = fraction.toFixed(3);
    const stage = RUNNING.has(state) && task.stage && task.stage !== "starting"
      ? `${task.stage.replace(/_/g, " ")} · ${Math.floor(clamp(task.progress) * 100)}%`
      : RUNNING.has(state) ? "starting" : "";
    setText(this.stage, stage);
    this.renderQueue(position);
    this.renderElapsed(now);

    const error = TERMINAL.has(state) && state !== "SUCCESS" ? task.error : null;
    const message = state === "REVOKED" ? "Cancelled." : failureMessage(error);
    setText(this.error, message);
    this.error.hidden = message === "";
    if (state === "FAILURE") this.error.setAttribute("role", "alert");
    setText(this.noticeLine, this.notice);
    this.noticeLine.hidden = this.notice === "";

    this.renderOutcome(state === "SUCCESS");
    this.cancel.hidden = TERMINAL.has(state);
    this.retry.hidden = !RETRYABLE.has(state);
  }

  renderQueue(position) {
    const queued = QUEUED.has(this.task.state);
    const of = this.board && this.board.queued ? ` of ${this.board.queued}` : "";
    const text = !queued ? "" : Number.isInteger(position) ? `#${position}${of} in queue`
      : "waiting";
    setText(this.queue, text);
    if (queued && Number.isInteger(position)) this.root.dataset.queuePosition = String(position);
    else delete this.root.dataset.queuePosition;
  }

  renderElapsed(now) {
    const { started, finished, created, state } = this.task;
    let text = "";
    if (started && finished) text = duration(finished - started, true);
    else if (started && !TERMINAL.has(state)) text = duration(now - started);
    else if (QUEUED.has(state) && created) text = `waiting ${duration(now - created)}`;
    setText(this.elapsed, text);
  }

  /** Preview, statistics and links, rebuilt only when the outcome changes (not per event). */
  renderOutcome(success) {
    const task = this.task;
    const artifacts = success ? task.artifacts || [] : [];
    const key = success ? JSON.stringify([task.attempt, artifacts.map((a) => [a.name, a.size])])
      : `${task.state} ${task.format || ""}`;
    if (key === this.outcomeKey) return;
    this.outcomeKey = key;
    // a fresh node: the last outcome's turntable listeners and attributes go with the old one
    const preview = element("div", "preview");
    this.preview.replaceWith(preview);
    this.preview = preview;
    const byName = new Map(artifacts.map((a) => [a.name, a]));
    const picture = byName.get("thumbnail.png") || byName.get("preview.png");
    if (picture) {
      const image = element("img", "thumbnail");
      image.src = picture.url || artifactUrl(task.task_id, picture.name);
      image.alt = `${picture.name === "preview.png" ? "preview" : "thumbnail"} of ${task.filename}`;
      image.decoding = "async";
      this.preview.append(image);
    } else {
      const glyph = element("span", "glyph", (task.format || task.kind || "").toUpperCase());
      glyph.setAttribute("aria-hidden", "true");
      this.preview.append(glyph);
    }
    const layout = task.result && task.result.turntable;
    const sprite = byName.get("turntable.png");
    if (sprite && layout) {
      attachTurntable(this.preview, sprite.url || artifactUrl(task.task_id, sprite.name), layout,
        task.filename);
    }

    this.details.replaceChildren(this.summaryLine);
    const table = success ? statsTable(task.kind, task.result) : null;
    this.details.hidden = table === null;
    if (table !== null) {
      this.details.append(table);
      setText(this.summaryLine, headline(task));
    }
    this.links.replaceChildren();
    this.links.hidden = artifacts.length === 0;
    // the first few links in view, the rest (a texture's mip chain) folded away
    let target = this.links;
    artifacts.forEach((artifact, index) => {
      if (index === SHOWN_LINKS && artifacts.length > SHOWN_LINKS + 1) {
        const more = element("details", "more");
        more.append(element("summary", "", `${artifacts.length - SHOWN_LINKS} more files`));
        target = element("ul");
        more.append(target);
        const holder = element("li", "more-holder");
        holder.append(more);
        this.links.append(holder);
      }
      const item = element("li");
      const link = element("a", "artifact", artifact.name);
      link.href = artifact.url || artifactUrl(task.task_id, artifact.name);
      link.download = artifact.name;
      item.append(link);
      if (artifact.size !== undefined) item.append(element("span", "size", bytes(artifact.size)));
      target.append(item);
    });
  }
}

/** The one line shown above the folded statistics table. */
function headline(task) {
  const r = task.result || {};
  if (r.vertices !== undefined && r.faces !== undefined) {
    return `${plural(r.vertices, "vertex", "vertices")} · ${plural(r.faces, "face")}`;
  }
  if (r.width !== undefined && r.height !== undefined) {
    return `${r.width}×${r.height} px${r.mode ? ` · ${r.mode}` : ""}`;
  }
  const rows = statRows(task.kind, r);
  return rows.length ? `${rows[0].label}: ${rows[0].value}` : "Statistics";
}

function failureMessage(error) {
  if (!error) return "";
  if (typeof error === "string") return error;
  const message = error.message || "";
  return error.code ? `${message}${message ? " " : ""}(${error.code})` : message;
}
