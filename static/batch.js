// One batch (one upload) on the page: its section, its header and the counts of all its tasks.

import { clockTime, element, progressBar, setText } from "./format.js";
import { QUEUED, TERMINAL } from "./states.js";

export class Batch {
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
    ({ bar: this.bar, fill: this.fill } = progressBar("bar batch-bar"));
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
