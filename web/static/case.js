// Case workspace: the case's slides in one or two synchronised viewers with the reading tools
// (scale bar, ruler, area, rotation, shortcuts) and annotation tools, and the panel with case
// data, the actions the user may take in the case's state, the diagnosis forms, the sign-out
// preview, reads, reports, the slide label where the server gives it, and the AI support panel
// (scores, heatmap overlay, top regions; decision support only) for the hub pathologists who
// diagnose the case, never for the referring spoke.
import {
  BACKGROUND_HEADERS,
  api,
  el,
  errorFromResponse,
  errorText,
  formatDateTime,
  lang,
  requireSession,
  showError,
  statusBadge,
  statusText,
  t,
} from "/static/app.js";
import {
  Measurer,
  attachScaleBar,
  commonBindings,
  installShortcuts,
  resetRotation,
  rotateBy,
  slideMpp,
  svgNode,
  takeOverKeys,
  toImage,
  toScreen,
} from "/static/reading-tools.js";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const caseId = new URLSearchParams(window.location.search).get("id");
const casePath = `/api/v1/cases/${enc(caseId || "")}`;

// Hooks for the browser test (and debugging from the console).
window.pathfedTilesLoaded = 0;
window.pathfedViewer = null;

const SHAPE_TOOLS = ["rectangle", "polygon", "point", "text"];
const MEASURE_TOOLS = ["ruler", "area"];
const KINDS = ["polygon", "rectangle", "point", "text", "line"];
const AGE_BANDS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+", "unknown"];
const SEXES = ["female", "male", "other", "unknown"];
const URGENCIES = ["routine", "urgent"];
const JOB_STATES = ["queued", "running", "failed", "cancelled"];

// Label colours by the label's place in the taxonomy: bright enough on H&E and on glass, and
// told apart from the unlabelled yellow and the measuring cyan-white.
const PALETTE = ["#00c853", "#2979ff", "#ff6d00", "#d500f9", "#ff1744", "#00bfa5", "#c6ff00", "#ff80ab", "#8d6e63"];
const UNLABELLED = "#ffd600";

const state = {
  session: null,
  case: null,
  slides: new Map(), // id → slide metadata
  labels: new Map(), // id → the specimen/block label the case gives the slide
  current: [null, null], // slide shown in viewer A and B
  viewers: [null, null],
  scaleBars: [null, null],
  focus: 0, // the viewer the keys act on: the one last clicked
  annotations: new Map(), // slide id → annotations
  tool: "",
  draft: null, // the shape being drawn: { viewer, kind, points }
  measurer: null,
  amending: false,
  savedSlideFindings: new Map(), // slide id → findings of this reader's saved read
  ai: null, // AI support on the slide in viewer A: { slideId, overview, result, overlay }
  aiPoll: null,
};

function taxonomyLabel(code) {
  return (state.case?.taxonomy_labels || []).find((l) => l.code === code);
}

/** A diagnosis label in the language shown (the built-in English name where none is given). */
function labelName(code) {
  const label = taxonomyLabel(code);
  if (!label) return code;
  const own = lang() === "ja" ? label.label_ja : label.label_en;
  return own && own.trim() ? own : label.name;
}

function labelColour(code) {
  if (!code) return UNLABELLED;
  const index = (state.case?.taxonomy_labels || []).findIndex((l) => l.code === code);
  return index < 0 ? UNLABELLED : PALETTE[index % PALETTE.length];
}

function translucent(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** The case's slides as { id, label }, whether the case lists ids or slide objects. */
function caseSlides(c) {
  return (c.slides || [])
    .map((s) => (typeof s === "string" ? { id: s, label: null } : { id: s.id || s.slide_id, label: s.label || null }))
    .filter((s) => s.id);
}

function slideName(slideId) {
  const slide = state.slides.get(slideId);
  const label = state.labels.get(slideId);
  const file = slide ? slide.filename : slideId;
  return label ? t("case.slide.labelled", { label, file }) : file;
}

// ---- Viewers -------------------------------------------------------------------

function makeViewer(index) {
  const viewer = OpenSeadragon({
    id: index === 0 ? "osd-a" : "osd-b",
    prefixUrl: "/vendor/openseadragon/images/",
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    timeout: 120000,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: false },
  });
  viewer.addHandler("tile-loaded", () => {
    window.pathfedTilesLoaded += 1;
  });
  viewer.addHandler("open-failed", (event) => showError(t("case.error.open_failed", { reason: event.message || "—" })));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.classList.add("annotation-layer");
  viewer.canvas.append(svg);
  viewer.pathfedSvg = svg;
  for (const name of ["open", "animation", "animation-finish", "resize", "update-viewport", "rotate"]) {
    viewer.addHandler(name, () => drawAnnotations(index));
  }
  if (index === 0) viewer.addHandler("open", () => syncOverlay());
  viewer.addHandler("viewport-change", () => syncFrom(index));
  viewer.addHandler("rotate", () => syncFrom(index));
  viewer.addHandler("canvas-press", () => {
    state.focus = index;
  });
  takeOverKeys(viewer);
  const letter = index === 0 ? "a" : "b";
  state.scaleBars[index] = attachScaleBar(viewer, {
    bar: $(`scale-bar-${letter}`),
    label: $(`scale-bar-label-${letter}`),
    line: $(`scale-bar-${letter}`).querySelector(".scale-bar-line"),
  });
  state.measurer.attach(viewer);
  attachDrawing(viewer, index);
  return viewer;
}

let syncing = false;
function syncFrom(index) {
  const other = state.viewers[1 - index];
  if (syncing || !other || $("cell-b").hidden || !$("sync-nav").checked) return;
  const source = state.viewers[index].viewport;
  syncing = true;
  if (other.viewport.getRotation() !== source.getRotation()) other.viewport.setRotation(source.getRotation(), true);
  other.viewport.zoomTo(source.getZoom(), null, true);
  other.viewport.panTo(source.getCenter(), true);
  syncing = false;
}

function show(index, slideId) {
  const slide = state.slides.get(slideId);
  if (!slide) return;
  const changed = state.current[index] !== slideId;
  state.current[index] = slideId;
  if (changed || !state.viewers[index].world.getItemCount()) {
    // Opening empties the viewer's world, the overlay with it; the AI panel starts afresh.
    if (index === 0 && changed) state.ai = null;
    if (changed) state.draft = null;
    state.viewers[index].open(slide.dzi_url);
  }
  state.scaleBars[index].setMpp(slideMpp(slide));
  renderTabs();
  loadAnnotations(slideId);
  if (index === 0) {
    renderLabel(slide);
    loadAi(slideId);
  }
}

/** Shows the n-th slide (0-based) in viewer A; false when there is none. */
function showTab(n) {
  const ids = caseSlides(state.case || {}).map((s) => s.id).filter((id) => state.slides.has(id));
  if (n < 0 || n >= ids.length) return false;
  state.focus = 0;
  show(0, ids[n]);
  return true;
}

// ---- Slide label ------------------------------------------------------------------

/** The label image of the slide in viewer A, where the server gives it to this user
 * (`label_url`): the spoke's staff, and the hub pathologists reading the case unless the spoke
 * keeps its labels to itself. It may carry the patient's name and id, so it stays folded away
 * and is only fetched when someone opens it. */
function renderLabel(slide) {
  const url = (slide && slide.label_url) || "";
  const details = $("label-details");
  // The slide's name may change (its specimen label) while the image stays the same.
  $("label-summary").textContent = url ? t("case.label.show_of", { name: slideName(slide.id) }) : t("case.label.show");
  if (details.dataset.url === url) return;
  details.dataset.url = url;
  details.open = false;
  details.querySelector("img")?.remove();
  $("label-section").hidden = !url;
}

function openLabel() {
  const details = $("label-details");
  const url = details.dataset.url;
  if (!details.open || !url || details.querySelector("img")) return;
  const slideId = state.current[0];
  const img = el("img", { id: "label-image", src: url, alt: t("case.label.alt", { name: slideId ? slideName(slideId) : "" }) });
  // In the panel the image sits in the flow, not over it as in the viewer's header.
  img.style.position = "static";
  img.style.maxWidth = "100%";
  details.append(img);
}

function renderTabs() {
  const ids = caseSlides(state.case || {}).map((s) => s.id).filter((id) => state.slides.has(id));
  const tabs = ids.map((id, i) => {
    const slide = state.slides.get(id);
    const label = state.labels.get(id);
    const active = state.current[0] === id;
    return el(
      "button",
      {
        type: "button",
        role: "tab",
        class: active ? "tab active" : "tab",
        "aria-selected": active ? "true" : "false",
        title: i < 9 ? t("case.tabs.title_key", { name: slideName(id), key: i + 1 }) : slideName(id),
        dataset: { slideId: id },
        onclick: () => {
          state.focus = 0;
          show(0, id);
        },
      },
      label ? el("strong", { class: "tab-label", text: label }) : null,
      label ? " " : null,
      el("span", { class: "tab-file", text: slide.filename }),
    );
  });
  $("slide-tabs").replaceChildren(...tabs);
}

function toggleSideBySide() {
  const on = $("side-by-side").checked;
  $("cell-b").hidden = !on;
  $("viewers").classList.toggle("two", on);
  if (on) {
    if (!state.viewers[1]) state.viewers[1] = makeViewer(1);
    const ids = [...state.slides.keys()];
    const next = ids.find((id) => id !== state.current[0]) || state.current[0];
    show(1, next);
  } else if (state.focus === 1) {
    state.focus = 0;
  }
  renderLegend();
}

// ---- Annotations ------------------------------------------------------------------

function shapeNode(viewer, kind, points, { draft = false, title = "", colour = null } = {}) {
  const screen = points.map((p) => toScreen(viewer, p)).filter(Boolean);
  if (!screen.length) return null;
  const cls = draft ? "shape draft" : "shape";
  let node;
  if (kind === "point" || kind === "text") {
    node = svgNode("circle", { cx: screen[0][0], cy: screen[0][1], r: 6, class: `${cls} ${kind}` });
  } else if (kind === "line") {
    node = svgNode("polyline", { points: screen.map(([x, y]) => `${x},${y}`).join(" "), class: `${cls} line` });
  } else {
    const d = screen.map(([x, y]) => `${x},${y}`).join(" ");
    node = svgNode(draft && kind === "polygon" ? "polyline" : "polygon", { points: d, class: cls });
  }
  if (colour) {
    node.style.stroke = colour;
    node.style.fill = kind === "line" ? "none" : translucent(colour, kind === "point" || kind === "text" ? 0.55 : 0.14);
  }
  if (title) {
    const tip = svgNode("title", {});
    tip.textContent = title;
    node.append(tip);
  }
  return node;
}

function annotationTitle(a) {
  const parts = [a.label_code ? labelName(a.label_code) : "", a.note, t("case.annotation.by", { author: a.author, at: formatDateTime(a.created_at) })];
  return parts.filter(Boolean).join(" — ");
}

function drawAnnotations(index) {
  const viewer = state.viewers[index];
  if (!viewer) return;
  const svg = viewer.pathfedSvg;
  const nodes = [];
  for (const a of state.annotations.get(state.current[index]) || []) {
    const colour = labelColour(a.label_code);
    const node = shapeNode(viewer, a.kind, a.points, { title: annotationTitle(a), colour });
    if (!node) continue;
    nodes.push(node);
    // Notes and kept measurements carry their text on the slide.
    if ((a.kind === "text" || a.kind === "line") && a.note) {
      const ends = a.points.map((p) => toScreen(viewer, p)).filter(Boolean);
      const x = ends.reduce((s, p) => s + p[0], 0) / ends.length;
      const y = ends.reduce((s, p) => s + p[1], 0) / ends.length;
      const text = svgNode("text", { x: x + 9, y: y + 4, class: "shape-text" });
      text.style.fill = colour;
      text.textContent = a.note;
      nodes.push(text);
    }
  }
  if (state.draft && state.draft.viewer === viewer) {
    const node = shapeNode(viewer, state.draft.kind, state.draft.points, { draft: true });
    if (node) nodes.push(node);
  }
  svg.replaceChildren(...nodes);
}

function redrawAll() {
  drawAnnotations(0);
  drawAnnotations(1);
}

async function loadAnnotations(slideId) {
  try {
    const { annotations } = await api(`${casePath}/slides/${enc(slideId)}/annotations`);
    state.annotations.set(slideId, annotations);
  } catch (err) {
    showError(err);
  }
  redrawAll();
  renderAnnotationList();
  renderLegend();
}

function swatch(colour) {
  const node = el("span", { class: "swatch", "aria-hidden": "true" });
  node.style.background = colour;
  return node;
}

function renderAnnotationList() {
  const slideId = state.current[0];
  const list = state.annotations.get(slideId) || [];
  const me = state.session.user.username;
  $("annotation-list").replaceChildren(
    ...list.map((a) => {
      const kind = KINDS.includes(a.kind) ? t(`case.kind.${a.kind}`) : a.kind;
      const label = a.label_code ? `: ${labelName(a.label_code)}` : "";
      const note = a.note ? ` — ${a.note}` : "";
      return el(
        "li",
        { dataset: { annotationId: a.id, label: a.label_code || "" } },
        swatch(labelColour(a.label_code)),
        `${kind}${label}${note} (${a.author}) `,
        a.author === me && canAnnotate()
          ? el("button", { type: "button", class: "button button-small button-quiet", text: t("case.annotation.delete"), onclick: () => deleteAnnotation(a.id, slideId) })
          : null,
      );
    }),
  );
  if (!list.length) $("annotation-list").replaceChildren(el("li", { class: "muted", text: t("case.annotation.none") }));
}

/** Which label has which colour, for the labels on the slides shown. */
function renderLegend() {
  const shown = [state.current[0], $("cell-b").hidden ? null : state.current[1]].filter(Boolean);
  const present = new Set();
  for (const id of shown) for (const a of state.annotations.get(id) || []) present.add(a.label_code || "");
  const labels = (state.case?.taxonomy_labels || []).filter((l) => present.has(l.code));
  const items = labels.map((l) =>
    el("li", { dataset: { label: l.code } }, swatch(labelColour(l.code)), el("span", { text: labelName(l.code) })),
  );
  if (present.has("")) {
    items.push(el("li", { dataset: { label: "" } }, swatch(UNLABELLED), el("span", { text: t("case.legend.unlabelled") })));
  }
  $("annotation-legend").replaceChildren(...items);
  $("annotation-legend").hidden = !items.length;
}

async function deleteAnnotation(id, slideId) {
  try {
    await api(`${casePath}/annotations/${enc(id)}`, { method: "DELETE" });
    await loadAnnotations(slideId);
  } catch (err) {
    showError(err);
  }
}

/** Saves a shape on the slide of viewer `index`; true when it was saved. */
async function saveShape(
  index,
  kind,
  points,
  note = $("annotation-note").value.trim(),
  labelCode = $("annotation-label").value || null,
) {
  const slideId = state.current[index];
  if (!slideId) return false;
  try {
    await api(`${casePath}/slides/${enc(slideId)}/annotations`, {
      method: "POST",
      json: { kind, points, label_code: labelCode, note },
    });
    showError("");
    await loadAnnotations(slideId);
    return true;
  } catch (err) {
    showError(err);
    return false;
  }
}

/**
 * Keeps a finished measurement as an annotation: its line or outline, the value as the note.
 * Never labelled: labelled outlines become training regions, and a measured area is not a
 * diagnosis of what it encloses.
 */
function keepMeasurement(result) {
  const index = state.viewers.indexOf(result.viewer);
  if (index < 0 || !canAnnotate()) return false;
  return saveShape(index, result.kind === "line" ? "line" : "polygon", result.points, result.text, null);
}

/** Chooses a tool ("" pans); false when this user may not use it now. */
function setTool(tool) {
  if (SHAPE_TOOLS.includes(tool) && !canAnnotate()) return false;
  if (!SHAPE_TOOLS.includes(tool) && !MEASURE_TOOLS.includes(tool) && tool !== "") return false;
  state.tool = tool;
  state.draft = null;
  closeTextPopup();
  state.measurer.setMode(MEASURE_TOOLS.includes(tool) ? tool : null);
  for (const button of document.querySelectorAll(".tool")) {
    button.classList.toggle("active", button.dataset.tool === tool);
    button.setAttribute("aria-pressed", button.dataset.tool === tool ? "true" : "false");
  }
  $("tool-hint").textContent = t(`case.hint.${tool || "pan"}`);
  redrawAll();
  return true;
}

/** Esc: the text note, then the shape or measurement being drawn, then the kept result. */
function escape() {
  if (closeTextPopup()) return true;
  if (state.draft) {
    state.draft = null;
    redrawAll();
    return true;
  }
  if (state.measurer.cancel()) return true;
  if (state.measurer.result) {
    state.measurer.clear();
    return true;
  }
  if (state.tool) return setTool("");
  return false;
}

/** Enter: closes the polygon being drawn (annotation or area). */
function enter() {
  const draft = state.draft;
  if (state.tool === "polygon" && draft) {
    state.draft = null;
    const index = state.viewers.indexOf(draft.viewer);
    if (draft.points.length >= 3 && index >= 0) saveShape(index, "polygon", draft.points);
    else redrawAll();
    return true;
  }
  return state.measurer.finish();
}

// ---- The text note: one click, one note, then back to panning ----------------------

function closeTextPopup() {
  const popup = $("text-note-popup");
  if (!popup) return false;
  popup.remove();
  return true;
}

function openTextPopup(index, at, position) {
  closeTextPopup();
  const input = el("input", { id: "text-note-input", size: 24, maxlength: 2000, "aria-label": t("case.text_note.label"), placeholder: t("case.text_note.placeholder") });
  const form = el(
    "form",
    { id: "text-note-popup", class: "text-note-popup" },
    input,
    el("button", { type: "submit", class: "button button-small", id: "text-note-save", text: t("case.text_note.save") }),
    el("button", { type: "button", class: "button button-small button-quiet", id: "text-note-cancel", text: t("case.text_note.cancel"), onclick: () => closeTextPopup() }),
  );
  form.style.left = `${Math.round(position.x)}px`;
  form.style.top = `${Math.round(position.y)}px`;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const note = input.value.trim();
    if (!note) {
      input.focus();
      return;
    }
    closeTextPopup();
    saveShape(index, "text", [at], note);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeTextPopup();
    }
  });
  state.viewers[index].element.parentElement.append(form);
  input.focus();
}

function attachDrawing(viewer, index) {
  viewer.addHandler("canvas-press", (event) => {
    if (state.tool !== "rectangle") return;
    const start = toImage(viewer, event.position);
    if (start) state.draft = { viewer, kind: "rectangle", start, points: [] };
  });
  viewer.addHandler("canvas-drag", (event) => {
    if (!state.tool) return;
    // While a tool is active the mouse draws instead of panning.
    event.preventDefaultAction = true;
    if (state.tool !== "rectangle" || !state.draft || state.draft.viewer !== viewer) return;
    const [x0, y0] = state.draft.start;
    const end = toImage(viewer, event.position);
    if (!end) return;
    const [x1, y1] = end;
    state.draft.points = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
    drawAnnotations(index);
  });
  viewer.addHandler("canvas-release", () => {
    if (state.tool !== "rectangle" || !state.draft || state.draft.viewer !== viewer) return;
    const points = state.draft.points;
    state.draft = null;
    if (points.length === 4 && points[0][0] !== points[2][0] && points[0][1] !== points[2][1]) {
      saveShape(index, "rectangle", [points[0], points[2]]);
    } else {
      drawAnnotations(index);
    }
  });
  viewer.addHandler("canvas-click", (event) => {
    if (!SHAPE_TOOLS.includes(state.tool)) return;
    event.preventDefaultAction = true;
    if (!event.quick) return;
    const at = toImage(viewer, event.position);
    if (!at) return;
    if (state.tool === "point") {
      saveShape(index, "point", [at]);
    } else if (state.tool === "text") {
      // One note per click: the tool goes back to panning at once, so a second click pans.
      const typed = $("annotation-note").value.trim();
      setTool("");
      if (typed) {
        $("annotation-note").value = "";
        saveShape(index, "text", [at], typed);
      } else {
        openTextPopup(index, at, event.position);
      }
    } else if (state.tool === "polygon") {
      if (!state.draft || state.draft.viewer !== viewer) state.draft = { viewer, kind: "polygon", points: [] };
      const last = state.draft.points[state.draft.points.length - 1];
      // A double-click also delivers its clicks; do not add the same vertex twice.
      if (!last || Math.hypot(last[0] - at[0], last[1] - at[1]) > 1e-6) state.draft.points.push(at);
      drawAnnotations(index);
    }
  });
  viewer.addHandler("canvas-double-click", (event) => {
    if (state.tool !== "polygon") return;
    event.preventDefaultAction = true;
    const draft = state.draft;
    state.draft = null;
    if (draft && draft.viewer === viewer && draft.points.length >= 3) saveShape(index, "polygon", draft.points);
    else drawAnnotations(index);
  });
}

// ---- Keys ---------------------------------------------------------------------------

function installKeys() {
  const focused = () => {
    const viewer = state.viewers[$("cell-b").hidden ? 0 : state.focus] || state.viewers[0];
    return viewer && viewer.world.getItemCount() ? [viewer] : [];
  };
  const common = commonBindings({ setTool, activeViewers: focused, escape, enter });
  const shapes = [
    { keys: ["b"], label: "B", action: t("case.keys.rectangle"), run: () => setTool("rectangle"), when: canAnnotate },
    { keys: ["g"], label: "G", action: t("case.keys.polygon"), run: () => setTool("polygon"), when: canAnnotate },
    { keys: ["o"], label: "O", action: t("case.keys.point"), run: () => setTool("point"), when: canAnnotate },
    { keys: ["t"], label: "T", action: t("case.keys.text"), run: () => setTool("text"), when: canAnnotate },
  ];
  const tabs = {
    keys: ["1", "2", "3", "4", "5", "6", "7", "8", "9"],
    label: "1–9",
    action: t("case.keys.slide"),
    run: (event) => showTab(Number(event.key) - 1),
  };
  const { openHelp } = installShortcuts([...common.slice(0, 3), ...shapes, ...common.slice(3), tabs]);
  $("shortcut-help-button").addEventListener("click", openHelp);
  const rotate = (fn) => () => {
    for (const viewer of focused()) fn(viewer);
  };
  $("rotate-left").addEventListener("click", rotate((v) => rotateBy(v, -90)));
  $("rotate-right").addEventListener("click", rotate((v) => rotateBy(v, 90)));
  $("rotate-reset").addEventListener("click", rotate(resetRotation));
}

// ---- AI support -----------------------------------------------------------------------

const pct = (x) => `${Math.round(x * 100)}%`;

/** The result the panel shows: the deployed model's, else the newest. */
function chosenResult(overview) {
  const results = overview.results || [];
  const deployed = overview.deployed;
  return results.find((r) => deployed && r.model === deployed.model && r.version === deployed.version) || results[0] || null;
}

// `background`: the page's own poll while a job runs, which does not keep the session from
// ending when idle.
async function loadAi(slideId, { background = false } = {}) {
  clearTimeout(state.aiPoll);
  const options = background ? { headers: BACKGROUND_HEADERS } : {};
  // The server says whether AI support is for this user (the hub pathologists who diagnose the
  // case); for anyone else nothing is asked for or shown.
  if (!state.case || !state.case.ai_support) {
    $("ai-section").hidden = true;
    return;
  }
  let overview;
  try {
    overview = await api(`/api/v1/slides/${enc(slideId)}/ai`, options);
  } catch {
    $("ai-section").hidden = true;
    return;
  }
  if (state.current[0] !== slideId) return; // the user moved on meanwhile
  const summary = chosenResult(overview);
  const previous = state.ai && state.ai.slideId === slideId ? state.ai : null;
  const same = previous && previous.summary && summary && previous.summary.result_url === summary.result_url && previous.summary.created_at === summary.created_at;
  state.ai = { slideId, overview, summary, result: same ? previous.result : null, overlay: previous ? previous.overlay : null };
  const ai = state.ai;
  if (summary && !ai.result) {
    try {
      ai.result = await api(summary.result_url, options);
    } catch (err) {
      showError(err);
    }
  }
  if (state.ai !== ai || state.current[0] !== slideId) return; // superseded meanwhile
  renderAi();
  syncOverlay();
  const busy = (overview.jobs || []).some((j) => j.status === "queued" || j.status === "running");
  if (busy) state.aiPoll = setTimeout(() => loadAi(slideId, { background: true }), 2000);
}

function jobLine(job) {
  if (!JOB_STATES.includes(job.status)) return null;
  const model = `${job.model}@${job.version}`;
  const text = t(`case.ai.job.${job.status}`, {
    model,
    progress: pct(job.progress || 0),
    note: job.progress_note || "",
    reason: job.error || t("case.ai.no_reason"),
  });
  return el("p", { class: job.status === "failed" ? "ai-job failed" : "ai-job", id: "ai-job", text });
}

function renderAi() {
  const ai = state.ai;
  const overview = ai.overview;
  const jobs = overview.jobs || [];
  const latest = jobs[0];
  const c = state.case;
  const canRun = Boolean(overview.deployed && c.ai_support);
  const show = overview.hidden || (overview.results || []).length || jobs.length || canRun;
  $("ai-section").hidden = !show;
  if (!show) return;
  // The catalogue holds the same notice as the server's `notice` field, in both languages.
  $("ai-notice").textContent = t("case.ai.notice");
  const body = [];
  if (overview.hidden) {
    body.push(el("p", { id: "ai-hidden", class: "muted", text: t("case.ai.hidden", { reason: overview.hidden_code === "until_own_read" ? t("case.ai.reason.until_own_read") : overview.hidden_reason || "" }) }));
  } else if (ai.summary) {
    const r = ai.summary;
    body.push(
      el(
        "p",
        { class: r.flagged ? "ai-score flagged" : "ai-score", id: "ai-score" },
        el("strong", { text: `${labelName(r.positive)}: ${r.score.toFixed(2)}` }),
        ` ${t("case.ai.suggests", { threshold: r.threshold, label: labelName(r.predicted) })}`,
      ),
      el(
        "p",
        { class: "muted" },
        `${t("case.ai.model")} `,
        el("a", { id: "ai-model-link", href: r.card_url, text: `${r.model}@${r.version}` }),
        ` · ${t("case.ai.patches", { n: r.patches })}`,
      ),
    );
    const toggle = el("input", { type: "checkbox", id: "ai-overlay-toggle" });
    toggle.checked = Boolean(ai.overlay) || $("ai-overlay-toggle")?.checked || false;
    toggle.addEventListener("change", () => syncOverlay());
    const opacity = el("input", { type: "range", id: "ai-opacity", min: "0.1", max: "1", step: "0.05", value: $("ai-opacity")?.value || "0.5", "aria-label": t("case.ai.opacity_label") });
    opacity.addEventListener("input", () => {
      if (state.ai && state.ai.overlay) state.ai.overlay.setOpacity(Number(opacity.value));
    });
    body.push(
      el(
        "div",
        { class: "ai-controls" },
        el("label", { class: "toggle" }, toggle, ` ${t("case.ai.overlay")}`),
        el("label", {}, `${t("case.ai.opacity")} `, opacity),
        el("span", { class: "muted" }, "0 ", el("span", { class: "ai-legend", title: t("case.ai.scale_title") }), " 1"),
      ),
    );
    const regions = (ai.result && ai.result.top_regions) || [];
    if (regions.length) {
      body.push(
        el("p", { class: "muted", text: t("case.ai.regions") }),
        el(
          "ul",
          { class: "ai-regions", id: "ai-regions" },
          ...regions.map((region, i) =>
            el("li", {}, el("button", { type: "button", class: "button button-small button-quiet ai-region", dataset: { region: String(i) }, text: `${i + 1}: ${region.score.toFixed(2)}`, onclick: () => jumpTo(region) })),
          ),
        ),
      );
    }
  } else if (!latest || latest.status === "succeeded") {
    body.push(el("p", { class: "muted", id: "ai-none", text: t("case.ai.none") }));
  }
  if (latest && latest.status !== "succeeded") body.push(jobLine(latest));
  if (latest && (latest.status === "queued" || latest.status === "running")) {
    body.push(el("button", { type: "button", class: "button button-small button-quiet", id: "ai-cancel", text: t("case.ai.cancel"), onclick: () => cancelAi(latest.id) }));
  }
  if (canRun && !(latest && (latest.status === "queued" || latest.status === "running"))) {
    body.push(el("button", { type: "button", class: "button button-small", id: "ai-run", text: ai.summary ? t("case.ai.run_again") : t("case.ai.run"), onclick: () => runAi() }));
  }
  $("ai-body").replaceChildren(...body.filter(Boolean));
}

async function runAi() {
  const slideId = state.current[0];
  try {
    await api(`/api/v1/slides/${enc(slideId)}/ai`, { method: "POST", json: {} });
    showError("");
  } catch (err) {
    showError(err);
  }
  loadAi(slideId);
}

async function cancelAi(jobId) {
  const slideId = state.current[0];
  try {
    await api(`/api/v1/slides/${enc(slideId)}/ai/jobs/${enc(jobId)}/cancel`, { method: "POST" });
  } catch (err) {
    showError(err);
  }
  loadAi(slideId);
}

/** Adds or removes the heatmap overlay in viewer A to match the toggle. */
function syncOverlay() {
  const viewer = state.viewers[0];
  const ai = state.ai;
  if (!viewer || !ai || ai.slideId !== state.current[0]) return;
  const wanted = !ai.overview.hidden && ai.summary && $("ai-overlay-toggle")?.checked;
  const url = wanted ? ai.summary.overlay_url : null;
  if (ai.overlay && (!url || ai.overlay.pathfedUrl !== url)) {
    viewer.world.removeItem(ai.overlay);
    ai.overlay = null;
  }
  // The slide must be open first: the overlay takes its place and size (world width 1).
  if (!url || ai.overlay || ai.adding || !viewer.world.getItemCount()) return;
  ai.adding = true;
  viewer.addTiledImage({
    tileSource: url,
    opacity: Number($("ai-opacity")?.value || 0.5),
    x: 0,
    y: 0,
    width: 1,
    success: (event) => {
      ai.adding = false;
      event.item.pathfedUrl = url;
      if (state.ai !== ai || ai.slideId !== state.current[0] || !$("ai-overlay-toggle")?.checked) {
        viewer.world.removeItem(event.item);
        return;
      }
      ai.overlay = event.item;
    },
    error: (event) => {
      ai.adding = false;
      showError(t("case.ai.overlay_failed", { reason: event.message || "—" }));
    },
  });
}

/** Centres viewer A on a region, with some of its surroundings. */
function jumpTo(region) {
  const viewer = state.viewers[0];
  const item = viewer && viewer.world.getItemAt(0);
  if (!item) return;
  const margin = Math.max(region.width, region.height) * 2;
  const rect = item.imageToViewportRectangle(region.x - margin, region.y - margin, region.width + 2 * margin, region.height + 2 * margin);
  viewer.viewport.fitBounds(rect);
  window.pathfedLastJump = region;
}

// ---- The case panel -----------------------------------------------------------------

const me = () => state.session.user.id;
const isReader = () => [state.case.primary_reader, state.case.second_reader].includes(me());
const CLOSED = ["signed_out", "cancelled"];

function canAnnotate() {
  const c = state.case;
  if (!c) return false;
  if (c.relation === "spoke") return c.status === "draft";
  return c.relation === "hub_pathologist" && isReader() && ["assigned", "diagnosed", "in_double_check", "adjudication", "ready_for_sign_out"].includes(c.status);
}

/** The spoke while drafting, or the case's assigned pathologist until the report is issued. */
function canEditLabels(c) {
  // As the server allows: the spoke until the hub takes the case, the first reader until the
  // double-check starts (nothing of theirs may reach the blinded second reader).
  if (c.relation === "spoke") return c.status === "draft" || c.status === "submitted";
  return c.relation === "hub_pathologist" && c.primary_reader === me() && ["assigned", "diagnosed"].includes(c.status);
}

function ageSex(c) {
  // Keys hold no "+": the band "90+" is the key "90_plus".
  const age = AGE_BANDS.includes(c.age_band) ? t(`case.age.${c.age_band.replace("+", "_plus")}`) : c.age_band;
  const sex = SEXES.includes(c.sex) ? t(`case.sex.${c.sex}`) : c.sex;
  return `${age} / ${sex}`;
}

// Organ names in both languages, from the server's list; a case may hold free text instead.
const organNames = new Map();

async function loadOrganNames() {
  try {
    const { organs } = await api("/api/v1/organs");
    for (const organ of organs) organNames.set(organ.code, organ);
  } catch {
    // Without the list the case shows the organ as stored.
  }
}

function organName(organ) {
  const known = organNames.get(organ);
  return known ? known[lang()] || organ : organ;
}

function details(c) {
  const rows = [
    [t("case.details.status"), statusText(c.status)],
    [t("case.details.from"), c.spoke_name],
    [t("case.details.to"), c.hub_name || t("case.details.default_hub")],
    c.patient_id ? [t("case.details.patient_id"), c.patient_id] : null,
    [t("case.details.age_sex"), ageSex(c)],
    [t("case.details.organ"), organName(c.organ)],
    [t("case.details.specimen"), c.specimen],
    [t("case.details.question"), c.clinical_question],
    [t("case.details.urgency"), URGENCIES.includes(c.urgency) ? t(`case.urgency.${c.urgency}`) : c.urgency],
    [t("case.details.submitted"), formatDateTime(c.submitted_at)],
    c.final_code ? [t("case.details.final"), `${labelName(c.final_code)} (${c.final_code})`] : null,
  ].filter(Boolean);
  $("case-details").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

/** Runs a case action and shows the case as it now is; true when the server accepted it. */
async function act(path, options = {}) {
  showError("");
  try {
    await api(`${casePath}${path}`, { method: "POST", ...options });
    await refresh();
    return true;
  } catch (err) {
    showError(err);
    return false;
  }
}

function actions(c) {
  const buttons = [];
  const add = (id, text, onclick, cls = "button") => buttons.push(el("button", { type: "button", class: cls, id, text, onclick }));
  if (c.relation === "spoke") {
    if (c.status === "draft") add("submit-case", t("case.action.submit"), () => act("/submit"));
    if (["draft", "submitted"].includes(c.status)) add("cancel-case", t("case.action.cancel"), () => act("/cancel"), "button button-quiet");
  }
  if (c.relation === "hub_pathologist") {
    if (c.status === "submitted") add("claim-case", t("case.action.claim"), () => act("/claim"));
    if (c.status === "diagnosed" && c.primary_reader !== me()) add("take-double-check", t("case.action.take_double_check"), () => act("/double-check"));
    if (c.status === "ready_for_sign_out" && isReader()) add("sign-out", t("case.action.sign_out"), () => openSignOut());
  }
  const hubStaff = c.relation === "hub_pathologist" || c.relation === "hub_admin";
  if (hubStaff && ["submitted", "assigned", "diagnosed"].includes(c.status)) {
    // Give the read (or, once read, the double-check) to a colleague by user name.
    const doubleCheck = c.status === "diagnosed";
    const input = el("input", {
      id: "assign-user",
      size: 12,
      placeholder: t("case.assign.placeholder"),
      "aria-label": doubleCheck ? t("case.assign.double_check_label") : t("case.assign.case_label"),
    });
    const assign = () => act(doubleCheck ? "/double-check" : "/assign", { json: { username: input.value.trim() } });
    const text = doubleCheck ? t("case.assign.double_check") : t("case.assign.case");
    buttons.push(el("span", { class: "assign" }, input, el("button", { type: "button", class: "button button-quiet", id: "assign-button", text, onclick: assign })));
  }
  $("case-actions").replaceChildren(...buttons);
}

// ---- Sign-out: the report as it will be issued, then confirm ------------------------

async function openSignOut() {
  const dialog = $("signout-dialog");
  const frame = $("signout-preview");
  const status = $("signout-status");
  $("signout-confirm").disabled = true;
  status.textContent = t("case.signout.loading");
  frame.srcdoc = "";
  frame.hidden = true;
  if (!dialog.open) dialog.showModal();
  try {
    const response = await fetch(`${casePath}/report/preview`, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) throw await errorFromResponse(response);
    const html = await response.text();
    if (!dialog.open) return;
    // Sandboxed without scripts or our origin: the report is shown, never run.
    frame.srcdoc = html;
    frame.hidden = false;
    status.textContent = "";
    $("signout-confirm").disabled = false;
    $("signout-confirm").focus();
  } catch (err) {
    status.textContent = t("case.signout.failed", { reason: errorText(err) });
  }
}

async function confirmSignOut() {
  $("signout-confirm").disabled = true;
  const codeRow = $("signout-code-row");
  const code = $("signout-code").value.trim();
  // The hospital's policy may ask for a fresh second factor: the dialog stays open for the code.
  const options = codeRow.hidden || !code ? {} : { json: { second_factor_code: code } };
  try {
    await api(`${casePath}/sign-out`, { method: "POST", ...options });
  } catch (err) {
    if (err.code === "fresh_second_factor_required" || err.code === "invalid_second_factor") {
      codeRow.hidden = false;
      $("signout-code").value = "";
      $("signout-code").focus();
      $("signout-status").textContent = errorText(err);
      $("signout-confirm").disabled = false;
      return;
    }
    $("signout-dialog").close();
    showError(err);
    return;
  }
  codeRow.hidden = true;
  $("signout-code").value = "";
  $("signout-dialog").close();
  showError("");
  await refresh();
}

// ---- Diagnosis forms -----------------------------------------------------------------

/** Which diagnosis form (if any) this user has in this state. */
function readMode(c) {
  if (c.relation !== "hub_pathologist") return null;
  if (["assigned", "diagnosed"].includes(c.status) && c.primary_reader === me()) return "primary";
  if (c.status === "in_double_check" && c.second_reader === me()) return "second";
  if (c.status === "adjudication" && isReader()) return "adjudication";
  if (c.status === "signed_out" && isReader()) return "amend";
  return null;
}

function codeOptions(c, empty) {
  return [el("option", { value: "", text: empty }), ...c.taxonomy_labels.map((l) => el("option", { value: l.code, text: `${labelName(l.code)} (${l.code})` }))];
}

function readForm(c) {
  const mode = readMode(c);
  const form = $("read-form");
  $("read-section").hidden = !mode;
  if (!mode) {
    form.dataset.mode = "";
    state.amending = false;
    return;
  }
  const sameStep = form.dataset.mode === mode;
  if (!sameStep) state.amending = false;
  $("read-heading").textContent = t(`case.read.mode.${mode}`);
  // An issued report changes only on purpose: the form stays folded behind "Amend".
  const amend = mode === "amend";
  $("amend-intro").hidden = !amend || state.amending;
  form.hidden = amend && !state.amending;
  $("amend-cancel").hidden = !amend;
  $("read-reason-field").hidden = !amend;
  $("read-reason").required = amend;
  // The second-factor code is asked for only when the server asks (the hospital's policy).
  if (!amend || !state.amending) {
    $("amend-code-field").hidden = true;
    $("amend-code").value = "";
  }
  $("read-submit").textContent = amend ? t("case.amend.submit") : t("case.read.save");

  // What the user chose but has not saved survives a refresh of the same step.
  const previousCode = sameStep ? $("read-code").value : "";
  const previousSlides = new Map(sameStep ? [...document.querySelectorAll("#read-slides select")].map((s) => [s.dataset.slideId, s.value]) : []);
  $("read-code").replaceChildren(...codeOptions(c, t("case.read.choose")));
  if (!sameStep) {
    // A new step starts from an empty form (the amendment from the signed diagnosis).
    $("read-findings").value = amend ? c.final_findings || "" : "";
    $("read-reason").value = "";
  }
  $("read-code").value = previousCode || (amend && !sameStep ? c.final_code || "" : "");
  const mine = (c.reads || []).find((r) => r.reader_id === me() && ((mode === "primary" && r.kind === "primary") || (mode === "second" && r.kind === "second")));
  // The saved read fills a form opened for this step; a refresh of the same step keeps what
  // the reader has typed since (it equals the saved read right after saving).
  if (mine && !sameStep) {
    $("read-code").value = mine.code;
    $("read-findings").value = mine.findings;
  }
  // Per-slide diagnoses for the first and second reads, as saved (or as chosen, unsaved).
  const saved = new Map((mine?.slides || []).map((s) => [s.slide_id, s]));
  state.savedSlideFindings = new Map([...saved].map(([id, s]) => [id, s.findings || ""]));
  const perSlide = mode === "primary" || mode === "second";
  $("read-slides").replaceChildren(
    ...(perSlide
      ? caseSlides(c)
          .filter((s) => state.slides.has(s.id))
          .map(({ id }) => {
            const select = el("select", { id: `slide-code-${id}`, dataset: { slideId: id } }, ...codeOptions(c, t("case.read.no_slide_code")));
            select.value = previousSlides.has(id) ? previousSlides.get(id) : saved.get(id)?.code || "";
            return el("div", { class: "field" }, el("label", { for: `slide-code-${id}`, text: t("case.read.slide", { name: slideName(id) }) }), select);
          })
      : []),
  );
  form.dataset.mode = mode;
}

async function submitRead(event) {
  event.preventDefault();
  const mode = $("read-form").dataset.mode;
  const code = $("read-code").value;
  if (!code) {
    showError(t("case.read.need_code"));
    return;
  }
  const findings = $("read-findings").value;
  const reason = $("read-reason").value.trim();
  if (mode === "amend" && !reason) {
    showError(t("case.amend.need_reason"));
    $("read-reason").focus();
    return;
  }
  if (mode === "amend") {
    await submitAmendment({ code, findings, reason });
    return;
  }
  const slides = [...document.querySelectorAll("#read-slides select")]
    .filter((s) => s.value)
    .map((s) => ({ slide_id: s.dataset.slideId, code: s.value, findings: state.savedSlideFindings.get(s.dataset.slideId) || "" }));
  const requests = {
    primary: ["/reads/primary", "PUT", { code, findings, slides }],
    second: ["/reads/second", "PUT", { code, findings, slides }],
    adjudication: ["/adjudication", "POST", { code, findings, note: "" }],
  };
  const [path, method, json] = requests[mode];
  await act(path, { method, json });
}

/** Issues the amended report; asks for a second-factor code when the hospital's policy wants one, as a sign-out does. */
async function submitAmendment(json) {
  const codeField = $("amend-code-field");
  const secondFactor = $("amend-code").value.trim();
  const body = !codeField.hidden && secondFactor ? { ...json, second_factor_code: secondFactor } : json;
  showError("");
  try {
    await api(`${casePath}/amendments`, { method: "POST", json: body });
  } catch (err) {
    if (err.code === "fresh_second_factor_required" || err.code === "invalid_second_factor") {
      // The form stays as typed; only the code is asked for.
      codeField.hidden = false;
      $("amend-code").value = "";
      $("amend-code").focus();
    }
    showError(err);
    return;
  }
  state.amending = false;
  $("read-reason").value = "";
  try {
    await refresh();
  } catch (err) {
    showError(err);
  }
  readForm(state.case);
}

function reads(c) {
  const list = c.reads || [];
  if (!list.length) {
    $("reads").replaceChildren(el("p", { class: "muted", text: t("case.reads.none") }));
    return;
  }
  $("reads").replaceChildren(
    ...list.map((r) =>
      el(
        "div",
        { class: "read", dataset: { kind: r.kind } },
        el("strong", { text: r.kind === "primary" ? t("case.reads.primary", { reader: r.reader }) : t("case.reads.second", { reader: r.reader }) }),
        el("div", { text: `${labelName(r.code)} (${r.code})` }),
        r.findings ? el("p", { class: "read-findings", text: r.findings }) : null,
        ...(r.slides || [])
          .filter((s) => s.code)
          .map((s) => el("div", { class: "muted read-slide", dataset: { slideId: s.slide_id }, text: t("case.reads.slide", { name: slideName(s.slide_id), label: labelName(s.code) }) })),
      ),
    ),
  );
}

/** The diagnosis as reported, read-only, once the report is out. */
function finalReport(c) {
  const shown = c.status === "signed_out" && c.final_code;
  $("final-section").hidden = !shown;
  if (!shown) return;
  const rows = [
    [t("case.final.code"), `${labelName(c.final_code)} (${c.final_code})`],
    c.final_findings ? [t("case.final.findings"), c.final_findings] : null,
    c.final_note ? [t("case.final.note"), c.final_note] : null,
    [t("case.final.closed"), formatDateTime(c.closed_at)],
  ].filter(Boolean);
  $("final-report").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

function reports(c) {
  const list = c.reports || [];
  $("reports").replaceChildren(
    ...(list.length
      ? list.map((r) =>
          el(
            "li",
            {},
            `${t("case.reports.version", { version: r.version, by: r.signed_by, at: formatDateTime(r.signed_at) })} `,
            el("a", { href: `${casePath}/reports/${r.version}/report.html`, target: "_blank", class: "report-html", text: "HTML" }),
            " · ",
            el("a", { href: `${casePath}/reports/${r.version}/report.pdf`, target: "_blank", class: "report-pdf", text: "PDF" }),
            r.amendment_reason ? el("div", { class: "muted", text: t("case.reports.amended", { reason: r.amendment_reason }) }) : null,
          ),
        )
      : [el("li", { class: "muted", text: t("case.reports.none") })]),
  );
}

// ---- Slides of the case: attach, and their specimen/block labels ----------------------

async function saveSlideLabel(slideId, input) {
  try {
    await api(`${casePath}/slides/${enc(slideId)}`, { method: "PUT", json: { label: input.value.trim() } });
    showError("");
    await refresh();
  } catch (err) {
    showError(err);
  }
}

function slideRows(c) {
  const editable = canEditLabels(c);
  return caseSlides(c).map(({ id, label }) => {
    const file = state.slides.get(id)?.filename || id;
    if (!editable) {
      return el("li", { dataset: { slideId: id } }, label ? el("strong", { text: label }) : null, label ? " " : null, file);
    }
    const input = el("input", {
      id: `slide-label-${id}`,
      class: "slide-label-input",
      size: 8,
      maxlength: 40,
      value: label || "",
      placeholder: t("case.slides.label_placeholder"),
      "aria-label": t("case.slides.label_of", { file }),
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        saveSlideLabel(id, input);
      }
    });
    return el(
      "li",
      { dataset: { slideId: id } },
      input,
      " ",
      el("button", { type: "button", class: "button button-small button-quiet slide-label-save", id: `slide-label-save-${id}`, text: t("case.slides.label_save"), onclick: () => saveSlideLabel(id, input) }),
      " ",
      el("span", { class: "muted", text: file }),
    );
  });
}

async function attachSection(c) {
  const attaching = c.relation === "spoke" && c.status === "draft";
  const labelling = canEditLabels(c);
  $("attach-section").hidden = !attaching && !labelling;
  $("attach-controls").hidden = !attaching;
  $("case-slide-list").replaceChildren(...slideRows(c));
  if (!attaching) return;
  $("upload-into-case").href = `/upload?case=${enc(c.id)}`;
  const attached = new Set(caseSlides(c).map((s) => s.id));
  try {
    const { slides } = await api("/api/v1/slides");
    const free = slides.filter((s) => !attached.has(s.id));
    $("attach-select").replaceChildren(...free.map((s) => el("option", { value: s.id, text: s.filename })));
    $("attach-button").disabled = !free.length;
  } catch (err) {
    showError(err);
  }
}

async function loadSlides(c) {
  const ids = caseSlides(c).map((s) => s.id);
  for (const id of ids) {
    if (state.slides.has(id)) continue;
    try {
      state.slides.set(id, await api(`/api/v1/slides/${enc(id)}`));
    } catch (err) {
      showError(err);
    }
  }
  for (const id of [...state.slides.keys()]) if (!ids.includes(id)) state.slides.delete(id);
}

function annotationLabels(c) {
  const chosen = $("annotation-label").value;
  $("annotation-label").replaceChildren(
    el("option", { value: "", text: t("case.annotation.no_label") }),
    ...c.taxonomy_labels.map((l) => el("option", { value: l.code, text: labelName(l.code) })),
  );
  $("annotation-label").value = chosen;
}

async function refresh() {
  let c;
  try {
    c = await api(casePath);
  } catch (err) {
    $("case-title").textContent = t("case.unavailable");
    showError(err);
    return;
  }
  state.case = c;
  window.pathfedCase = c;
  state.labels = new Map(caseSlides(c).map((s) => [s.id, s.label]).filter(([, label]) => label));
  const short = c.id.slice(0, 8);
  document.title = t("case.page_title_of", { id: short });
  $("case-title").textContent = t("case.title_of", { id: short });
  $("case-status").replaceChildren(statusBadge(c.status, { id: "status-badge" }));
  details(c);
  actions(c);
  finalReport(c);
  reads(c);
  reports(c);
  annotationLabels(c);
  const annotating = canAnnotate();
  $("shape-tools").hidden = !annotating;
  $("annotation-fields").hidden = !annotating;
  if (!annotating && SHAPE_TOOLS.includes(state.tool)) setTool("");
  state.measurer.render();
  // Admins assign work; slides are for pathologists.
  $("annotation-tools").hidden = c.relation === "hub_admin";
  if (c.relation === "hub_admin") {
    readForm(c);
    await attachSection(c);
    return;
  }
  await loadSlides(c);
  readForm(c);
  await attachSection(c);
  renderTabs();
  const ids = caseSlides(c).map((s) => s.id);
  if (!state.current[0] || !state.slides.has(state.current[0])) {
    const first = ids.find((id) => state.slides.has(id));
    if (first) show(0, first);
  } else {
    renderLabel(state.slides.get(state.current[0]));
    await loadAnnotations(state.current[0]);
    await loadAi(state.current[0]);
  }
}

async function main() {
  const session = await requireSession({ active: "cases", areas: ["case", "viewer"] });
  if (!session) return;
  state.session = session;
  await loadOrganNames();
  if (!caseId) {
    showError(t("case.error.no_case"));
    return;
  }
  state.measurer = new Measurer({
    readout: $("measurement"),
    extra: $("measurement-extra"),
    panel: $("measure-panel"),
    keepButton: $("measurement-keep"),
    clearButton: $("measurement-clear"),
    mppOf: (viewer) => {
      const index = state.viewers.indexOf(viewer);
      return index < 0 ? null : slideMpp(state.slides.get(state.current[index]));
    },
    onKeep: keepMeasurement,
    canKeep: canAnnotate,
  });
  window.pathfedMeasurer = state.measurer;
  state.viewers[0] = makeViewer(0);
  window.pathfedViewer = state.viewers[0];
  window.pathfedViewers = state.viewers;
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  setTool("");
  installKeys();
  $("side-by-side").addEventListener("change", toggleSideBySide);
  $("read-form").addEventListener("submit", submitRead);
  $("label-details").addEventListener("toggle", openLabel);
  $("amend-button").addEventListener("click", () => {
    state.amending = true;
    readForm(state.case);
    $("read-reason").focus();
  });
  $("amend-cancel").addEventListener("click", () => {
    state.amending = false;
    readForm(state.case);
  });
  $("signout-confirm").addEventListener("click", confirmSignOut);
  $("signout-cancel").addEventListener("click", () => $("signout-dialog").close());
  $("attach-button").addEventListener("click", async () => {
    const slideId = $("attach-select").value;
    if (!slideId) return;
    await act("/slides", { json: { slide_id: slideId } });
  });
  await refresh();
}

main();
