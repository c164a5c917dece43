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
//
// Environment: see web/tests/harness.mjs.

import path from "node:path";
import {
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

async function main() {
  setLang("en");
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

await runTest("en", main);
