// One task's card: its DOM and the render of its state, progress, elapsed time and outcome.

import {
  artifactUrl, bytes, clamp, duration, element, plural, progressBar, setText,
} from "./format.js";
import { LABEL, QUEUED, RETRYABLE, RUNNING, TERMINAL } from "./states.js";
import { statRows, statsTable } from "./stats.js";
import { attachTurntable } from "./turntable.js";

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

export class Card {
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
    ({ bar: this.bar, fill: this.fill } = progressBar("bar"));
    const line = element("div", "line");
    this.stage = element("span", "stage");
    this.queue = element("span", "queue");
    this.elapsed = element("span", "elapsed");
    this.elapsed.title = "elapsed";
    line.append(this.stage, this.queue, this.elapsed);
    this.error = element("p", "error");
    this.noticeLine = element("p", "notice");
    this.missing = element("p", "missing");
    this.missing.hidden = true;
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
    body.append(head, meta, this.bar, line, this.error, this.noticeLine, this.missing,
      this.details, this.links, actions);
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

    // while it runs, what the task has so far: its statistics and thumbnail
    const partial = RUNNING.has(state) && (task.artifacts || []).length > 0;
    this.renderOutcome(state === "SUCCESS", partial);
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

  /**
   * Preview, statistics and links, rebuilt only when the outcome changes (not per event);
   * `partial`: a running task's result so far, shown the same way.
   */
  renderOutcome(success, partial = false) {
    const task = this.task;
    const shown = success || partial;
    const artifacts = shown ? task.artifacts || [] : [];
    const key = shown
      ? JSON.stringify([success, task.attempt, artifacts.map((a) => [a.name, a.size]),
        task.result])
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

    // textures the model names but the upload lacked: on the card's face, not only in details
    const missing = shown && task.result && Array.isArray(task.result.missing_textures)
      ? task.result.missing_textures : [];
    setText(this.missing, missing.length === 0 ? "" : `⚠ ${plural(missing.length,
      "missing texture")}: ${missing.join(", ")}`);
    this.missing.hidden = missing.length === 0;
    this.missing.title = missing.length ? "upload these files with the model to see them" : "";

    this.details.replaceChildren(this.summaryLine);
    const table = shown ? statsTable(task.kind, task.result) : null;
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
