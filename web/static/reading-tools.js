// Reading tools shared by the case workspace and the standalone viewer: the scale bar, the
// ruler and area measurements, rotation, and the keyboard shortcuts with their help overlay.
//
// Measurements are taken in level-0 image pixels and converted with the slide's microns per
// pixel (MPP), so they do not depend on the zoom or the rotation of the view: screen positions
// go through the tiled image's own coordinate conversion, which undoes the viewport's rotation.
import { el, t } from "/static/app.js";

const SVG_NS = "http://www.w3.org/2000/svg";

/** The scale bar is the longest round length that fits in this many screen pixels. */
const MAX_BAR_PX = 200;
const NICE_STEPS = [1, 2, 5];
/** Areas below this many µm² (0.01 mm²) read better in µm². */
const AREA_MM2_FROM_UM2 = 10_000;
/** A press and release closer than this (screen pixels) is a click, not a ruler drag; a little
 * more than OpenSeadragon's click distance, so that every quick click counts as a click. */
const MIN_DRAG_PX = 6;

// ---- Numbers ---------------------------------------------------------------------------------

/** `value` with `digits` significant digits, in plain decimal notation ("0.123", "1230"). */
export function significant(value, digits = 3) {
  if (!Number.isFinite(value) || value === 0) return "0";
  const rounded = Number(value.toPrecision(digits));
  // Past 10^digits, toPrecision's exponent form comes back as a plain integer through Number().
  return Math.abs(rounded) >= 1e-6 ? String(rounded) : rounded.toFixed(12).replace(/0+$/, "");
}

/** Largest 1, 2 or 5 × 10^n that is at most `value` (value > 0). */
export function niceLength(value) {
  const base = 10 ** Math.floor(Math.log10(value));
  let best = base;
  for (const step of NICE_STEPS) if (step * base <= value) best = step * base;
  return best;
}

/** A length in micrometres: "456 µm" below 1 mm, else "1.23 mm"; three significant digits. */
export function formatLength(micrometres) {
  const um = Number(significant(micrometres));
  if (um >= 1000) return `${significant(micrometres / 1000)} mm`;
  return `${significant(micrometres)} µm`;
}

/** An area in µm²: "5230 µm²" below 0.01 mm², else "0.123 mm²"; three significant digits. */
export function formatArea(squareMicrometres) {
  if (squareMicrometres < AREA_MM2_FROM_UM2) return `${significant(squareMicrometres)} µm²`;
  return `${significant(squareMicrometres / 1e6)} mm²`;
}

/** The scale bar's round lengths ("500 µm", "2 mm") need no rounding. */
function formatBarLength(micrometres) {
  if (micrometres >= 1000) return `${Number((micrometres / 1000).toPrecision(6))} mm`;
  return `${Number(micrometres.toPrecision(6))} µm`;
}

/** Length in µm of the segment a–b (image pixels) with pixel size `mpp` {x, y}. */
export function segmentUm(a, b, mpp) {
  return Math.hypot((b[0] - a[0]) * mpp.x, (b[1] - a[1]) * mpp.y);
}

/** Length in µm of a path through `points`, closed back to the first point when `closed`. */
export function pathUm(points, mpp, closed = false) {
  let total = 0;
  for (let i = 1; i < points.length; i += 1) total += segmentUm(points[i - 1], points[i], mpp);
  if (closed && points.length > 2) total += segmentUm(points[points.length - 1], points[0], mpp);
  return total;
}

/** Area in µm² of the polygon `points` (image pixels; shoelace formula). */
export function polygonUm2(points, mpp) {
  let twice = 0;
  for (let i = 0; i < points.length; i += 1) {
    const [x0, y0] = points[i];
    const [x1, y1] = points[(i + 1) % points.length];
    twice += x0 * y1 - x1 * y0;
  }
  return (Math.abs(twice) / 2) * mpp.x * mpp.y;
}

/** The slide's pixel size as {x, y} µm, or null when the slide does not record it. */
export function slideMpp(slide) {
  const x = Number(slide && slide.mpp_x);
  const y = Number(slide && (slide.mpp_y || slide.mpp_x));
  return x > 0 && y > 0 ? { x, y } : null;
}

// ---- Coordinates -----------------------------------------------------------------------------

/** Image pixels (level 0) of a position in the viewer element; null before the slide opens. */
export function toImage(viewer, position, clamp = true) {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const p = item.viewerElementToImageCoordinates(position);
  if (!clamp) return [p.x, p.y];
  const size = item.getContentSize();
  // Clamp to the slide so a drag past the edge still gives a shape the server accepts.
  return [Math.min(Math.max(p.x, 0), size.x), Math.min(Math.max(p.y, 0), size.y)];
}

/** Viewer-element position of an image point; null before the slide opens. */
export function toScreen(viewer, [x, y]) {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const p = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  return [p.x, p.y];
}

/** The position of a DOM pointer event in the viewer element. */
function eventPosition(viewer, event) {
  const box = viewer.canvas.getBoundingClientRect();
  return new OpenSeadragon.Point(event.clientX - box.left, event.clientY - box.top);
}

export function svgNode(name, attrs = {}) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

// ---- Rotation and zoom -----------------------------------------------------------------------

/** Rotates the view by `degrees` (90 is clockwise), kept within 0–359. */
export function rotateBy(viewer, degrees) {
  const next = (((viewer.viewport.getRotation() + degrees) % 360) + 360) % 360;
  viewer.viewport.setRotation(next);
}

/** Back to the slide's own orientation. */
export function resetRotation(viewer) {
  viewer.viewport.setRotation(0);
}

export function zoomBy(viewer, factor) {
  viewer.viewport.zoomBy(factor);
  viewer.viewport.applyConstraints();
}

export function fitSlide(viewer) {
  viewer.viewport.goHome();
}

/**
 * Our shortcuts replace OpenSeadragon's own keys (w/a/s/d, r, f, 0, +, −), which would
 * otherwise act too (its "r" rotates with nothing to rotate back); the arrow keys still pan.
 */
export function takeOverKeys(viewer) {
  viewer.addHandler("canvas-key", (event) => {
    const code = event.originalEvent && event.originalEvent.keyCode;
    if (!(code >= 37 && code <= 40)) event.preventDefaultAction = true;
  });
}

// ---- Scale bar -------------------------------------------------------------------------------

/**
 * Keeps a scale bar (`bar` holding `label` and `line`) true to the zoom and rotation of
 * `viewer`. Returns { setMpp } to give the pixel size of the slide shown ({x, y} µm or null).
 */
export function attachScaleBar(viewer, { bar, label, line }) {
  let mpp = null;
  let pending = false;
  const update = () => {
    pending = false;
    bar.hidden = false;
    if (!mpp) {
      bar.classList.add("no-scale");
      label.textContent = t("viewer.scale.none");
      bar.title = t("viewer.scale.none_title");
      return;
    }
    bar.classList.remove("no-scale");
    bar.title = "";
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    // Screen pixels per level-0 pixel at the zoom shown right now (`true`: the animated value,
    // so the bar follows smooth zooming).
    const screenPerImagePx = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    if (!(screenPerImagePx > 0)) return;
    // The bar lies along the screen's x axis; rotated, that axis crosses the image's x and y.
    const angle = (viewer.viewport.getRotation(true) * Math.PI) / 180;
    const umPerImagePx = Math.hypot(Math.cos(angle) * mpp.x, Math.sin(angle) * mpp.y);
    const umPerScreenPx = umPerImagePx / screenPerImagePx;
    const length = niceLength(MAX_BAR_PX * umPerScreenPx);
    line.style.width = `${Math.round(length / umPerScreenPx)}px`;
    label.textContent = formatBarLength(length);
  };
  // Animation events fire every frame; one update per frame is enough.
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(update);
  };
  for (const name of ["open", "animation", "animation-finish", "zoom", "rotate", "resize"]) {
    viewer.addHandler(name, schedule);
  }
  return {
    setMpp(value) {
      mpp = value;
      schedule();
    },
  };
}

// ---- Measurements ----------------------------------------------------------------------------

/**
 * The ruler ("ruler": drag, or click both ends) and the area tool ("area": click the corners;
 * double-click or Enter closes) on any number of viewers. The result goes to `readout` (text,
 * plus `data-length-um`, or `data-area-um2` and `data-perimeter-um`); `extra` gets the
 * perimeter. `onKeep(result)`, where given, saves it (the Keep button calls it).
 */
export class Measurer {
  constructor({ readout, extra, panel, keepButton, clearButton, mppOf, onKeep = null, canKeep = () => true }) {
    this.readout = readout;
    this.extra = extra;
    this.panel = panel;
    this.keepButton = keepButton;
    this.clearButton = clearButton;
    this.mppOf = mppOf;
    this.onKeep = onKeep;
    this.canKeep = canKeep;
    this.mode = null;
    this.viewers = [];
    // { viewer, kind: "line" | "polygon", points, closed, hover, awaiting }
    this.shape = null;
    this.press = null;
    this.dragging = false;
    keepButton?.addEventListener("click", () => this.keep());
    clearButton?.addEventListener("click", () => this.clear());
    this.render();
  }

  /** Adds the measurement layer and the pointer handlers to a viewer. */
  attach(viewer) {
    const svg = svgNode("svg", { class: "measure-layer" });
    viewer.canvas.append(svg);
    viewer.pathfedMeasureSvg = svg;
    this.viewers.push(viewer);
    for (const name of ["animation", "animation-finish", "update-viewport", "resize", "rotate"]) {
      viewer.addHandler(name, () => this.draw(viewer));
    }
    // Another slide in this viewer: a measurement of the previous one means nothing there.
    viewer.addHandler("open", () => {
      if (this.shape && this.shape.viewer === viewer) this.clear();
      this.draw(viewer);
    });
    viewer.addHandler("canvas-press", (event) => {
      if (!this.mode) return;
      this.press = { viewer, position: event.position };
      this.dragging = false;
    });
    viewer.addHandler("canvas-drag", (event) => {
      if (!this.mode) return;
      // While measuring, the mouse measures instead of panning.
      event.preventDefaultAction = true;
      if (this.mode !== "ruler" || !this.press || this.press.viewer !== viewer) return;
      if (this.shape && this.shape.awaiting) return; // two-click ruler: the second click ends it
      if (!this.dragging && this.press.position.distanceTo(event.position) < MIN_DRAG_PX) return;
      const start = toImage(viewer, this.press.position);
      const end = toImage(viewer, event.position);
      if (!start || !end) return;
      this.dragging = true;
      this.shape = { viewer, kind: "line", points: [start, end], closed: false };
      this.update();
    });
    viewer.addHandler("canvas-release", (event) => {
      if (!this.mode || !this.dragging || !this.shape || this.shape.viewer !== viewer) return;
      this.dragging = false;
      this.press = null;
      const end = toImage(viewer, event.position);
      if (end) this.shape.points[1] = end;
      this.shape.closed = true;
      this.update();
    });
    viewer.addHandler("canvas-click", (event) => {
      if (!this.mode) return;
      event.preventDefaultAction = true;
      if (!event.quick) return;
      const at = toImage(viewer, event.position);
      if (!at) return;
      if (this.mode === "ruler") this.rulerClick(viewer, at);
      else this.areaClick(viewer, at);
    });
    viewer.addHandler("canvas-double-click", (event) => {
      if (this.mode !== "area") return;
      event.preventDefaultAction = true;
      this.finish();
    });
    viewer.canvas.addEventListener("pointermove", (event) => {
      const shape = this.shape;
      if (!this.mode || !shape || shape.viewer !== viewer || shape.closed || this.dragging) return;
      const at = toImage(viewer, eventPosition(viewer, event));
      if (!at) return;
      if (shape.kind === "line") shape.points[1] = at;
      else shape.hover = at;
      this.update();
    });
  }

  rulerClick(viewer, at) {
    const shape = this.shape;
    if (shape && shape.awaiting && shape.viewer === viewer) {
      shape.points[1] = at;
      shape.awaiting = false;
      // Two clicks on one spot measure nothing: start again from there.
      if (segmentUm(shape.points[0], at, { x: 1, y: 1 }) === 0) {
        this.shape = { viewer, kind: "line", points: [at, at], closed: false, awaiting: true };
      } else {
        shape.closed = true;
      }
    } else {
      this.shape = { viewer, kind: "line", points: [at, at], closed: false, awaiting: true };
    }
    this.update();
  }

  areaClick(viewer, at) {
    if (!this.shape || this.shape.closed || this.shape.viewer !== viewer || this.shape.kind !== "polygon") {
      this.shape = { viewer, kind: "polygon", points: [], closed: false, hover: null };
    }
    const points = this.shape.points;
    const last = points[points.length - 1];
    // A double-click also delivers its two clicks; the same corner is not added twice.
    if (!last || Math.hypot(last[0] - at[0], last[1] - at[1]) > 1e-6) points.push(at);
    this.update();
  }

  /** Chooses the tool ("ruler", "area") or none; a shape being drawn is dropped. */
  setMode(mode) {
    this.mode = mode || null;
    this.press = null;
    this.dragging = false;
    if (this.shape && !this.shape.closed) this.shape = null;
    this.update();
  }

  /** Closes the area polygon being drawn (Enter); false when there is none to close. */
  finish() {
    const shape = this.shape;
    if (!shape || shape.closed || shape.kind !== "polygon") return false;
    if (shape.points.length < 3) {
      this.shape = null;
    } else {
      shape.closed = true;
      shape.hover = null;
    }
    this.update();
    return true;
  }

  /** Drops the shape being drawn (Esc); false when nothing was being drawn. */
  cancel() {
    if (!this.shape || this.shape.closed) return false;
    this.shape = null;
    this.update();
    return true;
  }

  clear() {
    this.shape = null;
    this.update();
  }

  /** The finished measurement: { kind, points, text, lengthUm | areaUm2 + perimeterUm }. */
  get result() {
    const shape = this.shape;
    if (!shape || !shape.closed) return null;
    return { viewer: shape.viewer, kind: shape.kind, points: shape.points.map((p) => [...p]), ...this.measure(shape) };
  }

  /** The numbers of a shape, including the point under the mouse while it is drawn. */
  measure(shape) {
    const mpp = this.mppOf(shape.viewer);
    const points = shape.kind === "polygon" && !shape.closed && shape.hover ? [...shape.points, shape.hover] : shape.points;
    const unit = mpp || { x: 1, y: 1 };
    if (shape.kind === "line") {
      const length = segmentUm(points[0], points[1], unit);
      return mpp ? { lengthUm: length, text: formatLength(length) } : { lengthPx: length, text: t("viewer.measure.pixels", { value: significant(length) }) };
    }
    if (points.length < 3) return { text: "" };
    const area = polygonUm2(points, unit);
    const perimeter = pathUm(points, unit, true);
    if (!mpp) return { areaPx: area, text: t("viewer.measure.square_pixels", { value: significant(area) }) };
    return { areaUm2: area, perimeterUm: perimeter, text: formatArea(area), perimeterText: formatLength(perimeter) };
  }

  async keep() {
    const result = this.result;
    if (!result || !this.onKeep) return;
    this.keepButton.disabled = true;
    try {
      if (await this.onKeep(result)) this.clear();
    } finally {
      this.keepButton.disabled = false;
      this.render();
    }
  }

  update() {
    for (const viewer of this.viewers) this.draw(viewer);
    this.render();
  }

  /** The readout: the value, and the exact number for tests and screen readers. */
  render() {
    const shape = this.shape;
    const numbers = shape ? this.measure(shape) : null;
    const out = this.readout;
    for (const name of ["lengthUm", "areaUm2", "perimeterUm"]) delete out.dataset[name];
    out.textContent = numbers ? numbers.text : "";
    if (numbers && numbers.lengthUm !== undefined) out.dataset.lengthUm = String(numbers.lengthUm);
    if (numbers && numbers.areaUm2 !== undefined) {
      out.dataset.areaUm2 = String(numbers.areaUm2);
      out.dataset.perimeterUm = String(numbers.perimeterUm);
    }
    out.dataset.state = !shape ? "empty" : shape.closed ? "done" : "drawing";
    if (this.extra) {
      this.extra.textContent = numbers && numbers.perimeterText ? t("viewer.measure.perimeter", { value: numbers.perimeterText }) : "";
    }
    if (this.panel) this.panel.hidden = !this.mode && !shape;
    const done = Boolean(shape && shape.closed);
    if (this.keepButton) this.keepButton.hidden = !(this.onKeep && done && this.canKeep());
    if (this.clearButton) this.clearButton.hidden = !shape;
  }

  draw(viewer) {
    const svg = viewer.pathfedMeasureSvg;
    if (!svg) return;
    const shape = this.shape;
    if (!shape || shape.viewer !== viewer) {
      svg.replaceChildren();
      return;
    }
    const shown = shape.kind === "polygon" && !shape.closed && shape.hover ? [...shape.points, shape.hover] : shape.points;
    const screen = shown.map((p) => toScreen(viewer, p)).filter(Boolean);
    if (!screen.length) {
      svg.replaceChildren();
      return;
    }
    const nodes = [];
    const d = screen.map(([x, y]) => `${x},${y}`).join(" ");
    if (shape.kind === "line") {
      nodes.push(svgNode("polyline", { points: d, class: "measure-shape" }));
      for (const [x, y] of screen) nodes.push(svgNode("circle", { cx: x, cy: y, r: 3.5, class: "measure-end" }));
    } else {
      nodes.push(svgNode(shape.closed ? "polygon" : "polyline", { points: d, class: "measure-shape measure-area" }));
      for (const [x, y] of screen.slice(0, shape.points.length)) nodes.push(svgNode("circle", { cx: x, cy: y, r: 3, class: "measure-end" }));
    }
    const numbers = this.measure(shape);
    if (numbers.text) {
      const cx = screen.reduce((s, p) => s + p[0], 0) / screen.length;
      const cy = screen.reduce((s, p) => s + p[1], 0) / screen.length;
      const label = svgNode("text", { x: cx + 8, y: cy - 8, class: "measure-text" });
      label.textContent = numbers.text;
      nodes.push(label);
    }
    svg.replaceChildren(...nodes);
  }
}

// ---- Keyboard shortcuts ----------------------------------------------------------------------

/** Whether a key event belongs to a text field (or an IME composition), not to the viewer. */
export function isTyping(event) {
  if (event.isComposing || event.keyCode === 229) return true;
  const target = event.target;
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  if (target.closest("textarea, select")) return true;
  const input = target.closest("input");
  // Checkboxes and buttons take no text; the shortcuts work from them.
  return Boolean(input && !["checkbox", "radio", "button", "submit", "range"].includes(input.type));
}

/**
 * Installs the shortcuts. Each binding is { keys: ["v"], label: "V", action: "Pan", run }:
 * `keys` are KeyboardEvent.key values (letters in lower case), `label` how the help shows
 * them, `action` what they do. "?" opens the help overlay (`#shortcut-help`), Esc closes it.
 * Returns { openHelp }.
 */
export function installShortcuts(bindings) {
  const help = buildHelp(bindings);
  const openHelp = () => {
    if (!help.open) help.showModal();
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event)) return;
    if (help.open) {
      if (event.key === "?" || event.key === "Escape") {
        event.preventDefault();
        help.close();
      }
      return;
    }
    // Another dialog (the sign-out preview) has the keyboard.
    if (document.querySelector("dialog[open]")) return;
    if (event.key === "?") {
      event.preventDefault();
      openHelp();
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const binding = bindings.find((b) => b.keys.includes(key) && (!b.when || b.when()));
    if (!binding) return;
    // A binding that finds nothing to do (Esc with nothing drawn) leaves the key alone.
    if (binding.run(event) === false) return;
    event.preventDefault();
  });
  return { openHelp };
}

function buildHelp(bindings) {
  const rows = [
    ...bindings.filter((b) => b.label),
    { label: "?", action: t("viewer.keys.help") },
  ].map((b) => el("tr", {}, el("th", { scope: "row" }, el("kbd", { text: b.label })), el("td", { text: b.action })));
  const close = el("button", { type: "button", class: "button button-small", id: "shortcut-help-close", text: t("viewer.keys.close") });
  const dialog = el(
    "dialog",
    { id: "shortcut-help", class: "shortcut-help", "aria-labelledby": "shortcut-help-title" },
    el("h2", { id: "shortcut-help-title", text: t("viewer.keys.title") }),
    el("p", { class: "muted", text: t("viewer.keys.note") }),
    el("table", { class: "shortcut-table" }, el("tbody", {}, ...rows)),
    el("div", { class: "actions" }, close),
  );
  close.addEventListener("click", () => dialog.close());
  // A click on the backdrop (outside the box) closes it too.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  document.body.append(dialog);
  return dialog;
}

/** The bindings both viewers share: tools, rotation, zoom and fit, Esc and Enter. */
export function commonBindings({ setTool, activeViewers, escape, enter }) {
  const each = (fn) => () => {
    const viewers = activeViewers();
    if (!viewers.length) return false;
    for (const viewer of viewers) fn(viewer);
    return true;
  };
  return [
    { keys: ["v"], label: "V", action: t("viewer.keys.pan"), run: () => setTool("") },
    { keys: ["m"], label: "M", action: t("viewer.keys.ruler"), run: () => setTool("ruler") },
    { keys: ["a"], label: "A", action: t("viewer.keys.area"), run: () => setTool("area") },
    { keys: ["["], label: "[", action: t("viewer.keys.rotate_left"), run: each((v) => rotateBy(v, -90)) },
    { keys: ["]"], label: "]", action: t("viewer.keys.rotate_right"), run: each((v) => rotateBy(v, 90)) },
    { keys: ["0"], label: "0", action: t("viewer.keys.rotate_reset"), run: each(resetRotation) },
    { keys: ["+", "="], label: "+", action: t("viewer.keys.zoom_in"), run: each((v) => zoomBy(v, 1.5)) },
    { keys: ["-", "_"], label: "−", action: t("viewer.keys.zoom_out"), run: each((v) => zoomBy(v, 1 / 1.5)) },
    { keys: ["Home"], label: "Home", action: t("viewer.keys.fit"), run: each(fitSlide) },
    { keys: ["Enter"], label: "Enter", action: t("viewer.keys.finish"), run: enter },
    { keys: ["Escape"], label: "Esc", action: t("viewer.keys.cancel"), run: escape },
  ];
}
