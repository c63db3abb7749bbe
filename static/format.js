// Small formatting and DOM helpers shared by the page's modules. Nothing here touches the network.

/** A new element; text (from the server or the user) is always set as textContent, never HTML. */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** A progress bar (0..100) and its fill, for the caller to size with `fill.style.width`. */
export function progressBar(className, label) {
  const bar = element("div", className);
  bar.setAttribute("role", "progressbar");
  if (label) bar.setAttribute("aria-label", label);
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  const fill = element("div", "fill");
  bar.append(fill);
  return { bar, fill };
}

/** Sets textContent only when it changes (progress events arrive several times a second). */
export function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function clamp(fraction) {
  const value = Number(fraction);
  return Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : 0;
}

export function plural(count, one, many = `${one}s`) {
  return `${Number(count).toLocaleString("en")} ${count === 1 ? one : many}`;
}

export function bytes(size) {
  const value = Number(size) || 0;
  if (value < 1024) return `${value} B`;
  if (value < 1024 ** 2) return `${(value / 1024).toFixed(1)} KB`;
  if (value < 1024 ** 3) return `${(value / 1024 ** 2).toFixed(1)} MB`;
  return `${(value / 1024 ** 3).toFixed(2)} GB`;
}

/** A number for people: integers with separators, others with at most four significant digits. */
export function number(value) {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  const magnitude = Math.abs(value);
  if (magnitude >= 1000) return value.toLocaleString("en", { maximumFractionDigits: 1 });
  if (magnitude >= 0.001) return Number(value.toPrecision(4)).toLocaleString("en", {
    maximumFractionDigits: 6,
  });
  return value.toExponential(2);
}

/** Seconds as "0:07", "1:02:03"; tenths below ten seconds once finished ("3.4 s"). */
export function duration(seconds, precise = false) {
  const total = Math.max(0, Number(seconds) || 0);
  if (precise && total < 10) return `${total.toFixed(1)} s`;
  const whole = Math.floor(total);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** Local clock time of a server timestamp (seconds since the epoch). */
export function clockTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function artifactUrl(taskId, name) {
  return `/api/tasks/${encodeURIComponent(taskId)}/artifacts/${encodeURIComponent(name)}`;
}
