// Uploads: a drop zone (files or whole folders), a file and a folder input. One drop is one
// request, so an OBJ travels with its MTL and textures (the server groups files per request). Each
// file shows its own byte progress: the request's loaded bytes are split over the files in the
// order they are sent. A refused file is marked with the server's message and the rest of the drop
// is sent again without it (the server refuses a whole request for one file).

import { bytes, clamp, element, plural, progressBar, setText } from "./format.js";
import { errorBody } from "./session.js";

const KEEP_UPLOADS = 8; // finished drops kept in the list
const FORGET_SENT_MS = 4000; // a drop that went through leaves the list after this
const JUNK = /^(\.|thumbs\.db$|desktop\.ini$|__macosx$)/i; // not assets: skipped in folders

/** Every file of a drop, directories walked; call synchronously from the drop event. */
export function filesOfDrop(dataTransfer) {
  const pending = [];
  const plain = [];
  for (const item of [...(dataTransfer.items || [])]) {
    if (item.kind !== "file") continue;
    const entry = typeof item.webkitGetAsEntry === "function" ? item.webkitGetAsEntry() : null;
    if (entry && entry.isDirectory) pending.push(walk(entry, `${entry.name}/`));
    else {
      const file = item.getAsFile();
      if (file) plain.push({ file, path: file.name });
    }
  }
  if (pending.length === 0 && plain.length === 0) {
    for (const file of dataTransfer.files || []) plain.push({ file, path: file.name });
  }
  return Promise.all(pending).then((walked) => [...plain, ...walked.flat()]);
}

async function walk(directory, prefix) {
  const reader = directory.createReader();
  const found = [];
  for (;;) {
    // readEntries answers in chunks (100 in Chromium) until it answers none
    const entries = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (entries.length === 0) break;
    for (const entry of entries) {
      if (JUNK.test(entry.name)) continue;
      if (entry.isDirectory) found.push(...await walk(entry, `${prefix}${entry.name}/`));
      else {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        found.push({ file, path: `${prefix}${entry.name}` });
      }
    }
  }
  return found;
}

/** Files chosen with an <input type=file> (webkitRelativePath set for a folder). */
export function filesOfInput(input) {
  return [...input.files]
    .filter((file) => !(file.webkitRelativePath || "").split("/").some((part) => JUNK.test(part)))
    .map((file) => ({ file, path: file.webkitRelativePath || file.name }));
}

export class Uploader {
  /** `session`: for the 401 refresh; `onAccepted(batch)` once a request is taken. */
  constructor({ list, session, onAccepted, announce }) {
    Object.assign(this, { list, session, onAccepted, announce });
    this.drops = []; // the drops shown, oldest first
  }

  add(chosen) {
    if (chosen.length === 0) return;
    const drop = new Drop(chosen);
    this.drops.push(drop);
    this.list.prepend(drop.root);
    this.trim();
    drop.dismiss.addEventListener("click", () => this.forget(drop));
    this.announce(`Uploading ${plural(chosen.length, "file")}`);
    this.send(drop);
  }

  trim() {
    const finished = this.drops.filter((d) => d.finished);
    while (this.drops.length > KEEP_UPLOADS && finished.length > 0) this.forget(finished.shift());
  }

  forget(drop) {
    clearTimeout(drop.forgetTimer);
    drop.root.remove();
    this.drops = this.drops.filter((d) => d !== drop);
  }

  async send(drop, refreshed = false) {
    const files = drop.files.filter((f) => f.state === "waiting" || f.state === "sending");
    if (files.length === 0) {
      drop.finish("Nothing left to upload.");
      return;
    }
    drop.attempts += 1;
    drop.setSending(files);
    let answer;
    try {
      answer = await post(files, (loaded, total) => drop.progress(files, loaded, total));
    } catch {
      drop.fail("The upload did not reach Kiln: check the connection and try again.", files);
      return;
    }
    const { status, body } = answer;
    if (status === 202) {
      drop.accepted(files, body);
      this.announce(`Uploaded ${plural(files.length, "file")}`);
      this.onAccepted(body);
      drop.forgetTimer = setTimeout(() => {
        if (!drop.files.some((f) => f.state === "refused")) this.forget(drop);
      }, FORGET_SENT_MS);
      this.trim();
      return;
    }
    if (status === 401 && !refreshed) {
      let ok = null;
      try {
        ok = await this.session.refresh();
      } catch {
        // the server cannot say: shown as a failed upload below
      }
      if (ok === true) {
        this.send(drop, true);
        return;
      }
      if (ok === false) {
        this.session.expired();
        return;
      }
    }
    const error = body && typeof body.message === "string" ? body
      : { error: `http_${status}`, message: `The server answered ${status}` };
    const refused = whichFile(files, error.file);
    if (refused === null) {
      // the server did not say which file: the whole request is refused with its message
      for (const file of files) file.refuse(error.message);
      drop.finish(error.message);
      this.announce(`Upload refused: ${error.message}`);
      return;
    }
    refused.refuse(error.message);
    this.announce(`${refused.file.name} refused: ${error.message}`);
    if (drop.attempts < drop.files.length && files.length > 1) this.send(drop);
    else drop.finish(null);
  }
}

/** The file of this request the refusal names (by its client name), or null. */
function whichFile(files, name) {
  if (files.length === 1) return files[0];
  if (typeof name !== "string" || name === "") return null;
  const base = name.split(/[\\/]/).pop();
  return files.find((f) => f.file.name === name) || files.find((f) => f.file.name === base)
    || files.find((f) => f.path === name) || null;
}

/** One request: resolves {status, body} for any answer, rejects when none came. */
function post(files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("file", f.file, f.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/uploads");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "text";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status alone says what happened
      }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => reject(new Error("network")));
    xhr.addEventListener("abort", () => reject(new Error("aborted")));
    xhr.send(form);
  });
}

class UploadFile {
  constructor({ file, path }) {
    this.file = file;
    this.path = path;
    this.state = "waiting"; // sending, sent, refused, failed
    this.root = element("li", "upload-file");
    this.root.dataset.state = this.state;
    this.name = element("span", "name", path);
    this.name.title = path;
    this.size = element("span", "size", bytes(file.size));
    ({ bar: this.bar, fill: this.fill } = progressBar("bar", `upload of ${file.name}`));
    this.status = element("span", "status", "waiting");
    this.message = element("p", "message");
    this.message.hidden = true;
    this.root.append(this.name, this.size, this.bar, this.status, this.message);
    this.setFraction(0);
  }

  setFraction(fraction) {
    const value = clamp(fraction);
    this.fraction = value;
    this.fill.style.transform = `scaleX(${value})`;
    this.bar.setAttribute("aria-valuenow", String(Math.round(value * 100)));
    this.root.dataset.progress = value.toFixed(3);
  }

  setState(state, status) {
    this.state = state;
    this.root.dataset.state = state;
    setText(this.status, status);
  }

  refuse(message) {
    this.setState("refused", "refused");
    this.message.textContent = message;
    this.message.hidden = false;
  }
}

class Drop {
  constructor(chosen) {
    this.files = chosen.map((c) => new UploadFile(c));
    this.attempts = 0;
    this.finished = false;
    this.forgetTimer = null;
    this.total = this.files.reduce((sum, f) => sum + f.file.size, 0);
    this.root = element("li", "upload");
    this.root.dataset.state = "sending";
    const head = element("div", "upload-head");
    this.title = element("span", "title", `${plural(this.files.length, "file")} · ${bytes(this.total)}`);
    this.summary = element("span", "summary", "waiting");
    this.dismiss = element("button", "dismiss ghost", "×");
    this.dismiss.type = "button";
    this.dismiss.setAttribute("aria-label", "dismiss this upload");
    head.append(this.title, this.summary, this.dismiss);
    this.message = element("p", "message");
    this.message.setAttribute("role", "alert");
    this.message.hidden = true;
    this.list = element("ul", "upload-files");
    this.list.append(...this.files.map((f) => f.root));
    this.root.append(head, this.message, this.list);
  }

  setSending(files) {
    this.root.dataset.state = "sending";
    for (const f of files) {
      f.setState("sending", "0%");
      f.setFraction(0);
    }
    setText(this.summary, `sending ${plural(files.length, "file")}`);
  }

  progress(files, loaded, total) {
    // the multipart framing is a small part of `total`: scale it out, then fill files in order
    const payload = files.reduce((sum, f) => sum + f.file.size, 0);
    let left = total > 0 ? loaded * (payload / total) : 0;
    for (const f of files) {
      const share = f.file.size === 0 ? (loaded >= total ? 1 : 0)
        : Math.min(left, f.file.size) / f.file.size;
      left = Math.max(0, left - f.file.size);
      f.setFraction(share);
      setText(f.status, share >= 1 ? "sent, waiting for the server" : `${Math.floor(share * 100)}%`);
    }
    const percent = total > 0 ? Math.floor((loaded / total) * 100) : 0;
    setText(this.summary, `sending · ${percent}%`);
  }

  accepted(files, batch) {
    const taskOf = new Map();
    for (const task of batch.tasks || []) {
      for (const name of task.files || [task.filename]) taskOf.set(name.toLowerCase(), task);
    }
    for (const f of files) {
      f.setFraction(1);
      const task = taskOf.get(f.file.name.toLowerCase());
      const status = task && task.filename !== f.file.name ? `sent · with ${task.filename}` : "sent";
      f.setState("sent", status);
    }
    this.finish(null);
  }

  fail(message, files) {
    for (const f of files) f.setState("failed", "not sent");
    this.finish(message);
  }

  finish(message) {
    this.finished = true;
    const refused = this.files.filter((f) => f.state === "refused").length;
    const sent = this.files.filter((f) => f.state === "sent").length;
    this.root.dataset.state = refused || message ? "refused" : "sent";
    const parts = [`${sent} of ${this.files.length} sent`];
    if (refused) parts.push(`${refused} refused`);
    setText(this.summary, parts.join(", "));
    if (message) {
      this.message.textContent = message;
      this.message.hidden = false;
    }
  }
}
