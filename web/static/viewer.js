// Viewer page: full-window OpenSeadragon on the slide's Deep Zoom pyramid, with the reading
// tools (scale bar from the slide's microns per pixel, ruler, area, rotation, shortcuts).
// Outside a case there is nothing to keep a measurement in, so it is only shown.
import { api, el, formatDimensions, formatMpp, requireSession, showError, t } from "/static/app.js";
import {
  Measurer,
  attachScaleBar,
  commonBindings,
  installShortcuts,
  resetRotation,
  rotateBy,
  slideMpp,
  takeOverKeys,
} from "/static/reading-tools.js";

// Hooks for the browser test (and for debugging from the console).
window.pathfedTilesLoaded = 0;
window.pathfedViewer = null;

const $ = (id) => document.getElementById(id);
const titleEl = $("slide-title");
const metaEl = $("slide-meta");

const TOOLS = ["", "ruler", "area"];

function showSlideInfo(slide) {
  document.title = `${slide.filename} · pathfed`;
  titleEl.textContent = slide.filename;
  titleEl.title = slide.filename;
  const parts = [formatDimensions(slide.width, slide.height)];
  if (slide.mpp_x) parts.push(formatMpp(slide.mpp_x, slide.mpp_y));
  if (slide.objective_power) parts.push(`${slide.objective_power}×`);
  if (slide.vendor) parts.push(slide.vendor);
  metaEl.textContent = parts.join(" · ");

  // The label can carry patient identifiers, so it stays folded away and is
  // only fetched when someone opens it.
  if (slide.label_url) {
    const details = el("details", { class: "label-details" }, el("summary", { text: t("viewer.label.summary") }));
    details.addEventListener("toggle", () => {
      if (details.open && !details.querySelector("img")) {
        details.append(el("img", { src: slide.label_url, alt: t("viewer.label.alt", { name: slide.filename }) }));
      }
    });
    titleEl.parentElement.append(details);
  }
}

function createViewer(slide) {
  const viewer = OpenSeadragon({
    id: "osd",
    prefixUrl: "/vendor/openseadragon/images/",
    tileSources: slide.dzi_url,
    // The 2D canvas drawer (instead of WebGL) renders the same everywhere,
    // including headless test browsers, and lets the test read pixels back.
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "TOP_RIGHT",
    // Allow a little magnification past native resolution to inspect cells.
    maxZoomPixelRatio: 2,
    visibilityRatio: 0.5,
    // Tiles are decoded on demand from the original file; give slow ones time.
    timeout: 120000,
  });
  window.pathfedViewer = viewer;

  viewer.addHandler("tile-loaded", () => {
    window.pathfedTilesLoaded += 1;
  });
  viewer.addHandler("open-failed", (event) => {
    showError(t("viewer.error.open_failed", { reason: event.message || "—" }));
  });
  let failedTiles = 0;
  viewer.addHandler("tile-load-failed", () => {
    failedTiles += 1;
    // A single lost tile is retried on the next pan; many mean a real problem.
    if (failedTiles === 5) showError(t("viewer.error.tiles_failed"));
  });
  takeOverKeys(viewer);

  const scale = attachScaleBar(viewer, { bar: $("scale-bar"), label: $("scale-bar-label"), line: $("scale-bar-line") });
  scale.setMpp(slideMpp(slide));
  return viewer;
}

function installTools(viewer, slide) {
  const mpp = slideMpp(slide);
  const measurer = new Measurer({
    readout: $("measurement"),
    extra: $("measurement-extra"),
    panel: $("measure-panel"),
    clearButton: $("measurement-clear"),
    mppOf: () => mpp,
  });
  measurer.attach(viewer);
  window.pathfedMeasurer = measurer;

  let tool = "";
  const setTool = (next) => {
    if (!TOOLS.includes(next)) return false;
    tool = next;
    measurer.setMode(next || null);
    for (const button of document.querySelectorAll(".tool")) {
      button.classList.toggle("active", button.dataset.tool === next);
      button.setAttribute("aria-pressed", button.dataset.tool === next ? "true" : "false");
    }
    $("tool-hint").textContent = t(`viewer.hint.${next || "pan"}`);
    return true;
  };
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  setTool("");

  const opened = () => (viewer.world.getItemCount() ? [viewer] : []);
  const escape = () => {
    if (measurer.cancel()) return true;
    if (measurer.result) {
      measurer.clear();
      return true;
    }
    return tool ? setTool("") : false;
  };
  const { openHelp } = installShortcuts(commonBindings({ setTool, activeViewers: opened, escape, enter: () => measurer.finish() }));
  $("shortcut-help-button").addEventListener("click", openHelp);
  $("rotate-left").addEventListener("click", () => rotateBy(viewer, -90));
  $("rotate-right").addEventListener("click", () => rotateBy(viewer, 90));
  $("rotate-reset").addEventListener("click", () => resetRotation(viewer));
}

async function main() {
  const session = await requireSession({ userOnly: true, areas: ["viewer"] });
  if (!session) return;

  const slideId = new URLSearchParams(window.location.search).get("slide");
  if (!slideId) {
    titleEl.textContent = t("viewer.no_slide");
    showError(t("viewer.error.no_slide"));
    return;
  }

  let slide;
  try {
    slide = await api(`/api/v1/slides/${encodeURIComponent(slideId)}`);
  } catch (err) {
    titleEl.textContent = t("viewer.unavailable");
    showError(err);
    return;
  }
  showSlideInfo(slide);
  const viewer = createViewer(slide);
  installTools(viewer, slide);
}

main();
