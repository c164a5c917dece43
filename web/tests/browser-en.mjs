// End-to-end browser test of the pathfed web UI in English, of the language switch, and of the
// ruler's measurement in micrometres.
//
// Run from the repository root:   node web/tests/browser-en.mjs
//
// A spoke's submitter whose browser speaks en-US signs in, opens the case list, creates a case
// (hub and organ from the server's lists), uploads a generated slide into it and opens the case
// page and the viewer: every page says `<html lang="en">`, shows the catalogue's English and no
// Japanese in its nav bar, headings, buttons, labels, options or table headers. On the case page
// the view is set to one image pixel per screen pixel; a 400 px drag with the ruler must measure
// 400 × the slide's microns per pixel (within 1 %), across the slide and again rotated by 90°
// (then along the slide's other axis), with the scale bar agreeing; the first measurement is kept
// as an annotation. Then the user picks 日本語 in the nav's language switch: the page reloads in
// Japanese, stays so after a reload, and a fresh English-speaking browser gets Japanese after
// signing in, because the choice is kept on the server; switching back gives English again.
// Last, on the upload page, the instances of a DICOM whole-slide series chosen together make one
// upload row, one upload and one slide of format `dicom`; the same instances labelled RLE
// Lossless are refused in their row, naming the transfer syntax, without an upload being created;
// OpenSeadragon, given the DICOM slide's IIIF Image API 3 `info.json`, draws its tiles, all
// fetched from `/iiif/3/`; and dicom-microscopy-viewer (the viewer of Slim, from npm), given the
// slide's series from DICOMweb, draws its frames, all fetched from `/dicomweb/`.
//
// Environment: see web/tests/harness.mjs, and two more that server/tests/it/browser.rs sets:
//   PATHFED_DICOM_SERIES      the DICOM series' instance files, joined by the path-list separator
//   PATHFED_DICOM_RLE_SERIES  the same instances labelled RLE Lossless, joined alike

import fs from "node:fs";
import path from "node:path";
import {
  ARTIFACTS,
  SCALE_TEXT,
  T,
  TILES_TIMEOUT_MS,
  addUser,
  check,
  checkLanguage,
  makeDataDir,
  navLinks,
  newPage,
  page,
  passwordFile,
  run,
  runTest,
  screenshot,
  setLang,
  signIn,
  sleep,
  startServerAndBrowser,
  step,
  tmpDir,
  uploadThroughPage,
  viewerSettled,
  waitForStatus,
  waitInPage,
} from "./harness.mjs";

const LOCALE = "en-US";
const SLIDE_NAME = "ruler.svs";
/** The generated slide's pixel size: what every length is checked against. */
const MPP = 0.5;
/** How far each ruler drag goes on the screen, in CSS pixels (one device pixel each). */
const DRAG_PX = 400;
/** A measurement may differ from DRAG_PX × MPP by this fraction. */
const TOLERANCE = 0.01;

/** The DICOM instance files server/tests/it/browser.rs wrote: the series, and its RLE twin. */
function dicomInputs() {
  const list = (name) => {
    const value = process.env[name] || "";
    check(value, `${name} is not set: this walk is run by server/tests/it/browser.rs, which writes the DICOM series`);
    return value.split(path.delimiter).filter(Boolean);
  };
  return { series: list("PATHFED_DICOM_SERIES"), rle: list("PATHFED_DICOM_RLE_SERIES") };
}

async function main() {
  setLang("en");
  const dicom = dicomInputs();
  const env = await makeDataDir();
  const [, adminFile] = await passwordFile("admin");
  await run(["admin", "init", "--hospital", "Test Hub", "--kind", "hub", "--user", "admin", "--password-file", adminFile], env);
  await run(["admin", "hospital", "add", "Test Spoke", "--kind", "spoke"], env);
  await run(["admin", "hospital", "default-hub", "Test Spoke", "Test Hub"], env);
  const password = await addUser(env, "spoke1", "Test Spoke", "submitter");
  const slidePath = path.join(tmpDir, SLIDE_NAME);
  await run(["slide", "synth", "--out", slidePath, "--width", "4000", "--height", "3000", "--mpp", String(MPP)], env);
  const base = await startServerAndBrowser(env);

  // -- Sign in and the slide list.
  await signIn(base, "spoke1", password, { locale: LOCALE });
  await checkLanguage("slides");
  check(((await page.textContent("h1")) || "").trim() === T("slides.title"), "the slide list's heading");
  const links = await navLinks();
  const expected = ["cases", "slides", "upload", "opt_out"].map((k) => T(`common.nav.${k}`));
  check(links.join(",") === expected.join(","), `a submitter's navigation: ${links}, expected ${expected}`);
  check(((await page.textContent("#logout-button")) || "").trim() === T("common.nav.logout"), "the logout button's text");
  check((await page.inputValue("#lang-select")) === "en", "the language switch does not show English");
  await screenshot("en-slides");

  // -- The case list and a new case from the form's lists.
  await Promise.all([page.waitForURL(`${base}/cases`), page.click('#app-nav a[href="/cases"]')]);
  await page.locator("#new-case-button").waitFor({ state: "visible", timeout: 10_000 });
  await checkLanguage("cases");
  check(((await page.textContent("#cases-title")) || "").trim() === T("cases.title"), "the case list's heading");
  await page.click("#new-case-button");
  await page.locator("#new-case-form").waitFor({ state: "visible", timeout: 10_000 });
  const hubLabel = T("cases.form.hub_default", { name: "Test Hub" });
  await page.locator("#nc-hub option", { hasText: hubLabel }).waitFor({ state: "attached", timeout: 10_000 });
  await page.locator('#nc-organ option[value="stomach"]').waitFor({ state: "attached", timeout: 10_000 });
  await page.fill("#nc-patient", "MRN-EN-1");
  await page.selectOption("#nc-age", "50-59");
  await page.selectOption("#nc-sex", "female");
  await page.selectOption("#nc-organ", "stomach");
  await page.fill("#nc-specimen", "gastric biopsy");
  await page.selectOption("#nc-hub", { label: hubLabel });
  await page.fill("#nc-question", "Neoplasia?");
  const organ = ((await page.locator('#nc-organ option[value="stomach"]').textContent()) || "").trim();
  check(/stomach/i.test(organ), `the organ list names the stomach "${organ}" in English`);
  await checkLanguage("cases");
  await screenshot("en-new-case");
  check(((await page.textContent("#nc-create")) || "").trim() === T("cases.form.create"), "the create button's text");
  await Promise.all([page.waitForURL(/\/case\?id=/), page.click("#nc-create")]);
  const caseId = new URL(page.url()).searchParams.get("id");
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await waitForStatus("draft");
  await checkLanguage("case");
  step(`draft case ${caseId} created from the form`);

  // -- Upload into the case.
  const uploadLink = page.locator("#upload-into-case");
  check(((await uploadLink.textContent()) || "").trim() === T("case.slides.upload"), "the case's upload link");
  await Promise.all([page.waitForURL(/\/upload\?case=/), uploadLink.click()]);
  await page.locator("#back-to-case").waitFor({ timeout: 10_000 });
  await checkLanguage("upload");
  const uploadHeading = ((await page.textContent("#upload-title")) || "").trim();
  check(uploadHeading === T("upload.title_into_case", { case: caseId.slice(0, 8) }), `the upload page's heading reads "${uploadHeading}"`);
  const slideId = await uploadThroughPage(slidePath, { offlineFirst: true });
  step(`uploaded into the case after the connection came back: slide ${slideId}`);
  await checkLanguage("upload");
  await screenshot("en-upload");

  // -- The viewer.
  await Promise.all([page.waitForURL(/\/viewer\?slide=/), page.click('.upload-row[data-phase="done"] a.open-viewer')]);
  await waitInPage("the viewer's tiles", viewerSettled, 0, TILES_TIMEOUT_MS);
  await checkLanguage("viewer", { heading: "#back-link", title: false });
  check(((await page.textContent("#back-link")) || "").trim() === T("viewer.back"), "the viewer's back link");
  check(((await page.textContent("#slide-title")) || "").trim() === SLIDE_NAME, "the viewer's heading is not the file's name");
  await waitInPage("the viewer's scale bar", (source) => new RegExp(source).test((document.getElementById("scale-bar-label")?.textContent || "").trim()), SCALE_TEXT.source, 10_000);
  await screenshot("en-viewer");

  // -- The case page, where the ruler is tried.
  await page.goto(`${base}/case?id=${encodeURIComponent(caseId)}`);
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  await checkLanguage("case");
  const listed = await page.locator(`#case-slide-list li[data-slide-id="${slideId}"]`).count();
  check(listed === 1, "the uploaded slide is not listed in the case");
  await screenshot("en-case");
  await ruler(slideId);

  await languageSwitch(base, caseId, password);
  const dicomSlide = await dicomSeries(base, dicom);
  await iiifInOpenSeadragon(base, dicomSlide);
  await microscopyViewer(base, dicomSlide);
}

// ---- The ruler ---------------------------------------------------------------------------------

/** Shows the slide of viewer A at one image pixel per screen pixel, at once, and checks it. */
async function oneToOne() {
  const ratio = await page.evaluate(() => {
    const viewer = window.pathfedViewer;
    const viewport = viewer.viewport;
    viewport.zoomTo(viewport.imageToViewportZoom(1), null, true);
    // Settle any pan still springing (the opening fit, the rotation): a drag measured while the
    // view moves would join two different views.
    viewport.applyConstraints(true);
    viewport.panTo(viewport.getCenter(false), true);
    return viewer.world.getItemAt(0).viewportToImageZoom(viewport.getZoom(true));
  });
  check(Math.abs(ratio - 1) < 1e-6, `the view is ${ratio} screen pixels per image pixel, not 1`);
  await waitInPage("the view to stand still", () => {
    const viewport = window.pathfedViewer.viewport;
    const now = viewport.getCenter(true);
    const target = viewport.getCenter(false);
    return Math.abs(now.x - target.x) < 1e-9 && Math.abs(now.y - target.y) < 1e-9 && Math.abs(viewport.getZoom(true) - viewport.getZoom(false)) < 1e-12;
  }, null, 10_000);
}

/** Drags the ruler DRAG_PX screen pixels to the right through the middle of viewer A and
 * returns the finished measurement: its length in µm and its ends in image pixels. */
async function dragRuler() {
  const box = await page.locator("#osd-a").boundingBox();
  check(box && box.width > DRAG_PX + 80, `viewer A is too narrow for a ${DRAG_PX} px drag: ${JSON.stringify(box)}`);
  const y = box.y + box.height / 2;
  const x0 = box.x + box.width / 2 - DRAG_PX / 2;
  await page.mouse.move(x0, y);
  await page.mouse.down();
  await page.mouse.move(x0 + DRAG_PX, y, { steps: 16 });
  await page.mouse.up();
  await page.locator('#measurement[data-state="done"]').waitFor({ timeout: 10_000 });
  return page.evaluate(() => {
    const readout = document.getElementById("measurement");
    const result = window.pathfedMeasurer.result;
    return {
      lengthUm: Number(readout.dataset.lengthUm),
      text: readout.textContent.trim(),
      points: result ? result.points : null,
    };
  });
}

function checkLength(measured, what) {
  const expected = DRAG_PX * MPP;
  const error = Math.abs(measured.lengthUm - expected) / expected;
  check(Number.isFinite(measured.lengthUm), `${what}: the readout has no data-length-um`);
  check(error < TOLERANCE, `${what}: measured ${measured.lengthUm} µm, expected ${expected} µm ± ${TOLERANCE * 100} %`);
  check(SCALE_TEXT.test(measured.text), `${what}: the readout says "${measured.text}"`);
  step(`  ${what}: ${measured.lengthUm.toFixed(2)} µm (${measured.text}) for ${DRAG_PX} px at ${MPP} µm/px`);
}

/** The scale bar of viewer A agrees with the slide's pixel size at 1:1: its label's length is
 * its line's screen length × MPP. */
async function checkScaleBar(what) {
  await waitInPage(`the scale bar to show a length (${what})`, (source) => {
    const bar = document.getElementById("scale-bar-a");
    return Boolean(bar && !bar.hidden && new RegExp(source).test((document.getElementById("scale-bar-label-a")?.textContent || "").trim()));
  }, SCALE_TEXT.source, 10_000);
  // The bar redraws on the next animation frame after a change of zoom or rotation.
  const bar = await page.evaluate(async () => {
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    // The width the bar was given (its border is drawn around it).
    const line = document.querySelector("#scale-bar-a .scale-bar-line");
    return { label: document.getElementById("scale-bar-label-a").textContent.trim(), px: Number.parseFloat(line.style.width) };
  });
  const [, value, unit] = /^(\d+(?:\.\d+)?)\s*(µm|mm)$/.exec(bar.label) || [];
  check(value, `the scale bar reads "${bar.label}"`);
  const um = Number(value) * (unit === "mm" ? 1000 : 1);
  const shown = bar.px * MPP;
  check(Math.abs(shown - um) / um < TOLERANCE, `${what}: the scale bar says ${bar.label} over ${bar.px} px, which is ${shown} µm at ${MPP} µm/px`);
  step(`  scale bar ${what}: ${bar.label} over ${bar.px.toFixed(0)} px`);
}

async function ruler(slideId) {
  step("the ruler at one image pixel per screen pixel");
  const slide = await page.evaluate(async (id) => (await fetch(`/api/v1/slides/${encodeURIComponent(id)}`)).json(), slideId);
  check(Math.abs(Number(slide.mpp_x) - MPP) < 1e-9 && Math.abs(Number(slide.mpp_y || slide.mpp_x) - MPP) < 1e-9, `the slide's pixel size is ${slide.mpp_x} × ${slide.mpp_y} µm, generated as ${MPP}`);
  await oneToOne();
  await checkScaleBar("at 1:1");

  await page.click("#tool-ruler");
  check((await page.getAttribute("#tool-ruler", "aria-pressed")) === "true", "the ruler tool is not shown as chosen");
  check(((await page.textContent("#tool-hint")) || "").trim() === T("case.hint.ruler"), "the ruler's hint");
  const across = await dragRuler();
  checkLength(across, "across the slide");
  const [[ax, ay], [bx, by]] = across.points;
  check(Math.abs(Math.abs(bx - ax) - DRAG_PX) < DRAG_PX * TOLERANCE && Math.abs(by - ay) < 2, `unrotated, a horizontal drag should run along the slide's x axis: ${JSON.stringify(across.points)}`);
  await screenshot("en-ruler");

  // Kept, it becomes an unlabelled line annotation with the length as its note.
  check((await page.inputValue("#annotation-label")) === "", "the annotation label is preset; a kept measurement would carry it");
  const keep = page.locator("#measurement-keep");
  await keep.waitFor({ state: "visible", timeout: 10_000 });
  check(((await keep.textContent()) || "").trim() === T("viewer.measure.keep"), "the Keep button's text");
  await keep.click();
  const kept = page.locator("#annotation-list li[data-annotation-id]");
  await kept.first().waitFor({ timeout: 10_000 });
  check((await kept.count()) === 1, `one annotation expected after Keep, found ${await kept.count()}`);
  const keptText = (await kept.first().textContent()) || "";
  check(keptText.includes(T("case.kind.line")) && keptText.includes(across.text), `the kept measurement is listed as "${keptText}"`);
  check((await page.locator("#osd-a svg.annotation-layer polyline.shape.line").count()) === 1, "the kept measurement is not drawn on the slide");
  await page.locator('#measurement[data-state="empty"]').waitFor({ state: "attached", timeout: 10_000 });
  step(`  kept as an annotation: "${keptText.trim()}"`);

  // Rotated by 90°, the same drag runs along the slide's y axis and measures the same.
  await page.click("#rotate-right");
  await waitInPage("the view to turn by 90°", () => {
    const viewport = window.pathfedViewer.viewport;
    return Math.abs(viewport.getRotation(true) - 90) < 1e-6 && Math.abs(viewport.getRotation(false) - 90) < 1e-6;
  }, null, 10_000);
  await oneToOne();
  await checkScaleBar("rotated by 90°");
  const rotated = await dragRuler();
  checkLength(rotated, "rotated by 90°");
  const [[rx0, ry0], [rx1, ry1]] = rotated.points;
  check(Math.abs(rx1 - rx0) < 2 && Math.abs(Math.abs(ry1 - ry0) - DRAG_PX) < DRAG_PX * TOLERANCE, `rotated by 90°, a horizontal drag should run along the slide's y axis: ${JSON.stringify(rotated.points)}`);
  await screenshot("en-ruler-rotated");

  await page.click("#measurement-clear");
  await page.click("#rotate-reset");
  await page.click('.tool[data-tool=""]');
  await waitInPage("the view to turn back", () => Math.abs(window.pathfedViewer.viewport.getRotation(true)) < 1e-6, null, 10_000);
  step("the ruler measured the drag in micrometres, unrotated and rotated");
}

// ---- The language switch ------------------------------------------------------------------------

/** Picks `code` in the nav's language switch and waits for the page to come back in it. */
async function switchTo(code) {
  step(`switching the language to ${code} in the nav`);
  setLang(code);
  await Promise.all([page.waitForEvent("load", { timeout: 15_000 }), page.selectOption("#lang-select", code)]);
}

async function languageSwitch(base, caseId, password) {
  await switchTo("ja");
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await checkLanguage("case");
  await waitForStatus("draft");
  check((await page.inputValue("#lang-select")) === "ja", "after switching, the nav's switch does not show 日本語");
  await screenshot("en-switched-to-ja");

  await page.reload();
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await checkLanguage("case");
  const session = await page.evaluate(async () => (await fetch("/api/v1/session")).json());
  check(session.user && session.user.language === "ja", `the server keeps the language ${JSON.stringify(session.user && session.user.language)}`);
  step("  the case page reloads in Japanese and the server keeps the choice");

  // A browser that never saw the choice, and speaks English, gets Japanese once signed in. Its
  // login page, before anyone is known, follows the browser.
  setLang("en");
  await newPage(LOCALE);
  await page.goto(`${base}/login`);
  await checkLanguage("login", { nav: false, heading: "#login-button" });
  setLang("ja");
  await page.fill("#username", "spoke1");
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 15_000 }), page.click("#login-button")]);
  await checkLanguage("slides");
  check(((await page.textContent("h1")) || "").trim() === T("slides.title"), "the slide list's heading in Japanese");
  await page.goto(`${base}/case?id=${encodeURIComponent(caseId)}`);
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await checkLanguage("case");
  step("  a fresh English browser gets Japanese after signing in");

  await switchTo("en");
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await checkLanguage("case");
  await waitForStatus("draft");
  await screenshot("en-switched-back");
  step("language switch: to Japanese, kept on the server, and back to English");
}

// ---- A DICOM series, and IIIF ---------------------------------------------------------------------

/** The instances of a DICOM series chosen together are one upload and one slide; the same series
 * in a transfer syntax the server cannot decode is refused, named, before any upload. Returns
 * the DICOM slide's id. */
async function dicomSeries(base, { series, rle }) {
  step(`a DICOM series: ${series.length} instance files chosen together on the upload page`);
  await page.goto(`${base}/upload`);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  await checkLanguage("upload");
  const created = [];
  const watchUploads = (request) => {
    if (request.method() === "POST" && new URL(request.url()).pathname === "/api/v1/uploads") created.push(request.url());
  };
  page.on("request", watchUploads);
  try {
    const slideId = await uploadThroughPage(series);
    const rows = await page.locator(".upload-row").count();
    check(rows === 1, `${series.length} DICOM instances made ${rows} upload rows, not one`);
    check(created.length === 1, `${series.length} DICOM instances created ${created.length} uploads, not one`);
    const note = ((await page.textContent(".upload-row .upload-series")) || "").trim();
    check(note === T("upload.dicom.series_note", { count: series.length }), `the series row says "${note}"`);
    const slide = await page.evaluate(async (id) => (await fetch(`/api/v1/slides/${encodeURIComponent(id)}`)).json(), slideId);
    check(slide.format === "dicom", `the series registered as ${JSON.stringify(slide.format)}, not dicom: ${JSON.stringify(slide)}`);
    check(/\.zip$/.test(slide.filename || ""), `the series' upload is named ${JSON.stringify(slide.filename)}, not a zip`);
    step(`  one upload, one slide: ${slideId} (${slide.filename}, ${slide.width} × ${slide.height}, format dicom)`);
    await screenshot("en-upload-dicom");

    step(`the same ${rle.length} instances labelled RLE Lossless: refused before any upload`);
    await page.setInputFiles("#file-input", rle);
    const refusedRow = page.locator('.upload-row[data-phase="error"]');
    await refusedRow.waitFor({ timeout: 15_000 });
    const refusal = ((await refusedRow.locator(".upload-error").textContent()) || "").trim();
    const expected = T("upload.dicom.syntax_refused", { syntax: "RLE Lossless (1.2.840.10008.1.2.5)", count: rle.length, total: rle.length });
    check(refusal === expected, `the RLE series' refusal reads "${refusal}", expected "${expected}"`);
    check((await refusedRow.locator("button").count()) === 0, "a refused series offers a retry that could not succeed");
    // Nothing was queued: a request would follow within moments of the row appearing.
    await sleep(1_000);
    check(created.length === 1, `the refused series created an upload: ${created.slice(1).join(", ")}`);
    check((await page.locator(".upload-row").count()) === 2, "the refused series is not one row beside the first");
    step(`  refused in its row: "${refusal}"`);
    await checkLanguage("upload");
    await screenshot("en-upload-dicom-refused");
    return slideId;
  } finally {
    page.off("request", watchUploads);
  }
}

/** OpenSeadragon (the viewer page's copy) opens a slide from its IIIF Image API 3 info.json, as
 * a IIIF viewer on the same site does with the session's cookie, and draws its tiles. */
async function iiifInOpenSeadragon(base, slideId) {
  step("OpenSeadragon opens the DICOM slide from IIIF Image API 3");
  await page.goto(`${base}/viewer?slide=${encodeURIComponent(slideId)}`);
  // The viewer's own Deep Zoom view of the DICOM slide, first.
  await waitInPage("the viewer's tiles of the DICOM slide", viewerSettled, 0, TILES_TIMEOUT_MS);
  const requested = [];
  const watchIiif = (request) => {
    const url = new URL(request.url());
    if (url.pathname.startsWith("/iiif/")) requested.push(url.pathname);
  };
  page.on("request", watchIiif);
  try {
    const info = `${base}/iiif/3/${encodeURIComponent(slideId)}/info.json`;
    await page.evaluate((tileSources) => {
      const element = document.createElement("div");
      element.id = "iiif-viewer";
      element.style.cssText = "position:fixed;left:0;top:0;width:512px;height:384px;z-index:1000;background:#fff";
      document.body.append(element);
      const state = { tiles: [], failed: null };
      const viewer = window.OpenSeadragon({ element, tileSources, drawer: "canvas", showNavigationControl: false });
      viewer.addHandler("open-failed", (event) => {
        state.failed = `open failed: ${event.message}`;
      });
      viewer.addHandler("tile-load-failed", (event) => {
        state.failed = `tile failed: ${event.message} ${event.tile && event.tile.getUrl()}`;
      });
      viewer.addHandler("tile-loaded", (event) => state.tiles.push(event.tile.getUrl()));
      window.pathfedIiif = { viewer, state };
    }, info);
    await waitInPage(
      "OpenSeadragon to draw the IIIF tiles",
      () => {
        const { viewer, state } = window.pathfedIiif;
        const item = viewer.world.getItemAt(0);
        return Boolean(state.failed) || (state.tiles.length > 0 && item && item.getFullyLoaded());
      },
      null,
      TILES_TIMEOUT_MS,
    );
    const seen = await page.evaluate(async (id) => {
      const { viewer, state } = window.pathfedIiif;
      const item = viewer.world.getItemAt(0);
      const slide = await (await fetch(`/api/v1/slides/${encodeURIComponent(id)}`)).json();
      // The drawn canvas: opaque pixels and their luminance spread (tissue, not a blank frame).
      const canvas = viewer.drawer.canvas;
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let opaque = 0;
      let sum = 0;
      let squares = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] < 250) continue;
        const lum = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
        opaque += 1;
        sum += lum;
        squares += lum * lum;
      }
      const mean = opaque ? sum / opaque : 0;
      return {
        failed: state.failed,
        tiles: state.tiles,
        iiif: item.source instanceof window.OpenSeadragon.IIIFTileSource,
        version: item.source.version,
        size: [item.source.dimensions.x, item.source.dimensions.y],
        slideSize: [slide.width, slide.height],
        opaque,
        std: opaque ? Math.sqrt(Math.max(0, squares / opaque - mean * mean)) : 0,
      };
    }, slideId);
    check(!seen.failed, `OpenSeadragon could not show the IIIF image: ${seen.failed}`);
    check(seen.iiif && seen.version === 3, `OpenSeadragon did not read an IIIF Image API 3 service (version ${seen.version})`);
    check(seen.size.join("×") === seen.slideSize.join("×"), `IIIF says the image is ${seen.size.join("×")}, the slide is ${seen.slideSize.join("×")}`);
    const prefix = `${base}/iiif/3/${encodeURIComponent(slideId)}/`;
    const elsewhere = seen.tiles.filter((url) => !url.startsWith(prefix) || !url.endsWith("/default.jpg"));
    check(seen.tiles.length > 0 && elsewhere.length === 0, `tiles not from the IIIF service: ${elsewhere.slice(0, 3).join(", ")}`);
    check(requested.includes(`/iiif/3/${encodeURIComponent(slideId)}/info.json`), `OpenSeadragon did not ask for info.json: ${requested.slice(0, 3).join(", ")}`);
    check(seen.opaque > 1000 && seen.std > 5, `the IIIF view looks blank (${seen.opaque} opaque pixels, luminance std ${seen.std.toFixed(2)})`);
    step(`  ${seen.tiles.length} IIIF tiles drawn (e.g. ${seen.tiles[0].slice(base.length)}), luminance std ${seen.std.toFixed(1)}`);
    await screenshot("en-iiif-openseadragon");
  } finally {
    page.off("request", watchIiif);
  }
}

/** The files of dicom-microscopy-viewer (and the DICOMweb client it is given) from npm, served by
 * the test under `/dmv/` on the platform's own origin, so the viewer calls DICOMweb as a page of
 * the site would, with the session's cookie. Its workers and WebAssembly decoders load from
 * `dynamic-import/`, which it finds through `window.PUBLIC_LIB_URL`. */
const DMV_FILES = (() => {
  const modules = path.resolve("web/node_modules");
  const dist = path.join(modules, "dicom-microscopy-viewer/dist");
  const files = {
    "/dmv/dicomweb-client.js": path.join(modules, "dicomweb-client/build/dicomweb-client.js"),
    "/dmv/dicomMicroscopyViewer.bundle.min.js": path.join(dist, "dicomMicroscopyViewer.bundle.min.js"),
  };
  for (const name of fs.readdirSync(path.join(dist, "dynamic-import"))) {
    files[`/dmv/${name}`] = path.join(dist, "dynamic-import", name);
  }
  return files;
})();

const DMV_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicom-microscopy-viewer</title>
<script>window.PUBLIC_URL = "/"; window.PUBLIC_LIB_URL = "/dmv/";</script>
<script src="/dmv/dicomweb-client.js"></script>
<script src="/dmv/dicomMicroscopyViewer.bundle.min.js"></script>
</head><body style="margin:0"><div id="viewport" style="width:800px;height:600px"></div></body></html>`;

/** The study UID the platform gives a slide: 2.25 and the slide's UUID as a decimal number. */
function studyUid(slideId) {
  return `2.25.${BigInt(`0x${slideId.replace(/-/g, "")}`).toString()}`;
}

/** dicom-microscopy-viewer opens the DICOM slide's series from DICOMweb (QIDO-RS finds it,
 * WADO-RS gives its metadata and frames, asked for as octet-stream "as stored") and draws it. */
async function microscopyViewer(base, slideId) {
  step("dicom-microscopy-viewer opens the DICOM slide through DICOMweb");
  const context = page.context();
  const serve = async (route) => {
    const pathname = new URL(route.request().url()).pathname;
    if (pathname === "/dmv/viewer.html") return route.fulfill({ contentType: "text/html", body: DMV_PAGE });
    const file = DMV_FILES[pathname];
    if (!file) return route.fulfill({ status: 404, body: "not a dicom-microscopy-viewer file" });
    const type = file.endsWith(".wasm") ? "application/wasm" : "text/javascript";
    return route.fulfill({ contentType: type, body: fs.readFileSync(file) });
  };
  await context.route(`${base}/dmv/**`, serve);
  const frames = [];
  const watchFrames = (response) => {
    const url = new URL(response.url());
    if (/\/frames\/[0-9,]+$/.test(url.pathname)) frames.push({ path: url.pathname, status: response.status() });
  };
  page.on("response", watchFrames);
  try {
    await page.goto(`${base}/dmv/viewer.html`);
    const study = studyUid(slideId);
    const opened = await page.evaluate(async (studyInstanceUID) => {
      const client = new window.DICOMwebClient.api.DICOMwebClient({ url: `${location.origin}/dicomweb` });
      const found = await client.searchForSeries({ studyInstanceUID });
      const seriesInstanceUID = found[0]["0020000E"].Value[0];
      const metadata = await client.retrieveSeriesMetadata({ studyInstanceUID, seriesInstanceUID });
      const dmv = window.dicomMicroscopyViewer;
      const images = metadata
        .map((m) => new dmv.metadata.VLWholeSlideMicroscopyImage({ metadata: m }))
        .filter((image) => image.ImageType[2] === "VOLUME");
      const state = { started: 0, ended: 0, loaded: 0, errors: [] };
      const prefix = "dicommicroscopyviewer_";
      document.addEventListener(`${prefix}frame_loading_started`, () => {
        state.started += 1;
      }, true);
      document.addEventListener(`${prefix}frame_loading_ended`, (event) => {
        state.ended += 1;
        if (event.detail && event.detail.payload && event.detail.payload.pixelArray) state.loaded += 1;
      }, true);
      document.addEventListener(`${prefix}frame_loading_error`, (event) => {
        state.errors.push(JSON.stringify(event.detail && event.detail.payload));
      }, true);
      document.addEventListener(`${prefix}loading_error`, (event) => {
        state.errors.push(String(event.detail && event.detail.payload));
      }, true);
      const viewer = new dmv.viewer.VolumeImageViewer({ client, metadata: images });
      viewer.render({ container: document.getElementById("viewport") });
      window.pathfedDmv = { viewer, state };
      return { series: found.length, instances: metadata.length, volumes: images.length, seriesInstanceUID };
    }, study);
    check(opened.series === 1, `QIDO-RS found ${opened.series} series in the slide's study`);
    check(opened.volumes === opened.instances && opened.volumes > 1, `the series' ${opened.instances} instances gave ${opened.volumes} VOLUME images`);
    await waitInPage(
      "dicom-microscopy-viewer to decode frames",
      () => {
        const { errors, started, ended, loaded } = window.pathfedDmv.state;
        return errors.length > 0 || (loaded > 0 && ended === started);
      },
      null,
      TILES_TIMEOUT_MS,
    );
    const state = await page.evaluate(() => window.pathfedDmv.state);
    check(state.errors.length === 0, `dicom-microscopy-viewer could not load frames: ${state.errors.slice(0, 3).join("; ")}`);
    // Let the decoded frames reach the screen, then look at what it shows.
    await sleep(1_000);
    const shot = await page.locator("#viewport").screenshot({ path: path.join(ARTIFACTS, "en-dicom-microscopy-viewer.png") });
    const drawn = await page.evaluate(async (png) => {
      const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${png}`)).blob());
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const context2d = canvas.getContext("2d");
      context2d.drawImage(bitmap, 0, 0);
      const data = context2d.getImageData(0, 0, bitmap.width, bitmap.height).data;
      let sum = 0;
      let squares = 0;
      let tissue = 0;
      const pixels = data.length / 4;
      for (let i = 0; i < data.length; i += 4) {
        const lum = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
        sum += lum;
        squares += lum * lum;
        if (lum < 220) tissue += 1;
      }
      const mean = sum / pixels;
      return { std: Math.sqrt(Math.max(0, squares / pixels - mean * mean)), tissue: tissue / pixels };
    }, shot.toString("base64"));
    const refused = frames.filter((f) => f.status !== 200);
    check(frames.length > 0 && refused.length === 0, `frame requests: ${frames.length}, refused ${refused.map((f) => `${f.status} ${f.path}`).slice(0, 3).join(", ")}`);
    const elsewhere = frames.filter((f) => !f.path.startsWith(`/dicomweb/studies/${study}/series/${opened.seriesInstanceUID}/instances/`));
    check(elsewhere.length === 0, `frames from outside the slide's series: ${elsewhere.slice(0, 3).map((f) => f.path).join(", ")}`);
    check(drawn.std > 5 && drawn.tissue > 0.01, `the viewer looks blank (luminance std ${drawn.std.toFixed(2)}, ${(100 * drawn.tissue).toFixed(1)}% tissue)`);
    step(`  ${state.loaded} frames decoded from ${frames.length} WADO-RS requests (e.g. ${frames[0].path}), luminance std ${drawn.std.toFixed(1)}`);
  } finally {
    page.off("response", watchFrames);
    await context.unroute(`${base}/dmv/**`, serve);
  }
}

await runTest("en", main);
