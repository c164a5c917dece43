// Case workspace: the case's slides in one or two synchronised viewers with
// annotation tools, and the panel with case data, the actions the user may
// take in the case's state, the diagnosis forms, reads, reports, the slide label
// where the server gives it, and the AI support panel (scores, heatmap overlay,
// top regions; decision support only) for the hub pathologists who diagnose the
// case, never for the referring spoke.
import { api, el, formatDate, requireSession, showError, statusBadge } from "/static/app.js";

const $ = (id) => document.getElementById(id);
const caseId = new URLSearchParams(window.location.search).get("id");
const casePath = `/api/v1/cases/${encodeURIComponent(caseId || "")}`;

// Hooks for the browser test (and debugging from the console).
window.pathfedTilesLoaded = 0;
window.pathfedViewer = null;

const state = {
  session: null,
  case: null,
  slides: new Map(), // id → slide metadata
  current: [null, null], // slide shown in viewer A and B
  viewers: [null, null],
  annotations: new Map(), // slide id → annotations
  tool: "",
  draft: null, // the shape being drawn: { viewer, kind, points }
  ai: null, // AI support on the slide in viewer A: { slideId, overview, result, overlay }
  aiPoll: null,
};

const pretty = (s) => String(s || "").replaceAll("_", " ");

function labelName(code) {
  const label = (state.case?.taxonomy_labels || []).find((l) => l.code === code);
  return label ? label.name : code;
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
  viewer.addHandler("open-failed", (event) => showError(`The slide could not be opened: ${event.message || "unknown error"}`));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.classList.add("annotation-layer");
  viewer.canvas.append(svg);
  viewer.pathfedSvg = svg;
  for (const name of ["open", "animation", "animation-finish", "resize", "update-viewport"]) {
    viewer.addHandler(name, () => drawAnnotations(index));
  }
  if (index === 0) viewer.addHandler("open", () => syncOverlay());
  viewer.addHandler("viewport-change", () => syncFrom(index));
  attachDrawing(viewer, index);
  return viewer;
}

let syncing = false;
function syncFrom(index) {
  const other = state.viewers[1 - index];
  if (syncing || !other || $("cell-b").hidden || !$("sync-nav").checked) return;
  const source = state.viewers[index].viewport;
  syncing = true;
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
    state.viewers[index].open(slide.dzi_url);
  }
  renderTabs();
  loadAnnotations(slideId);
  if (index === 0) {
    renderLabel(slide);
    loadAi(slideId);
  }
}

// ---- Slide label ------------------------------------------------------------------

/** The label of the slide in viewer A, where the server gives it to this user (`label_url`):
 * the spoke's staff, and the hub pathologists reading the case unless the spoke keeps its
 * labels to itself. It may carry the patient's name and id, so it stays folded away and is
 * only fetched when someone opens it. */
function renderLabel(slide) {
  const url = (slide && slide.label_url) || "";
  const details = $("label-details");
  if (details.dataset.url === url) return;
  details.dataset.url = url;
  details.open = false;
  details.querySelector("img")?.remove();
  $("label-section").hidden = !url;
  $("label-summary").textContent = url ? `Show the label of ${slide.filename}` : "Show the label";
}

function openLabel() {
  const details = $("label-details");
  const url = details.dataset.url;
  if (!details.open || !url || details.querySelector("img")) return;
  const slide = state.slides.get(state.current[0]);
  const img = el("img", { id: "label-image", src: url, alt: `Label of ${slide ? slide.filename : "the slide"}` });
  // In the panel the image sits in the flow, not over it as in the viewer's header.
  img.style.position = "static";
  img.style.maxWidth = "100%";
  details.append(img);
}

function renderTabs() {
  const tabs = [...state.slides.values()].map((slide) =>
    el("button", {
      type: "button",
      role: "tab",
      class: state.current[0] === slide.id ? "tab active" : "tab",
      "aria-selected": state.current[0] === slide.id ? "true" : "false",
      title: slide.filename,
      text: slide.filename,
      dataset: { slideId: slide.id },
      onclick: () => show(0, slide.id),
    }),
  );
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
  }
}

// ---- Annotations ------------------------------------------------------------------

function toScreen(viewer, [x, y]) {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const p = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  return [p.x, p.y];
}

function toImage(viewer, position) {
  const item = viewer.world.getItemAt(0);
  if (!item) return null;
  const p = item.viewerElementToImageCoordinates(position);
  const size = item.getContentSize();
  // Clamp to the slide so a drag past the edge still gives a valid shape.
  return [Math.min(Math.max(p.x, 0), size.x), Math.min(Math.max(p.y, 0), size.y)];
}

function svgNode(name, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function shapeNode(viewer, kind, points, { draft = false, title = "" } = {}) {
  const screen = points.map((p) => toScreen(viewer, p)).filter(Boolean);
  if (!screen.length) return null;
  const cls = draft ? "shape draft" : "shape";
  let node;
  if (kind === "point" || kind === "text") {
    node = svgNode("circle", { cx: screen[0][0], cy: screen[0][1], r: 6, class: `${cls} ${kind}` });
  } else {
    const d = screen.map(([x, y]) => `${x},${y}`).join(" ");
    node = svgNode(draft && kind === "polygon" ? "polyline" : "polygon", { points: d, class: cls });
  }
  if (title) {
    const tip = svgNode("title", {});
    tip.textContent = title;
    node.append(tip);
  }
  return node;
}

function drawAnnotations(index) {
  const viewer = state.viewers[index];
  if (!viewer) return;
  const svg = viewer.pathfedSvg;
  const nodes = [];
  for (const a of state.annotations.get(state.current[index]) || []) {
    const title = [a.label_code ? labelName(a.label_code) : "", a.note, `by ${a.author}`].filter(Boolean).join(" — ");
    const node = shapeNode(viewer, a.kind, a.points, { title });
    if (node) nodes.push(node);
    if (node && a.kind === "text") {
      const at = toScreen(viewer, a.points[0]);
      const text = svgNode("text", { x: at[0] + 9, y: at[1] + 4, class: "shape-text" });
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
    const { annotations } = await api(`${casePath}/slides/${encodeURIComponent(slideId)}/annotations`);
    state.annotations.set(slideId, annotations);
  } catch (err) {
    showError(err.message);
  }
  redrawAll();
  renderAnnotationList();
}

function renderAnnotationList() {
  const slideId = state.current[0];
  const list = state.annotations.get(slideId) || [];
  const me = state.session.user.username;
  $("annotation-list").replaceChildren(
    ...list.map((a) =>
      el(
        "li",
        { dataset: { annotationId: a.id } },
        `${pretty(a.kind)}${a.label_code ? `: ${labelName(a.label_code)}` : ""}${a.note ? ` — ${a.note}` : ""} (${a.author}) `,
        a.author === me && canAnnotate()
          ? el("button", { type: "button", class: "button button-small button-quiet", text: "Delete", onclick: () => deleteAnnotation(a.id, slideId) })
          : null,
      ),
    ),
  );
  if (!list.length) $("annotation-list").replaceChildren(el("li", { class: "muted", text: "None on this slide." }));
}

async function deleteAnnotation(id, slideId) {
  try {
    await api(`${casePath}/annotations/${encodeURIComponent(id)}`, { method: "DELETE" });
    await loadAnnotations(slideId);
  } catch (err) {
    showError(err.message);
  }
}

async function saveShape(index, kind, points) {
  const slideId = state.current[index];
  const note = $("annotation-note").value.trim();
  if (kind === "text" && !note) {
    showError("Type the note first, then click where it belongs.");
    return;
  }
  try {
    await api(`${casePath}/slides/${encodeURIComponent(slideId)}/annotations`, {
      method: "POST",
      json: { kind, points, label_code: $("annotation-label").value || null, note },
    });
    showError("");
    await loadAnnotations(slideId);
  } catch (err) {
    showError(err.message);
  }
}

const HINTS = {
  "": "",
  rectangle: "Drag across the region.",
  polygon: "Click the corners; double-click to finish.",
  point: "Click the spot.",
  text: "Type a note, then click where it belongs.",
};

function setTool(tool) {
  state.tool = tool;
  state.draft = null;
  for (const button of document.querySelectorAll(".tool")) {
    button.classList.toggle("active", button.dataset.tool === tool);
    button.setAttribute("aria-pressed", button.dataset.tool === tool ? "true" : "false");
  }
  $("tool-hint").textContent = HINTS[tool] || "";
  redrawAll();
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
    if (!state.tool || !event.quick) return;
    event.preventDefaultAction = true;
    const at = toImage(viewer, event.position);
    if (!at) return;
    if (state.tool === "point" || state.tool === "text") {
      saveShape(index, state.tool, [at]);
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

// ---- AI support -----------------------------------------------------------------------

const enc = encodeURIComponent;
const pct = (x) => `${Math.round(x * 100)}%`;

/** The result the panel shows: the deployed model's, else the newest. */
function chosenResult(overview) {
  const results = overview.results || [];
  const deployed = overview.deployed;
  return results.find((r) => deployed && r.model === deployed.model && r.version === deployed.version) || results[0] || null;
}

async function loadAi(slideId) {
  clearTimeout(state.aiPoll);
  // The server says whether AI support is for this user (the hub pathologists who diagnose the
  // case); for anyone else nothing is asked for or shown.
  if (!state.case || !state.case.ai_support) {
    $("ai-section").hidden = true;
    return;
  }
  let overview;
  try {
    overview = await api(`/api/v1/slides/${enc(slideId)}/ai`);
  } catch (err) {
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
      ai.result = await api(summary.result_url);
    } catch (err) {
      showError(err.message);
    }
  }
  if (state.ai !== ai || state.current[0] !== slideId) return; // superseded meanwhile
  renderAi();
  syncOverlay();
  const busy = (overview.jobs || []).some((j) => j.status === "queued" || j.status === "running");
  if (busy) state.aiPoll = setTimeout(() => loadAi(slideId), 2000);
}

function jobLine(job) {
  const model = `${job.model}@${job.version}`;
  if (job.status === "queued") return el("p", { class: "ai-job", id: "ai-job", text: `${model}: waiting for a worker…` });
  if (job.status === "running") return el("p", { class: "ai-job", id: "ai-job", text: `${model}: analysing, ${pct(job.progress || 0)} (${job.progress_note || ""})` });
  if (job.status === "failed") return el("p", { class: "ai-job failed", id: "ai-job", text: `${model} failed: ${job.error || "no reason recorded"}` });
  if (job.status === "cancelled") return el("p", { class: "ai-job", id: "ai-job", text: `${model}: cancelled` });
  return null;
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
  $("ai-notice").textContent = overview.notice;
  const body = [];
  if (overview.hidden) {
    body.push(el("p", { id: "ai-hidden", class: "muted", text: `AI support is hidden: ${overview.hidden_reason}.` }));
  } else if (ai.summary) {
    const r = ai.summary;
    const positive = labelName(r.positive);
    body.push(
      el(
        "p",
        { class: r.flagged ? "ai-score flagged" : "ai-score", id: "ai-score" },
        el("strong", { text: `${positive}: ${r.score.toFixed(2)}` }),
        ` (threshold ${r.threshold}) — the model suggests ${labelName(r.predicted)}`,
      ),
      el("p", { class: "muted" }, "Model ", el("a", { id: "ai-model-link", href: r.card_url, text: `${r.model}@${r.version}` }), ` · ${r.patches} patches`),
    );
    const toggle = el("input", { type: "checkbox", id: "ai-overlay-toggle" });
    toggle.checked = Boolean(ai.overlay) || $("ai-overlay-toggle")?.checked || false;
    toggle.addEventListener("change", () => syncOverlay());
    const opacity = el("input", { type: "range", id: "ai-opacity", min: "0.1", max: "1", step: "0.05", value: $("ai-opacity")?.value || "0.5", "aria-label": "Heatmap opacity" });
    opacity.addEventListener("input", () => {
      if (state.ai && state.ai.overlay) state.ai.overlay.setOpacity(Number(opacity.value));
    });
    body.push(
      el(
        "div",
        { class: "ai-controls" },
        el("label", { class: "toggle" }, toggle, " Heatmap overlay"),
        el("label", {}, "Opacity ", opacity),
        el("span", { class: "muted" }, "0 ", el("span", { class: "ai-legend", title: "score from 0 (blue) to 1 (red)" }), " 1"),
      ),
    );
    const regions = (ai.result && ai.result.top_regions) || [];
    if (regions.length) {
      body.push(
        el("p", { class: "muted", text: "Highest-scoring regions:" }),
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
    body.push(el("p", { class: "muted", id: "ai-none", text: "No AI result for this slide yet." }));
  }
  if (latest && latest.status !== "succeeded") body.push(jobLine(latest));
  if (latest && (latest.status === "queued" || latest.status === "running")) {
    body.push(el("button", { type: "button", class: "button button-small button-quiet", id: "ai-cancel", text: "Cancel", onclick: () => cancelAi(latest.id) }));
  }
  if (canRun && !(latest && (latest.status === "queued" || latest.status === "running"))) {
    body.push(el("button", { type: "button", class: "button button-small", id: "ai-run", text: ai.summary ? "Run the model again" : "Run the model", onclick: () => runAi() }));
  }
  $("ai-body").replaceChildren(...body.filter(Boolean));
}

async function runAi() {
  const slideId = state.current[0];
  try {
    await api(`/api/v1/slides/${enc(slideId)}/ai`, { method: "POST", json: {} });
    showError("");
  } catch (err) {
    showError(err.message);
  }
  loadAi(slideId);
}

async function cancelAi(jobId) {
  const slideId = state.current[0];
  try {
    await api(`/api/v1/slides/${enc(slideId)}/ai/jobs/${enc(jobId)}/cancel`, { method: "POST" });
  } catch (err) {
    showError(err.message);
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
      showError(`The heatmap could not be shown: ${event.message || "unknown error"}`);
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

function canAnnotate() {
  const c = state.case;
  if (c.relation === "spoke") return c.status === "draft";
  return c.relation === "hub_pathologist" && isReader() && ["assigned", "diagnosed", "in_double_check", "adjudication", "ready_for_sign_out"].includes(c.status);
}

function details(c) {
  const rows = [
    ["Status", pretty(c.status)],
    ["From", c.spoke_name],
    ["To", c.hub_name || "(the spoke's default hub)"],
    c.patient_id ? ["Patient id", c.patient_id] : null,
    ["Age band / sex", `${c.age_band} / ${c.sex}`],
    ["Organ", c.organ],
    ["Specimen", c.specimen],
    ["Question", c.clinical_question],
    ["Urgency", c.urgency],
    ["Submitted", formatDate(c.submitted_at)],
    c.final_code ? ["Final diagnosis", `${labelName(c.final_code)} (${c.final_code})`] : null,
  ].filter(Boolean);
  $("case-details").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
}

async function act(path, options = {}) {
  showError("");
  try {
    await api(`${casePath}${path}`, { method: "POST", ...options });
    await refresh();
  } catch (err) {
    showError(err.message);
  }
}

function actions(c) {
  const buttons = [];
  const add = (id, text, onclick, cls = "button") => buttons.push(el("button", { type: "button", class: cls, id, text, onclick }));
  if (c.relation === "spoke") {
    if (c.status === "draft") add("submit-case", "Submit to hub", () => act("/submit"));
    if (["draft", "submitted"].includes(c.status)) add("cancel-case", "Cancel case", () => act("/cancel"), "button button-quiet");
  }
  if (c.relation === "hub_pathologist") {
    if (c.status === "submitted") add("claim-case", "Claim case", () => act("/claim"));
    if (c.status === "diagnosed" && c.primary_reader !== me()) add("take-double-check", "Take double-check", () => act("/double-check"));
    if (c.status === "ready_for_sign_out" && isReader()) add("sign-out", "Sign out", () => act("/sign-out"));
  }
  const hubStaff = c.relation === "hub_pathologist" || c.relation === "hub_admin";
  if (hubStaff && ["submitted", "assigned", "diagnosed"].includes(c.status)) {
    // Give the read (or, once read, the double-check) to a colleague by user name.
    const what = c.status === "diagnosed" ? "double-check" : "case";
    const input = el("input", { id: "assign-user", size: 12, placeholder: "user name", "aria-label": `Assign the ${what} to` });
    const assign = () =>
      act(c.status === "diagnosed" ? "/double-check" : "/assign", { json: { username: input.value.trim() } });
    buttons.push(el("span", { class: "assign" }, input, el("button", { type: "button", class: "button button-quiet", id: "assign-button", text: `Assign ${what}`, onclick: assign })));
  }
  $("case-actions").replaceChildren(...buttons);
}

/** Which diagnosis form (if any) this user has in this state. */
function readMode(c) {
  if (c.relation !== "hub_pathologist") return null;
  if (["assigned", "diagnosed"].includes(c.status) && c.primary_reader === me()) return "primary";
  if (c.status === "in_double_check" && c.second_reader === me()) return "second";
  if (c.status === "adjudication" && isReader()) return "adjudication";
  if (c.status === "signed_out" && isReader()) return "amend";
  return null;
}

function readForm(c) {
  const mode = readMode(c);
  $("read-section").hidden = !mode;
  if (!mode) return;
  $("read-heading").textContent = {
    primary: "First read",
    second: "Double-check (blind)",
    adjudication: "Agreed diagnosis",
    amend: "Amend the signed report",
  }[mode];
  $("read-reason-field").hidden = mode !== "amend";
  const options = [el("option", { value: "", text: "— choose —" }), ...c.taxonomy_labels.map((l) => el("option", { value: l.code, text: `${l.name} (${l.code})` }))];
  $("read-code").replaceChildren(...options);
  if ($("read-form").dataset.mode !== mode) {
    // A new step starts from an empty form (the amendment from the signed diagnosis).
    $("read-findings").value = mode === "amend" ? c.final_findings || "" : "";
    $("read-reason").value = "";
    if (mode === "amend") $("read-code").value = c.final_code || "";
  }
  const mine = (c.reads || []).find((r) => r.reader_id === me() && ((mode === "primary" && r.kind === "primary") || (mode === "second" && r.kind === "second")));
  if (mine) {
    $("read-code").value = mine.code;
    $("read-findings").value = mine.findings;
  }
  // Per-slide diagnoses for the first and second reads.
  const perSlide = mode === "primary" || mode === "second";
  $("read-slides").replaceChildren(
    ...(perSlide
      ? [...state.slides.values()].map((slide) =>
          el(
            "div",
            { class: "field" },
            el("label", { for: `slide-code-${slide.id}`, text: `Slide ${slide.filename}` }),
            el("select", { id: `slide-code-${slide.id}`, dataset: { slideId: slide.id } }, el("option", { value: "", text: "(no separate diagnosis)" }), ...c.taxonomy_labels.map((l) => el("option", { value: l.code, text: l.name }))),
          ),
        )
      : []),
  );
  $("read-form").dataset.mode = mode;
}

async function submitRead(event) {
  event.preventDefault();
  const mode = $("read-form").dataset.mode;
  const code = $("read-code").value;
  if (!code) {
    showError("Choose a diagnosis.");
    return;
  }
  const findings = $("read-findings").value;
  const slides = [...document.querySelectorAll("#read-slides select")]
    .filter((s) => s.value)
    .map((s) => ({ slide_id: s.dataset.slideId, code: s.value, findings: "" }));
  const requests = {
    primary: ["/reads/primary", "PUT", { code, findings, slides }],
    second: ["/reads/second", "PUT", { code, findings, slides }],
    adjudication: ["/adjudication", "POST", { code, findings, note: "" }],
    amend: ["/amendments", "POST", { code, findings, reason: $("read-reason").value }],
  };
  const [path, method, json] = requests[mode];
  await act(path, { method, json });
}

function reads(c) {
  const list = c.reads || [];
  if (!list.length) {
    $("reads").replaceChildren(el("p", { class: "muted", text: "None visible." }));
    return;
  }
  $("reads").replaceChildren(
    ...list.map((r) =>
      el(
        "div",
        { class: "read", dataset: { kind: r.kind } },
        el("strong", { text: `${r.kind === "primary" ? "First" : "Second"} read — ${r.reader}` }),
        el("div", { text: `${labelName(r.code)} (${r.code})` }),
        r.findings ? el("p", { class: "read-findings", text: r.findings }) : null,
      ),
    ),
  );
}

function reports(c) {
  const list = c.reports || [];
  $("reports").replaceChildren(
    ...(list.length
      ? list.map((r) =>
          el(
            "li",
            {},
            `Version ${r.version}, ${r.signed_by}, ${formatDate(r.signed_at)} `,
            el("a", { href: `${casePath}/reports/${r.version}/report.html`, target: "_blank", class: "report-html", text: "HTML" }),
            " · ",
            el("a", { href: `${casePath}/reports/${r.version}/report.pdf`, target: "_blank", class: "report-pdf", text: "PDF" }),
            r.amendment_reason ? el("div", { class: "muted", text: `Amended: ${r.amendment_reason}` }) : null,
          ),
        )
      : [el("li", { class: "muted", text: "No report yet." })]),
  );
}

async function attachSection(c) {
  const open = c.relation === "spoke" && c.status === "draft";
  $("attach-section").hidden = !open;
  if (!open) return;
  $("upload-into-case").href = `/upload?case=${encodeURIComponent(c.id)}`;
  try {
    const { slides } = await api("/api/v1/slides");
    const free = slides.filter((s) => !c.slides.includes(s.id));
    $("attach-select").replaceChildren(...free.map((s) => el("option", { value: s.id, text: s.filename })));
    $("attach-button").disabled = !free.length;
  } catch (err) {
    showError(err.message);
  }
}

async function loadSlides(c) {
  for (const id of c.slides) {
    if (state.slides.has(id)) continue;
    try {
      state.slides.set(id, await api(`/api/v1/slides/${encodeURIComponent(id)}`));
    } catch (err) {
      showError(err.message);
    }
  }
  for (const id of [...state.slides.keys()]) if (!c.slides.includes(id)) state.slides.delete(id);
}

async function refresh() {
  let c;
  try {
    c = await api(casePath);
  } catch (err) {
    $("case-title").textContent = "Case not available";
    showError(err.message);
    return;
  }
  state.case = c;
  window.pathfedCase = c;
  document.title = `Case ${c.id.slice(0, 8)} · pathfed`;
  $("case-title").textContent = `Case ${c.id.slice(0, 8)}`;
  $("case-status").replaceChildren(statusBadge(c.status, { id: "status-badge" }));
  details(c);
  actions(c);
  readForm(c);
  reads(c);
  reports(c);
  await attachSection(c);
  const chosenLabel = $("annotation-label").value;
  $("annotation-label").replaceChildren(el("option", { value: "", text: "(none)" }), ...c.taxonomy_labels.map((l) => el("option", { value: l.code, text: l.name })));
  $("annotation-label").value = chosenLabel;
  $("annotation-tools").hidden = !canAnnotate();
  if (!canAnnotate()) setTool("");
  if (c.relation === "hub_admin") return; // admins assign work; slides are for pathologists
  await loadSlides(c);
  renderTabs();
  if (!state.current[0] || !state.slides.has(state.current[0])) {
    const first = c.slides[0];
    if (first && state.slides.has(first)) show(0, first);
  } else {
    await loadAnnotations(state.current[0]);
    await loadAi(state.current[0]);
  }
}

async function main() {
  const session = await requireSession({ active: "cases" });
  if (!session) return;
  state.session = session;
  if (!caseId) {
    showError("No case was given. Pick one from the case list.");
    return;
  }
  state.viewers[0] = makeViewer(0);
  window.pathfedViewer = state.viewers[0];
  window.pathfedViewers = state.viewers;
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  $("side-by-side").addEventListener("change", toggleSideBySide);
  $("read-form").addEventListener("submit", submitRead);
  $("label-details").addEventListener("toggle", openLabel);
  $("attach-button").addEventListener("click", async () => {
    const slideId = $("attach-select").value;
    if (!slideId) return;
    await act("/slides", { json: { slide_id: slideId } });
  });
  await refresh();
}

main();
