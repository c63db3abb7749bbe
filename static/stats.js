// A task's result statistics as rows of a readable table: known fields of meshes, textures and
// materials get a label and a unit; anything else is flattened generically (nested objects as
// "parent › child", lists of names joined, lists of records summarised), so a new field shows up
// without a page change.

import { bytes, element, number, plural } from "./format.js";

const MAX_ITEMS = 12; // list items shown before "… and N more"
const MAX_DEPTH = 3;

// Fields shown first, in this order, with these labels; the rest follow in the server's order.
const ORDER = [
  "format", "width", "vertices", "faces", "size", "bounds", "area", "watertight", "volume",
  "bodies", "meshes", "materials", "material_names", "textures", "texture_names",
  "missing_textures", "missing_files", "lods", "turntable",
  "mode", "bands", "bit_depth", "has_alpha", "alpha_used", "icc", "power_of_two", "normal_map",
  "frames", "mips",
];
const LABELS = {
  format: "Format", width: "Size", vertices: "Vertices", faces: "Faces", size: "Dimensions",
  bounds: "Bounds", area: "Surface area", watertight: "Watertight", volume: "Volume",
  bodies: "Bodies", meshes: "Meshes", materials: "Materials", material_names: "Material names",
  textures: "Textures", texture_names: "Texture names", missing_textures: "Missing textures",
  missing_files: "Missing files", lods: "LODs", turntable: "Turntable", mode: "Mode",
  bands: "Channels", bit_depth: "Bit depth", has_alpha: "Alpha channel", alpha_used: "Alpha used",
  icc: "ICC profile", power_of_two: "Power of two", normal_map: "Normal map", frames: "Frames",
  mips: "Mip chain", graphs: "Graphs", outputs: "Outputs", parameters: "Parameters",
  presets: "Presets", maps: "Maps",
};
const SKIP = new Set(["height"]); // shown with width as one "Size" row

/** [{label, value, warn}] for a task's result; `warn` marks what deserves attention. */
export function statRows(kind, result) {
  if (!result || typeof result !== "object") return [];
  const rows = [];
  const keys = Object.keys(result);
  const ordered = [...ORDER.filter((k) => k in result), ...keys.filter((k) => !ORDER.includes(k))];
  for (const key of ordered) {
    if (SKIP.has(key) && "width" in result) continue;
    const special = describeKnown(key, result[key], result);
    if (special !== undefined) {
      if (special !== null) rows.push({ label: label(key), ...special });
      continue;
    }
    flatten(label(key), result[key], rows, 0);
  }
  return rows;
}

function describeKnown(key, value, result) {
  switch (key) {
    case "format":
      return { value: String(value).toUpperCase() };
    case "width":
      return "height" in result ? { value: `${number(value)} × ${number(result.height)} px` }
        : undefined;
    case "bit_depth":
      return { value: `${value}-bit` };
    case "size":
      return Array.isArray(value) ? { value: value.map(number).join(" × ") } : undefined;
    case "bounds":
      return Array.isArray(value) && value.length === 2 && value.every(Array.isArray)
        ? { value: `${vector(value[0])} → ${vector(value[1])}` } : undefined;
    case "watertight":
      return { value: yesNo(value), warn: value === false };
    case "missing_textures":
    case "missing_files":
      if (!Array.isArray(value)) return undefined;
      return value.length === 0 ? { value: "none" } : { value: list(value), warn: true };
    case "material_names":
    case "texture_names":
      return Array.isArray(value) && value.length === 0 ? null : undefined;
    case "lods":
      if (!Array.isArray(value)) return undefined;
      if (value.length === 0) return { value: "none (below the LOD threshold)" };
      return { value: value.map(lodSummary).join("; "), warn: value.some((lod) => lod && lod.why) };
    case "turntable":
      return value && typeof value === "object"
        ? { value: `${plural(value.frames, "frame")} of ${value.frame_width}×${value.frame_height} px` }
        : undefined;
    case "mips":
      if (!Array.isArray(value) || value.length === 0) return undefined;
      return {
        value: `${plural(value.length, "level")}: ${value[0].width}×${value[0].height} → `
          + `${value[value.length - 1].width}×${value[value.length - 1].height}`,
      };
    case "icc":
      if (value === null || value === undefined) return { value: "none" };
      return typeof value === "object"
        ? { value: [value.description, value.color_space].filter(Boolean).join(" · ") || "present" }
        : undefined;
    case "normal_map":
      if (!value || typeof value !== "object" || !("likely" in value)) return undefined;
      if (!value.likely) return { value: "no" };
      return {
        value: `yes${value.convention ? `, ${value.convention}` : ""}`
          + (typeof value.confidence === "number"
            ? ` (${Math.round(value.confidence * 100)}% sure)` : ""),
      };
    default:
      return undefined;
  }
}

function flatten(name, value, rows, depth) {
  if (value === null || value === undefined) {
    rows.push({ label: name, value: "—" });
  } else if (Array.isArray(value)) {
    if (value.length === 0) rows.push({ label: name, value: "none" });
    else if (value.every(isScalar)) rows.push({ label: name, value: list(value) });
    else if (depth >= MAX_DEPTH) rows.push({ label: name, value: plural(value.length, "item") });
    else {
      rows.push({ label: name, value: plural(value.length, "item") });
      value.slice(0, MAX_ITEMS).forEach((item, i) => {
        const itemName = `${name} › ${item && typeof item === "object" && item.name ? item.name : i + 1}`;
        if (isScalar(item)) rows.push({ label: itemName, value: scalar(item) });
        else rows.push({ label: itemName, value: summary(item) });
      });
      if (value.length > MAX_ITEMS) {
        rows.push({ label: name, value: `… and ${value.length - MAX_ITEMS} more` });
      }
    }
  } else if (typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.length === 0) rows.push({ label: name, value: "—" });
    else if (depth >= MAX_DEPTH) rows.push({ label: name, value: summary(value) });
    else for (const [key, inner] of entries) flatten(`${name} › ${label(key)}`, inner, rows, depth + 1);
  } else {
    rows.push({ label: name, value: scalar(value) });
  }
}

function isScalar(value) {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function scalar(value) {
  if (typeof value === "number") return number(value);
  if (typeof value === "boolean") return yesNo(value);
  if (value === null) return "—";
  return String(value);
}

function yesNo(value) {
  return value ? "yes" : "no";
}

function vector(values) {
  return `(${values.map(number).join(", ")})`;
}

function list(values) {
  const shown = values.slice(0, MAX_ITEMS).map(scalar).join(", ");
  return values.length > MAX_ITEMS ? `${shown}, … and ${values.length - MAX_ITEMS} more` : shown;
}

/** "model-lod2.glb: 10% asked, 9.9% kept (12,069 faces, by clustering)", and why if it says. */
function lodSummary(record) {
  if (!record || typeof record !== "object" || typeof record.ratio !== "number") {
    return summary(record);
  }
  const percent = (share) => `${Math.round(share * 1000) / 10}%`;
  const kept = typeof record.reached === "number" ? `, ${percent(record.reached)} kept` : "";
  const details = [
    typeof record.faces === "number" ? `${record.faces.toLocaleString("en")} faces` : "",
    record.method === "clustering" ? "by clustering" : "",
  ].filter(Boolean).join(", ");
  const text = `${record.name}: ${percent(record.ratio)} asked${kept}` +
    (details ? ` (${details})` : "");
  return record.why ? `${text}. ${record.why}` : text;
}

/** One line for a record: its name first, then "key value" pairs of its scalar fields. */
function summary(record) {
  if (!record || typeof record !== "object") return scalar(record);
  const parts = [];
  for (const [key, value] of Object.entries(record)) {
    if (key === "name") continue;
    if (key === "size" && typeof value === "number") parts.push(`${bytes(value)}`);
    else if (isScalar(value)) parts.push(`${label(key).toLowerCase()} ${scalar(value)}`);
    else if (Array.isArray(value)) parts.push(`${label(key).toLowerCase()} ${value.length}`);
  }
  const text = parts.join(", ");
  return record.name ? `${record.name}${text ? ` (${text})` : ""}` : text;
}

function label(key) {
  if (LABELS[key]) return LABELS[key];
  const words = String(key).replace(/[_-]+/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The rows as a <table> (caption for screen readers), or null when there is nothing to show. */
export function statsTable(kind, result) {
  const rows = statRows(kind, result);
  if (rows.length === 0) return null;
  const table = element("table", "stats");
  table.append(element("caption", "visually-hidden", "Statistics"));
  const body = element("tbody");
  for (const row of rows) {
    const tr = element("tr", row.warn ? "warn" : "");
    tr.append(element("th", "", row.label), element("td", "", row.value));
    tr.firstChild.scope = "row";
    body.append(tr);
  }
  table.append(body);
  return table;
}
