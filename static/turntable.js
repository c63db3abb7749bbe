// A model's turntable: one sprite of N frames in a grid (layout in the result's stats), shown one
// frame at a time over the thumbnail. The mouse scrubs it (moving across it, pressed or not), the
// arrow keys step it on the focused element, Home and End jump to the first and last frame.

import { element } from "./format.js";

/** Makes `preview` (holding the thumbnail) a turntable slider for the sprite at `url`. */
export function attachTurntable(preview, url, layout, filename) {
  const frames = Math.max(1, Number(layout.frames) || 1);
  const columns = Math.max(1, Math.min(frames, Number(layout.columns) || frames));
  const rows = Math.max(1, Number(layout.rows) || Math.ceil(frames / columns));
  const sprite = element("div", "sprite");
  sprite.setAttribute("aria-hidden", "true");
  sprite.style.backgroundSize = `${columns * 100}% ${rows * 100}%`;
  const hint = element("span", "hint", "drag or ← → to turn");
  hint.setAttribute("aria-hidden", "true");
  preview.append(sprite, hint);
  preview.classList.add("turntable");
  preview.tabIndex = 0;
  preview.setAttribute("role", "slider");
  preview.setAttribute("aria-label", `turntable of ${filename}`);
  preview.setAttribute("aria-valuemin", "0");
  preview.setAttribute("aria-valuemax", String(frames - 1));

  let frame = 0;
  const show = (index) => {
    frame = ((index % frames) + frames) % frames;
    const column = frame % columns;
    const row = Math.floor(frame / columns);
    sprite.style.backgroundPosition = `${columns > 1 ? (column / (columns - 1)) * 100 : 0}% `
      + `${rows > 1 ? (row / (rows - 1)) * 100 : 0}%`;
    preview.dataset.frame = String(frame);
    preview.setAttribute("aria-valuenow", String(frame));
    preview.setAttribute("aria-valuetext", `frame ${frame + 1} of ${frames}`);
  };
  show(0);

  // The sprite is fetched once and shown only when it has loaded: until then, the thumbnail.
  const image = new Image();
  image.addEventListener("load", () => {
    sprite.style.backgroundImage = `url("${url}")`;
    preview.classList.add("loaded");
  });
  image.src = url;

  const activate = () => preview.classList.add("active");
  const settle = () => {
    if (document.activeElement !== preview && !preview.matches(":hover")) {
      preview.classList.remove("active");
    }
  };
  preview.addEventListener("pointerenter", activate);
  preview.addEventListener("pointerleave", settle);
  preview.addEventListener("focus", activate);
  preview.addEventListener("blur", settle);
  preview.addEventListener("pointerdown", (event) => {
    preview.setPointerCapture(event.pointerId);
    activate();
  });
  preview.addEventListener("pointermove", (event) => {
    const box = preview.getBoundingClientRect();
    if (box.width <= 0) return;
    const x = Math.min(box.width - 1, Math.max(0, event.clientX - box.left));
    show(Math.floor((x / box.width) * frames));
  });
  preview.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[event.key];
    if (step !== undefined) show(frame + step);
    else if (event.key === "Home") show(0);
    else if (event.key === "End") show(frames - 1);
    else return;
    event.preventDefault();
    activate();
  });
}
