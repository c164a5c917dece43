// Viewer page: full-window OpenSeadragon on the slide's Deep Zoom pyramid,
// with a scale bar computed from the slide's microns-per-pixel.
import { api, el, formatDimensions, formatMpp, requireSession, showError } from "/static/app.js";

// The bar is the shortest "round" length at least this many screen pixels
// wide; with 1-2-5 steps it ends up 100–250 px.
const MIN_BAR_PX = 100;
const NICE_STEPS = [1, 2, 5, 10];

// Hooks for the browser test (and for debugging from the console).
window.pathfedTilesLoaded = 0;
window.pathfedViewer = null;

const titleEl = document.getElementById("slide-title");
const metaEl = document.getElementById("slide-meta");
const scaleBar = document.getElementById("scale-bar");
const scaleLabel = document.getElementById("scale-bar-label");
const scaleLine = document.getElementById("scale-bar-line");

/** Smallest 1, 2 or 5 × 10^n that is >= `value`. */
function niceLength(value) {
  const base = 10 ** Math.floor(Math.log10(value));
  for (const step of NICE_STEPS) {
    if (step * base >= value) return step * base;
  }
  return 10 * base;
}

/** µm up to 1000, mm from there; nice lengths have one significant digit. */
function formatLength(micrometres) {
  if (micrometres >= 1000) return `${Number((micrometres / 1000).toPrecision(1))} mm`;
  return `${Number(micrometres.toPrecision(1))} µm`;
}

function setupScaleBar(viewer, mpp) {
  scaleBar.hidden = false;
  if (!(mpp > 0)) {
    scaleBar.classList.add("no-scale");
    scaleLabel.textContent = "no scale";
    scaleBar.title = "This slide does not record its pixel size";
    return;
  }

  let pending = false;
  const update = () => {
    pending = false;
    const item = viewer.world.getItemAt(0);
    if (!item) return;
    // Screen pixels per level-0 image pixel at the zoom shown right now
    // (`true` = the animated value, so the bar follows smooth zooming).
    const screenPerImagePx = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    if (!(screenPerImagePx > 0)) return;
    const micronsPerScreenPx = mpp / screenPerImagePx;
    const length = niceLength(MIN_BAR_PX * micronsPerScreenPx);
    scaleLine.style.width = `${Math.round(length / micronsPerScreenPx)}px`;
    scaleLabel.textContent = formatLength(length);
  };
  // Animation events fire every frame; coalesce to one update per frame.
  const schedule = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(update);
  };
  for (const name of ["open", "animation", "animation-finish", "zoom", "resize"]) {
    viewer.addHandler(name, schedule);
  }
  schedule();
}

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
    const details = el("details", { class: "label-details" }, el("summary", { text: "Label" }));
    details.addEventListener(
      "toggle",
      () => {
        if (details.open && !details.querySelector("img")) {
          details.append(el("img", { src: slide.label_url, alt: `Label of ${slide.filename}` }));
        }
      },
    );
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
    showRotationControl: true,
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
    showError(`The slide could not be opened: ${event.message || "unknown error"}`);
  });
  let failedTiles = 0;
  viewer.addHandler("tile-load-failed", () => {
    failedTiles += 1;
    // A single lost tile is retried on the next pan; many mean a real problem.
    if (failedTiles === 5) showError("Some parts of the slide could not be loaded from the server.");
  });

  setupScaleBar(viewer, slide.mpp_x);
  return viewer;
}

async function main() {
  const session = await requireSession({ userOnly: true });
  if (!session) return;

  const slideId = new URLSearchParams(window.location.search).get("slide");
  if (!slideId) {
    titleEl.textContent = "No slide selected";
    showError("No slide was given. Pick one from the slide list.");
    return;
  }

  let slide;
  try {
    slide = await api(`/api/v1/slides/${encodeURIComponent(slideId)}`);
  } catch (err) {
    titleEl.textContent = "Slide not available";
    showError(err.message);
    return;
  }
  showSlideInfo(slide);
  createViewer(slide);
}

main();
