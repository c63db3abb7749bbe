// The tasks on the page: one card per task, grouped by batch (one upload request), newest batch
// first. The board holds at most `limit` cards (finished ones are evicted first, oldest first) so
// a page left open for days does not grow; "Show older" raises the limit and pages older tasks in.

import { artifactUrl } from "./format.js";
import { Batch } from "./batch.js";
import { Card } from "./card.js";
import { LABEL, QUEUED, TERMINAL } from "./states.js";

export { QUEUED } from "./states.js";
export const MAX_CARDS = 100;
const MAX_EVICTED = 1000; // evicted ids remembered, so their late events do not bring them back

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
      // a new run: what an earlier run of this attempt showed is gone with it
      Object.assign(task, { started: ts, finished: null, result: null, artifacts: [] });
    } else if (QUEUED.has(change.state)) {
      // a new attempt: the last outcome no longer holds
      Object.assign(task, { started: null, finished: null, result: null, artifacts: [],
        error: null });
    }
    if (TERMINAL.has(change.state)) task.finished = ts;
    if (!TERMINAL.has(change.state)) Object.assign(task, { error: null });
    Object.assign(task, change);
    // the outcome, or while it runs what it has so far (its statistics, a thumbnail)
    if (change.state === "SUCCESS" || Array.isArray(change.artifacts)) {
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

  /** A `deleted` event: the task is gone for good. */
  applyDeleted(event) {
    const card = this.cards.get(event.task_id);
    this.evicted.delete(event.task_id);
    if (!card) return;
    this.remove(card);
    this.onChange();
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
