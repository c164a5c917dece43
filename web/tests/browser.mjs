// End-to-end browser test of the pathfed web UI in Japanese, as a Japanese hospital's staff see
// it: every browser context speaks ja-JP on Tokyo's clock, and every page visited must say
// `<html lang="ja">`, show its nav bar, heading and title in Japanese and no English catalogue
// text in its links, headings, buttons, labels, options or table headers; the texts the test
// waits for are the catalogue's Japanese (web/static/i18n), read in node.
//
// Run from the repository root:   node web/tests/browser.mjs
//
// It sets up a throwaway data directory with one hospital and user, generates a synthetic slide,
// starts `pathfed serve` on a free loopback port, and drives a real Chromium through login (the
// platform admin must set up a second factor first: the account security page with its QR code,
// a confirming code and ten recovery codes) → upload → viewer → slide list, checking that the
// viewer actually paints tissue (not a blank canvas); the admin signs out and back in with the
// authenticator app's code (a wrong one refused in Japanese); then the consultation flow: the hub pathologist's notifications bell counts the
// spoke's new request and leads to the case, they claim it, check the patient's identity (the
// patient id in the case panel, the slide label), pan, draw an annotation and enter a read; a
// second pathologist double-checks blind and signs out through the report preview; the spoke
// sees the new report (HTML in Japanese, and the PDF); a researcher builds a dataset version
// from the signed-out slide and sees it in the catalogue, the spoke records an opt-out, the
// researcher trains a model in the browser and the platform admin deploys it; a new case gets
// the model's second opinion, which the referring spoke never sees (no panel, no run button, no
// request for it; nor can an untouched new-case form record an age band or sex), and which the
// hub pathologist sees only after their first read, with the heatmap overlay and the jump to a
// top region; sign-out records the agreement on the model card.
//
// The English pages, the language switch and the ruler are web/tests/browser-en.mjs.
// Environment: see web/tests/harness.mjs.

import path from "node:path";
import {
  JAPANESE,
  SCALE_TEXT,
  T,
  TILES_TIMEOUT_MS,
  TOTP_STEP_MS,
  addUser,
  apiToken,
  canvasStats,
  check,
  checkLanguage,
  enrolSecondFactor,
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
  textPattern,
  tmpDir,
  totpCode,
  unusedTotpCode,
  uploadThroughPage,
  viewerSettled,
  waitForStatus,
  waitForText,
  waitInPage,
} from "./harness.mjs";

const LOCALE = "ja-JP";
const USERNAME = "alice";
const SLIDE_NAME = "browser.svs";

async function scaleText() {
  return ((await page.textContent("#scale-bar-label")) || "").trim();
}

/** A 6-digit code that is none of `secret`'s codes around now (the server allows one step of
 * clock drift either way). */
function wrongCode(secret) {
  const now = Date.now();
  const near = new Set([-2, -1, 0, 1, 2].map((k) => totpCode(secret, now + k * TOTP_STEP_MS)));
  for (let n = 0; ; n += 1) {
    const code = String((123_456 + n * 7_919) % 1_000_000).padStart(6, "0");
    if (!near.has(code)) return code;
  }
}

// ---- Second factor ----------------------------------------------------------------------------

/**
 * The platform admin's first sign-in lands on the account security page: it says in Japanese
 * why, nothing else opens until a second factor is set up, and setting one up shows ten recovery
 * codes once. Returns the authenticator app's secret.
 */
async function enrolOnSecurityPage(base) {
  await page.locator("#enrol-required").waitFor({ state: "visible", timeout: 10_000 });
  await checkLanguage("security");
  check(((await page.textContent("h1")) || "").trim() === T("security.title"), "the security page's heading");
  check(((await page.textContent("#enrol-required")) || "").trim() === T("security.enrol_required"), "the security page does not say why a second factor is needed");
  check(((await page.textContent("#totp-status")) || "").trim() === T("security.totp.off"), "the second factor's status before enrolment");
  check(((await page.textContent("#security-link")) || "").trim() === T("common.nav.security"), "the nav's account security link");
  // Until then the server answers nothing else, and the pages send the user back here.
  const refused = await page.request.get(`${base}/api/v1/cases`);
  const refusal = await refused.json().catch(() => ({}));
  check(refused.status() === 403 && refusal.error?.code === "second_factor_enrolment_required", `an enrolling admin's API request answered ${refused.status()} ${JSON.stringify(refusal)}`);
  await page.goto(`${base}/cases`);
  await page.waitForURL(`${base}/security`, { timeout: 15_000 });
  await page.locator("#totp-start").waitFor({ state: "visible", timeout: 10_000 });
  step("  the security page explains the policy; other pages lead back to it");

  const { secret, recoveryCodes } = await enrolSecondFactor();
  check(recoveryCodes.length === 10, `expected 10 recovery codes, the page shows ${recoveryCodes.length}`);
  check(new Set(recoveryCodes).size === 10 && recoveryCodes.every((code) => code.length >= 8), `the recovery codes: ${recoveryCodes.join(", ")}`);
  check(((await page.textContent("#totp-status")) || "").trim() === T("security.totp.on"), "the second factor's status after enrolment");
  check(((await page.textContent("#totp-done h3")) || "").trim() === T("security.recovery.heading"), "the recovery codes' heading");
  check(((await page.textContent("#totp-done p:not(.notice)")) || "").trim() === T("security.recovery.advice"), "the advice to keep the recovery codes");
  check(await page.locator("#totp-enrol").isHidden(), "the secret stays on screen after enrolment");
  check(await page.locator("#enrol-required").isHidden(), "the page still says a second factor is needed");
  await checkLanguage("security");
  await screenshot("security-enrolled");
  return secret;
}

/** The admin signs out, and back in: the login page asks for the app's code once the password
 * is right, refuses a wrong one in Japanese, and opens with the right one. */
async function signOutAndBackInWithCode(base, password, secret) {
  step("signing out, and back in with the authenticator app's code");
  await Promise.all([page.waitForURL(`${base}/login`, { timeout: 15_000 }), page.click("#logout-button")]);
  await checkLanguage("login", { nav: false, heading: "#login-button" });
  check(await page.locator("#code-row").isHidden(), "the login page asks for a code before the password");
  await page.fill("#username", USERNAME);
  await page.fill("#password", password);
  await page.click("#login-button");
  await page.locator("#code").waitFor({ state: "visible", timeout: 10_000 });
  check(new URL(page.url()).pathname === "/login", `the password alone signed in: ${page.url()}`);
  check(((await page.textContent("#code-hint")) || "").trim() === T("login.code_hint"), "the one-time code's hint");
  await checkLanguage("login (one-time code)", { nav: false, heading: "#login-button" });

  await page.fill("#code", wrongCode(secret));
  await page.click("#login-button");
  await page.locator("#app-error").waitFor({ state: "visible", timeout: 10_000 });
  const refusal = ((await page.textContent("#app-error")) || "").trim();
  check(refusal === T("errors.invalid_second_factor"), `a wrong code's refusal reads "${refusal}"`);
  check(await page.locator("#code").isVisible(), "the code field goes away after a wrong code");
  check(new URL(page.url()).pathname === "/login", `a wrong code signed in: ${page.url()}`);
  await screenshot("login-code");
  step("  a wrong code is refused in Japanese");

  await page.fill("#code", await unusedTotpCode(secret));
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 15_000 }), page.click("#login-button")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  await checkLanguage("slides");
  step("  signed back in with the app's code");
}

// ---- The test ---------------------------------------------------------------------------------

async function main() {
  setLang("ja");
  const env = await makeDataDir();
  const [password, file] = await passwordFile(USERNAME);
  await run(["admin", "init", "--hospital", "Test Hub", "--kind", "hub", "--user", USERNAME, "--password-file", file], env);
  const slidePath = path.join(tmpDir, SLIDE_NAME);
  await run(["slide", "synth", "--out", slidePath, "--width", "6000", "--height", "4000"], env);
  const base = await startServerAndBrowser(env);
  await newPage(LOCALE);

  // -- Login: a wrong password first, to see the server's refusal in Japanese.
  step("login page: a wrong password shows the refusal in Japanese");
  await page.goto(`${base}/login`);
  await checkLanguage("login", { nav: false, heading: "#login-button" });
  await page.fill("#username", USERNAME);
  await page.fill("#password", `${password}-wrong`);
  await page.click("#login-button");
  await page.locator("#app-error").waitFor({ state: "visible", timeout: 10_000 });
  const loginError = ((await page.textContent("#app-error")) || "").trim();
  check(loginError === T("errors.invalid_credentials"), `the login refusal reads "${loginError}"`);
  await screenshot("login");

  // The platform admin must have a second factor: the first sign-in sets one up.
  step(`logging in as ${USERNAME}: an admin sets up a second factor first`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(`${base}/security`, { timeout: 15_000 }), page.click("#login-button")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  const adminSecret = await enrolOnSecurityPage(base);
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 15_000 }), page.click("#totp-continue")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  const navText = (await page.textContent("#app-nav")) || "";
  check(navText.includes(USERNAME), `nav bar does not name the user: "${navText}"`);
  check(navText.includes("Test Hub"), `nav bar does not name the hospital: "${navText}"`);
  check(navText.includes(T("common.role.platform-admin")), `nav bar does not name the role in Japanese: "${navText}"`);
  await checkLanguage("slides");
  const links = await navLinks();
  const adminLinks = ["cases", "slides", "upload", "opt_out", "datasets", "training", "models", "admin"].map((k) => T(`common.nav.${k}`));
  check(links.join(",") === adminLinks.join(","), `the platform admin's navigation: ${links}`);
  check((await page.inputValue("#lang-select")) === "ja", "the nav's language switch does not show 日本語");
  step("slide list: expecting the empty state");
  await page.locator("#empty-state").waitFor({ timeout: 10_000 });
  check(((await page.textContent("#empty-state p")) || "").trim() === T("slides.empty"), "the empty state is not the catalogue's");

  // -- Upload.
  step("going to the upload page");
  await Promise.all([page.waitForURL(`${base}/upload`), page.click('#app-nav a[href="/upload"]')]);
  await checkLanguage("upload");
  check(((await page.textContent("h1")) || "").trim() === T("upload.title"), "the upload page's heading");
  step(`uploading ${SLIDE_NAME}`);
  const slideId = await uploadThroughPage(slidePath);
  step(`upload done, slide id ${slideId}`);
  await screenshot("upload");

  // -- Viewer.
  step("opening the viewer");
  const openLink = page.locator('.upload-row[data-phase="done"] a.open-viewer');
  check(((await openLink.textContent()) || "").trim() === T("upload.action.open"), "the open link is not the catalogue's");
  await Promise.all([page.waitForURL(/\/viewer\?slide=/), openLink.click()]);
  await waitInPage("the first tiles to load and the image to be fully loaded", viewerSettled, 0, TILES_TIMEOUT_MS);
  // The viewer's heading and title are the file's name; its back link names the page.
  await checkLanguage("viewer", { heading: "#back-link", title: false });
  check(((await page.textContent("#back-link")) || "").trim() === T("viewer.back"), "the viewer's back link");
  check(((await page.textContent("#tool-ruler")) || "").trim() === T("viewer.tool.ruler"), "the viewer's ruler button");
  const tilesAtHome = await page.evaluate(() => window.pathfedTilesLoaded);
  step(`  ${tilesAtHome} tiles loaded at home zoom`);

  const title = ((await page.textContent("#slide-title")) || "").trim();
  check(title === SLIDE_NAME, `viewer header shows "${title}", expected "${SLIDE_NAME}"`);

  // The drawer paints on the next animation frame after the last tile; poll briefly instead of
  // reading the canvas once.
  let stats = null;
  for (let attempt = 0; attempt < 20; attempt += 1) {
    stats = await page.evaluate(canvasStats);
    if (!stats.error && stats.opaque > 1000 && stats.std > 5 && stats.nonWhiteFraction > 0.01) break;
    await sleep(250);
  }
  step(`  canvas ${JSON.stringify(stats, (key, value) => (typeof value === "number" ? Number(value.toFixed(3)) : value))}`);
  check(!stats.error, `canvas check impossible: ${stats.error}`);
  check(stats.opaque > 1000, "the viewer canvas has (almost) no painted pixels");
  check(stats.std > 5, `the viewer canvas looks blank (luminance std ${stats.std.toFixed(2)})`);
  check(stats.nonWhiteFraction > 0.01, "the viewer canvas is all white");

  await waitInPage("the scale bar to show a length", (pattern) => new RegExp(pattern).test((document.getElementById("scale-bar-label")?.textContent || "").trim()), SCALE_TEXT.source, 10_000);
  const scaleAtHome = await scaleText();
  step(`  scale bar at home zoom: ${scaleAtHome}`);

  step("zooming in 4×");
  await page.evaluate(() => {
    const viewport = window.pathfedViewer.viewport;
    viewport.zoomBy(4);
    viewport.applyConstraints();
  });
  await waitInPage("more tiles after zooming in", viewerSettled, tilesAtHome, TILES_TIMEOUT_MS);
  const tilesZoomed = await page.evaluate(() => window.pathfedTilesLoaded);
  step(`  ${tilesZoomed - tilesAtHome} more tiles loaded`);
  // The bar redraws on the next animation frame after the zoom settles.
  await waitInPage("the scale bar to change after zooming", ({ before, pattern }) => {
    const text = (document.getElementById("scale-bar-label")?.textContent || "").trim();
    return text !== before && new RegExp(pattern).test(text);
  }, { before: scaleAtHome, pattern: SCALE_TEXT.source }, 10_000);
  step(`  scale bar after zoom: ${await scaleText()}`);
  await screenshot("viewer");

  // -- Back to the list: the new slide with its thumbnail.
  step("back to the slide list");
  await Promise.all([page.waitForURL(`${base}/`), page.click("#back-link")]);
  await checkLanguage("slides");
  const listRow = page.locator(`#slide-list tr[data-slide-id="${slideId}"]`);
  await listRow.waitFor({ timeout: 10_000 });
  const rowText = (await listRow.textContent()) || "";
  check(rowText.includes(SLIDE_NAME), `slide row does not show the filename: "${rowText}"`);
  // Digit grouping depends on the language; compare digits only.
  check(rowText.replace(/[^\d×]/g, "").includes("6000×4000"), `slide row does not show 6000 × 4000: "${rowText}"`);
  const thumbnail = listRow.locator("img.thumbnail");
  await thumbnail.scrollIntoViewIfNeeded();
  const thumbHandle = await thumbnail.elementHandle();
  await waitInPage("the thumbnail to load", (img) => img.complete && img.naturalWidth > 0, thumbHandle, 30_000);
  const thumbSize = await thumbHandle.evaluate((img) => `${img.naturalWidth}×${img.naturalHeight}`);
  step(`  thumbnail loaded (${thumbSize})`);
  await screenshot("slides");
  await signOutAndBackInWithCode(base, password, adminSecret);

  const passwords = await consultation(base, env, slidePath);
  const researcher = await researchCatalogue(base, env);
  await optOut(base, env, passwords, researcher.token);
  await trainingAndModels(base, env, researcher, { password, secret: adminSecret });
  await aiSupport(base, env, passwords);
}

// ---- Shared steps of the consultation ---------------------------------------------------------

/** Opens the case from the case list (the worklist for hub pathologists) of `view`. */
async function openCaseFromList(base, caseId, { worklist = false, view = "" } = {}) {
  await page.goto(`${base}/cases${view ? `?view=${view}` : ""}`);
  const row = page.locator(`tr[data-case-id="${caseId}"]`);
  await row.waitFor({ timeout: 10_000 });
  await checkLanguage(worklist ? "worklist" : "cases");
  const heading = ((await page.textContent("#cases-title")) || "").trim();
  const expected = T(worklist ? "cases.title_worklist" : "cases.title");
  check(heading === expected, `the case list's heading reads "${heading}", expected "${expected}"`);
  await Promise.all([page.waitForURL(/\/case\?id=/), row.locator("a.case-link").click()]);
  await openedCase();
}

/** The case page has loaded its case: checks its language. */
async function openedCase() {
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
  await checkLanguage("case");
}

/** A diagnosis label as the pages and the report name it in Japanese (from the case's
 * taxonomy as the API gives it). */
async function labelInJapanese(code) {
  const label = await page.evaluate((wanted) => (window.pathfedCase.taxonomy_labels || []).find((l) => l.code === wanted), code);
  check(label, `the case's taxonomy has no ${code}`);
  return label.label_ja && label.label_ja.trim() ? label.label_ja : label.name;
}

/** Signs the case out through the preview dialog: the report as it will be issued, then
 * "確定して発行". */
async function signOutWithPreview(patientId) {
  const button = page.locator("#sign-out");
  check(((await button.textContent()) || "").trim() === T("case.action.sign_out"), "the sign-out button's text");
  await button.click();
  await page.locator("#signout-dialog").waitFor({ state: "visible", timeout: 10_000 });
  check(((await page.textContent("#signout-title")) || "").trim() === T("case.signout.title"), "the preview dialog's title");
  await page.locator("#signout-confirm:not([disabled])").waitFor({ timeout: 20_000 });
  const preview = (await page.getAttribute("#signout-preview", "srcdoc")) || "";
  check(preview.includes(patientId), `the preview does not show the patient id ${patientId}`);
  check(/<html lang="ja"/.test(preview), "the preview of a Japanese hub's report is not in Japanese");
  check(((await page.textContent("#signout-confirm")) || "").trim() === T("case.signout.confirm"), "the confirm button's text");
  await screenshot("signout-preview");
  await page.click("#signout-confirm");
  await waitForStatus("signed_out");
}

// ---- Consultation: bell → claim → annotate → read → blind check → preview → report -------------

async function consultation(base, env, slidePath) {
  const passwords = {};
  await run(["admin", "hospital", "add", "Test Spoke", "--kind", "spoke"], env);
  for (const [name, hospital, role] of [["spoke1", "Test Spoke", "submitter"], ["path1", "Test Hub", "pathologist"], ["path2", "Test Hub", "pathologist"]]) {
    passwords[name] = await addUser(env, name, hospital, role);
  }
  await run(["admin", "hospital", "default-hub", "Test Spoke", "Test Hub"], env);
  const token = await apiToken(env, "spoke1");
  const created = await run([
    "case", "create", "--server", base, "--token", token, "--patient-id", "MRN-BROWSER-1",
    "--age-band", "50-59", "--sex", "female", "--organ", "stomach", "--specimen", "gastric biopsy",
    "--question", "Neoplasia?", "--upload", slidePath, "--submit", "--state-file", path.join(tmpDir, "uploads.json"),
  ], env);
  const caseId = created.trim().split("\n").pop().trim();
  step(`case ${caseId} submitted by the spoke`);

  // -- First pathologist: the bell counts the new request and leads to the case.
  await signIn(base, "path1", passwords.path1, { locale: LOCALE });
  await checkLanguage("slides");
  await waitInPage("the notifications bell to count the new request", () => {
    const badge = document.getElementById("notif-badge");
    return Boolean(badge && !badge.hidden && Number(badge.textContent) >= 1);
  }, null, 15_000);
  const unread = Number(await page.textContent("#notif-badge"));
  const bellLabel = await page.getAttribute("#notif-button", "aria-label");
  check(bellLabel === T("notifications.button_unread", { n: unread }), `the bell's label reads "${bellLabel}"`);
  await page.click("#notif-button");
  await page.locator("#notif-panel").waitFor({ state: "visible", timeout: 10_000 });
  const notice = page.locator(`#notif-list li.unread a.notif-link[href="/case?id=${caseId}"]`);
  await notice.waitFor({ timeout: 10_000 });
  const noticeText = (await notice.textContent()) || "";
  check(noticeText.includes(T("notifications.kind.case_submitted")), `the notice reads "${noticeText}"`);
  check(noticeText.includes(T("notifications.case", { id: caseId.slice(0, 8) })), `the notice does not name the case: "${noticeText}"`);
  await screenshot("notifications");
  step(`  the bell shows ${unread} unread, the newest the spoke's request`);
  await Promise.all([page.waitForURL(/\/case\?id=/), notice.click()]);
  await openedCase();
  const readLabel = unread - 1 === 0 ? T("notifications.button") : T("notifications.button_unread", { n: unread - 1 });
  await waitInPage("the opened notice to count as read", (want) => document.getElementById("notif-button")?.getAttribute("aria-label") === want, readLabel, 15_000);

  // -- First pathologist: claim → pan → annotate → first read.
  check(((await page.textContent("#claim-case")) || "").trim() === T("case.action.claim"), "the claim button's text");
  await page.click("#claim-case");
  await waitForStatus("assigned");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  // The reader checks the patient's identity: the id in the case panel, the label on request.
  const caseDetails = await page.innerText("#case-details");
  check(caseDetails.includes("MRN-BROWSER-1"), `the reader's case panel lacks the patient id: ${caseDetails}`);
  check(caseDetails.includes(T("case.details.patient_id")), `the case panel's fields are not in Japanese: ${caseDetails}`);
  await page.locator("#label-section").waitFor({ timeout: 10_000 });
  await page.click("#label-summary");
  await page.locator("#label-image").waitFor({ timeout: 10_000 });
  const labelImage = await page.locator("#label-image").elementHandle();
  await waitInPage("the slide label to load", (img) => img.complete && img.naturalWidth > 0, labelImage, 20_000);
  await screenshot("case-label");
  await page.click("#label-summary");
  step("  the reader sees the patient id and the slide label");
  const box = await page.locator("#osd-a").boundingBox();
  const centre = () => page.evaluate(() => {
    const c = window.pathfedViewer.viewport.getCenter(true);
    return [c.x, c.y];
  });
  const before = await centre();
  step("panning the slide with the mouse");
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 - 120, box.y + box.height / 2 - 60, { steps: 8 });
  await page.mouse.up();
  await waitInPage("the view to move", (start) => {
    const c = window.pathfedViewer.viewport.getCenter(true);
    return Math.hypot(c.x - start[0], c.y - start[1]) > 0.01;
  }, before, 10_000);

  step("drawing a labelled rectangle");
  await page.click('.tool[data-tool="rectangle"]');
  check(((await page.textContent("#tool-hint")) || "").trim() === T("case.hint.rectangle"), "the rectangle tool's hint");
  await page.selectOption("#annotation-label", "GAS-G4");
  await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.4);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.55, box.y + box.height * 0.6, { steps: 8 });
  await page.mouse.up();
  const drawn = page.locator("#annotation-list li[data-annotation-id]").first();
  await drawn.waitFor({ timeout: 10_000 });
  const shapes = await page.locator("#osd-a svg.annotation-layer polygon.shape").count();
  check(shapes === 1, `expected the rectangle drawn on the slide, found ${shapes} shapes`);
  const g4 = await labelInJapanese("GAS-G4");
  const listed = (await drawn.textContent()) || "";
  check(listed.includes(T("case.kind.rectangle")) && listed.includes(g4), `the annotation list reads "${listed}"`);
  await page.click('.tool[data-tool=""]');

  step("entering the first read");
  await page.selectOption("#read-code", "GAS-G4");
  await page.fill("#read-findings", "Irregular crowded glands; first read by path1");
  await page.click("#read-submit");
  await waitForStatus("diagnosed");
  await screenshot("case-first-read");

  // -- Second pathologist: blind double-check, concordant, sign-out through the preview.
  await signIn(base, "path2", passwords.path2, { locale: LOCALE });
  await checkLanguage("slides");
  await openCaseFromList(base, caseId, { worklist: true });
  check(((await page.textContent("#take-double-check")) || "").trim() === T("case.action.take_double_check"), "the double-check button's text");
  await page.click("#take-double-check");
  await waitForStatus("in_double_check");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  const blindText = (await page.textContent(".case-panel")) || "";
  check(!blindText.includes("first read by path1"), "the second reader can see the first read");
  check((await page.locator("#annotation-list li[data-annotation-id]").count()) === 0, "the second reader sees the first reader's annotation");
  check((await page.locator("#osd-a svg.annotation-layer .shape").count()) === 0, "the first reader's shape is drawn for the second reader");
  step("  first read and annotations hidden from the second reader");
  step("side by side with synchronised navigation");
  await page.check("#side-by-side");
  await waitInPage("the second viewer to open", () => {
    const second = window.pathfedViewers[1];
    return Boolean(second && second.world.getItemAt(0) && second.world.getItemAt(0).getFullyLoaded());
  }, null, TILES_TIMEOUT_MS);
  await page.evaluate(() => {
    const viewport = window.pathfedViewers[0].viewport;
    viewport.zoomBy(2);
    viewport.panBy(new OpenSeadragon.Point(0.05, 0.02));
  });
  await waitInPage("the second viewer to follow the first", () => {
    const [a, b] = window.pathfedViewers.map((v) => v.viewport);
    const ca = a.getCenter(false);
    const cb = b.getCenter(false);
    return Math.abs(a.getZoom(false) - b.getZoom(false)) < 1e-6 * a.getZoom(false) && Math.hypot(ca.x - cb.x, ca.y - cb.y) < 1e-6;
  }, null, 10_000);
  await page.uncheck("#side-by-side");
  await page.selectOption("#read-code", "GAS-G4");
  await page.fill("#read-findings", "Agree: suspicious for carcinoma");
  await page.click("#read-submit");
  await waitForStatus("ready_for_sign_out");
  const readsShown = await page.locator("#reads .read").count();
  check(readsShown === 2, `after the double-check both reads should show, found ${readsShown}`);
  await signOutWithPreview("MRN-BROWSER-1");
  await page.locator("#reports a.report-html").waitFor({ timeout: 10_000 });
  const pdfHref = await page.locator("#reports a.report-pdf").first().getAttribute("href");
  check(pdfHref && /\/reports\/1\/report\.pdf$/.test(pdfHref), `the report's PDF link: ${pdfHref}`);
  const pdf = await page.request.get(`${base}${pdfHref}`);
  check(pdf.status() === 200, `the report PDF answered ${pdf.status()}`);
  check((await pdf.body()).subarray(0, 5).toString("latin1") === "%PDF-", "the report PDF link does not give a PDF");
  await screenshot("case-signed-out");
  step("  signed out through the preview; the report's HTML and PDF are there");

  // -- The spoke sees the new report.
  await signIn(base, "spoke1", passwords.spoke1, { locale: LOCALE });
  await checkLanguage("slides");
  await page.goto(`${base}/cases`);
  await checkLanguage("cases");
  const flagged = page.locator(`tr[data-case-id="${caseId}"] .badge-new`);
  await flagged.waitFor({ timeout: 10_000 });
  check(((await flagged.textContent()) || "").trim() === T("cases.new_report"), "the new-report marker's text");
  step("  the spoke's list marks a new report");
  await openCaseFromList(base, caseId);
  const diagnosis = await labelInJapanese("GAS-G4");
  const reportHref = await page.locator("#reports a.report-html").first().getAttribute("href");
  check(await page.locator("#reports a.report-pdf").count(), "the spoke has no PDF link for the report");
  await page.goto(`${base}${reportHref}`);
  await checkLanguage("report", { nav: false });
  const reportText = (await page.textContent("body")) || "";
  for (const expected of ["MRN-BROWSER-1", diagnosis, "SHA-256", "path2"]) {
    check(reportText.includes(expected), `the report lacks "${expected}"`);
  }
  await screenshot("case-report", { fullPage: true });
  // The signed-out case leaves the open list once its report is read; every case is under "all".
  await page.goto(`${base}/cases?view=all`);
  await page.locator(`tr[data-case-id="${caseId}"]`).waitFor({ timeout: 10_000 });
  await checkLanguage("cases");
  check((await flagged.count()) === 0, "the new-report marker stays after the spoke opened the report");
  step("consultation flow done");
  return passwords;
}

// ---- Research: the signed-out slide becomes a dataset version with patches ----------------------

/** The research pages, as a researcher's navigation names them. */
const researchLinks = () => ["datasets", "training", "models"].map((k) => T(`common.nav.${k}`)).join(",");

async function researchCatalogue(base, env) {
  const password = await addUser(env, "res1", "Test Hub", "researcher");
  const token = await apiToken(env, "res1");
  // Curation runs in the background after sign-out; build the version once it has.
  const args = ["dataset", "create", "gastric", "--server", base, "--token", token, "--labels", "gastric-group", "--min-cell-size", "1"];
  let built = null;
  for (let attempt = 0; !built; attempt++) {
    try {
      built = await run(args, env);
    } catch (err) {
      if (attempt >= 90 || !/no research slides match/.test(err.message)) throw err;
      await sleep(1000);
    }
  }
  check(/gastric@1/.test(built) && /patches: \d+/.test(built), `dataset create printed:\n${built}`);

  // A researcher's home is the catalogue.
  await signIn(base, "res1", password, { locale: LOCALE, home: "/datasets" });
  await checkLanguage("datasets");
  const links = await navLinks();
  check(links.join(",") === researchLinks(), `a researcher's navigation should offer only the research pages, got ${links}`);
  await page.locator('#versions tr[data-version="gastric@1"]').waitFor({ timeout: 10_000 });
  await page.locator('#patch-balance tr[data-label="GAS-G4"]').waitFor({ timeout: 10_000 });
  const slideCells = await page.locator('#slide-balance tr[data-label="GAS-G4"] td').allTextContents();
  check(slideCells.slice(1).map(Number).reduce((a, b) => a + b, 0) === 1, `one slide of GAS-G4 in the balance, got ${slideCells}`);
  await waitInPage("the sample patches to load", () => {
    const images = [...document.querySelectorAll("#sample-patches img")];
    return images.length > 0 && images.every((img) => img.complete && img.naturalWidth === 256);
  }, null, 20_000);
  // The version's details are drawn now: their headings and table headers too.
  await checkLanguage("datasets");
  const shown = (await page.textContent("main")) || "";
  check(!shown.includes("MRN-BROWSER-1"), "the catalogue shows a clinical patient id");
  await screenshot("datasets", { fullPage: true });
  step("research catalogue shows the version, its class balance and sample patches");

  // The next version from the catalogue's form, as `pathfed dataset create` would build it.
  await page.click("#create-panel summary");
  await page.locator('#ds-labels option[value="gastric-group"]').waitFor({ state: "attached", timeout: 10_000 });
  await checkLanguage("datasets");
  await page.fill("#ds-name", "gastric");
  await page.selectOption("#ds-labels", "gastric-group");
  await page.fill("#ds-min-cell", "1");
  await page.fill("#ds-patch-px", "128");
  await page.fill("#ds-patch-mpp", "1");
  await page.click("#ds-create");
  await waitForText("the form's version to be published", "ds-progress", textPattern("datasets.create.published", { ref: "gastric@2" }), 120_000);
  await page.locator('#versions tr[data-version="gastric@2"]').waitFor({ timeout: 10_000 });
  await waitInPage("the new version's details", () => /128/.test(document.getElementById("version-detail")?.textContent || ""), null, 20_000);
  await checkLanguage("datasets");
  step("a version created from the catalogue's form was built with patches and is shown");
  return { token, password };
}

// ---- Opt-out: the spoke records it in the browser; the research tier lets go --------------------

async function optOut(base, env, passwords, researcherToken) {
  await signIn(base, "spoke1", passwords.spoke1, { locale: LOCALE });
  await checkLanguage("slides");
  const links = await navLinks();
  check(links.includes(T("common.nav.opt_out")), `a submitter's navigation should offer the opt-out page, got ${links}`);
  await page.goto(`${base}/opt-out`);
  await page.locator("#opt-out-form").waitFor({ state: "visible", timeout: 10_000 });
  await checkLanguage("opt-out");
  step("recording MRN-BROWSER-1's opt-out in the form");
  await page.fill("#oo-patient", "MRN-BROWSER-1");
  await page.check("#oo-confirm");
  await page.click("#oo-submit");
  await waitForText("the opt-out to be recorded", "oo-result", textPattern("opt-out.recorded", { id: "MRN-BROWSER-1" }));
  await page.locator("#opt-out-table").waitFor({ timeout: 10_000 });
  await checkLanguage("opt-out");
  await screenshot("opt-out");
  await page.fill("#oo-patient", "MRN-BROWSER-1");
  await page.check("#oo-confirm");
  await page.click("#oo-submit");
  await waitForText("the second submission to say it was on record", "oo-result", textPattern("opt-out.recorded_again", { id: "MRN-BROWSER-1" }));
  // The research slide goes in the background; then no version can include the patient.
  const args = ["dataset", "create", "gastric", "--server", base, "--token", researcherToken, "--labels", "gastric-group", "--min-cell-size", "1", "--no-patches"];
  for (let attempt = 0; ; attempt++) {
    try {
      await run(args, env);
    } catch (err) {
      if (/no research slides match/.test(err.message)) break;
      throw err;
    }
    check(attempt < 30, "the opted-out patient's research slide is still offered after 30 s");
    await sleep(1000);
  }
  step("opt-out recorded in the browser; the patient's slide is out of the research tier");
}

// ---- Training: the researcher trains in the browser, follows the curves, deploys ---------------

/** Signs six generated cases out through the API: G1 dense, G3 stromal tissue. */
async function signedOutTextureCases(base, env) {
  const tokens = {};
  for (const name of ["spoke1", "path1", "path2"]) tokens[name] = await apiToken(env, name);
  const call = async (who, method, url, body) => {
    const response = await fetch(`${base}${url}`, {
      method,
      headers: { Authorization: `Bearer ${tokens[who]}`, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    check(response.ok, `${method} ${url}: ${response.status} ${await response.text()}`);
  };
  const cases = [];
  for (let i = 0; i < 6; i++) {
    const [code, tissue] = i % 2 ? ["GAS-G3", "stroma"] : ["GAS-G1", "nucleus-dense"];
    const file = path.join(tmpDir, `texture-${i}.svs`);
    await run(["slide", "synth", "--out", file, "--width", "2400", "--height", "1800", "--classes", tissue, "--seed", String(70 + i)], env);
    const created = await run([
      "case", "create", "--server", base, "--token", tokens.spoke1, "--patient-id", `MRN-TRAIN-${i}`,
      "--age-band", "60-69", "--sex", "male", "--organ", "stomach", "--specimen", "gastric biopsy",
      "--question", "Dysplasia?", "--upload", file, "--submit", "--state-file", path.join(tmpDir, `train-${i}.json`),
    ], env);
    const caseId = created.trim().split("\n").pop().trim();
    const slideId = created.split("\n").map((l) => l.split("\tslide ")[1]).find(Boolean).trim().split(/\s+/)[0];
    const read = { code, findings: "generated texture", slides: [{ slide_id: slideId, code, findings: "" }] };
    const at = `/api/v1/cases/${caseId}`;
    await call("path1", "POST", `${at}/claim`);
    await call("path1", "PUT", `${at}/reads/primary`, read);
    await call("path2", "POST", `${at}/double-check`);
    await call("path2", "PUT", `${at}/reads/second`, read);
    await call("path1", "POST", `${at}/sign-out`);
    cases.push(caseId);
  }
  step(`signed out ${cases.length} texture cases for training`);
}

async function trainingAndModels(base, env, researcher, admin) {
  await signedOutTextureCases(base, env);
  const args = [
    "dataset", "create", "textures", "--server", base, "--token", researcher.token, "--labels", "gastric-group",
    "--filter", "organ=stomach", "--min-cell-size", "1", "--split", "0.34,0.33,0.33", "--patch-size", "64", "--patch-mpp", "2",
  ];
  let built = null;
  for (let attempt = 0; !built; attempt++) {
    try {
      const out = await run(args, env);
      // Curation is in the background: wait until all six texture slides are in.
      if (/slides: 6\b/.test(out)) built = out;
      else check(attempt < 90, `the texture version never held six slides:\n${out}`);
    } catch (err) {
      if (attempt >= 90 || !/no research slides match/.test(err.message)) throw err;
    }
    if (!built) await sleep(1000);
  }
  const version = /textures@(\d+)/.exec(built)[1];
  step(`dataset textures@${version} built with patches`);

  await signIn(base, "res1", researcher.password, { locale: LOCALE, home: "/datasets" });
  await checkLanguage("datasets");
  await page.goto(`${base}/training`);
  const links = await navLinks();
  check(links.join(",") === researchLinks(), `a researcher's navigation: ${links}`);
  await page.locator(`#train-dataset option[value="textures@${version}"]`).waitFor({ state: "attached", timeout: 10_000 });
  await checkLanguage("training");
  // Foundation-model encoders are offered; one whose weights were never placed in the
  // pretrained folder is listed, in Japanese, but cannot be chosen.
  const uni = page.locator('#train-encoder option[value="uni2-h"]');
  check(await uni.isDisabled(), "an encoder without weights can be chosen");
  check(((await uni.textContent()) || "").trim() === T("training.encoder.missing", { name: "uni2-h" }), `the missing encoder reads "${await uni.textContent()}"`);
  check(await page.locator("#train-head").isHidden(), "a CNN run shows the encoder's head choice");
  await page.selectOption("#train-dataset", `textures@${version}`);
  // A batch larger than the train split is refused: the refusal in Japanese with the server's
  // detail, nothing queued.
  await page.selectOption("#train-model", "resnet-small");
  await page.fill("#train-batch", "4000");
  await page.click("#train-start");
  const refusal = await waitForText("the refusal to show", "app-error", /larger than the train split/);
  check(refusal.trim().startsWith(T("errors.invalid")), `the refusal is not worded in Japanese: "${refusal}"`);
  await page.fill("#train-batch", "16");
  await page.fill("#train-epochs", "4");
  await page.fill("#train-name", "textures-small");
  await page.click("#train-start");
  step("training run started from the form");
  const epochs = textPattern("training.chart.epoch", { n: /[2-4]/ });
  await waitInPage("curves of two epochs", ({ source }) => document.querySelectorAll('#run-curves polyline[data-split="valid"]').length === 3 && new RegExp(source).test(document.getElementById("run-curves")?.textContent || ""), { source: epochs.source }, 120_000);
  await waitInPage("the run to register its model", () => /textures-small@1/.test(document.getElementById("run-detail")?.textContent || ""), null, 180_000);
  // Accuracy and AUROC are percentages: their axes end at 100, not above it.
  const tops = await page.evaluate(() => [...document.querySelectorAll("#run-curves svg.curve")].map((svg) => svg.querySelectorAll("text")[1]?.textContent));
  check(tops.length === 3 && tops[1] === "100.00" && tops[2] === "100.00", `the accuracy and AUROC axes end at ${tops.slice(1)}, not 100`);
  await checkLanguage("training");
  await screenshot("training", { fullPage: true });
  step("the run's curves drew as it trained and it registered textures-small@1");

  await Promise.all([page.waitForURL(/\/models#textures-small@1$/), page.click("#run-model-link")]);
  await page.locator("#card-notice").waitFor({ timeout: 10_000 });
  await checkLanguage("models");
  check(((await page.textContent("#decision-support")) || "").trim() === T("models.decision_support"), "the models page's decision-support notice");
  // The card's own notice is part of the stored model card, as the server wrote it.
  check(((await page.textContent("#card-notice")) || "").trim().length > 0, "the card lacks its decision-support notice");
  check(/AUC/.test(await page.textContent("#card-metrics")), "the card lacks metrics");
  check((await page.locator("#card-limitations li").count()) >= 3, "the card lists no limitations");
  for (const plot of ["#roc-plot", "#loss-plot"]) {
    const handle = await page.locator(plot).elementHandle();
    await waitInPage(`${plot} to load`, (img) => img.complete && img.naturalWidth === 640, handle, 20_000);
  }
  check((await page.locator("#deploy-button").count()) === 0, "a researcher is offered Deploy");
  check(((await page.textContent("#deploy-note")) || "").trim() === T("models.deploy.admin_only"), "the researcher is not told who deploys");
  step("the researcher reads the card; deploying is the platform admin's");

  // The platform admin (the first user, made by `admin init`) decides what reaches the clinic;
  // they sign in with the app's code. Six slides cannot show that a model beats chance, so the
  // deploy asks for a reason.
  await signIn(base, USERNAME, admin.password, { locale: LOCALE, secret: admin.secret });
  await checkLanguage("slides");
  await page.goto(`${base}/models#textures-small@1`);
  await page.locator("#deploy-button").waitFor({ timeout: 10_000 });
  await checkLanguage("models");
  const where = { organ: "stomach", taxonomy: "gastric-group" };
  const deployed = [textPattern("models.deploy.done", where), textPattern("models.deploy.done_reason", where)].map((p) => p.source);
  await page.click("#deploy-button");
  const dialog = page.locator("#deploy-reason-dialog");
  await Promise.race([
    dialog.waitFor({ timeout: 10_000 }).catch(() => {}),
    page.waitForFunction((sources) => sources.some((s) => new RegExp(s).test(document.getElementById("deploy-status")?.textContent || "")), deployed, { timeout: 10_000 }).catch(() => {}),
  ]);
  if (await dialog.isVisible()) {
    check(((await page.textContent("#deploy-reason-title")) || "").trim() === T("models.reason.title"), "the reason dialog's title");
    // The server's figures are shown as it sent them (marked as English).
    check(/chance/.test(await page.textContent("#deploy-reason-message")), "the reason dialog does not say why");
    await page.fill("#deploy-reason", "browser test: pilot, every call reviewed by a pathologist");
    await page.click("#deploy-reason-confirm");
    step("deploy asked for a reason (the model is not shown to beat chance) and got one");
  }
  await waitInPage("the deployment to show", (sources) => sources.some((s) => new RegExp(s).test(document.getElementById("deploy-status")?.textContent || "")), deployed, 10_000);
  const row = (await page.locator('#models tr[data-model="textures-small@1"]').textContent()) || "";
  check(row.includes("stomach / gastric-group"), `the registry row does not show the deployment: ${row}`);
  await checkLanguage("models");
  await screenshot("model-card", { fullPage: true });
  step("model card with ROC and loss plots read; model deployed for stomach / gastric-group");
}

// ---- AI support: the deployed model's second opinion in the case view ---------------------------

async function aiSupport(base, env, passwords) {
  await run(["admin", "hospital", "ai-after-first-read", "Test Hub", "on"], env);
  const token = await apiToken(env, "spoke1");
  // Mostly stroma (GAS-G3, the model's positive class), with a band of dense nuclei on the right.
  const file = path.join(tmpDir, "ai-case.svs");
  await run(["slide", "synth", "--out", file, "--width", "4800", "--height", "2400", "--classes", "stroma,stroma,stroma,stroma,nucleus-dense", "--layout", "columns", "--tissue-fraction", "0.6", "--seed", "91"], env);
  const created = await run([
    "case", "create", "--server", base, "--token", token, "--patient-id", "MRN-AI-1",
    "--age-band", "60-69", "--sex", "male", "--organ", "stomach", "--specimen", "gastric biopsy",
    "--question", "Dysplasia?", "--upload", file, "--submit", "--state-file", path.join(tmpDir, "ai-upload.json"),
  ], env);
  const caseId = created.trim().split("\n").pop().trim();
  const slideId = created.split("\n").map((l) => l.split("\tslide ")[1]).find(Boolean).trim().split(/\s+/)[0];
  // The run is the hub's: followed as its pathologist (the result itself stays hidden from them
  // until their first read); the spoke is refused it.
  const readerToken = await apiToken(env, "path1");
  const headers = { Authorization: `Bearer ${readerToken}` };
  for (let attempt = 0; ; attempt++) {
    const overview = await (await fetch(`${base}/api/v1/slides/${slideId}/ai`, { headers })).json();
    const job = (overview.jobs || [])[0];
    check(!job || job.status !== "failed", `the infer job failed: ${job && job.error}`);
    if (job && job.status === "succeeded") break;
    check(attempt < 240, "no AI result two minutes after the upload");
    await sleep(500);
  }
  const spokeAnswer = await fetch(`${base}/api/v1/slides/${slideId}/ai`, { headers: { Authorization: `Bearer ${token}` } });
  check(spokeAnswer.status === 403, `the spoke's AI request answered ${spokeAnswer.status}`);
  step(`case ${caseId}: the deployed model ran on its slide by itself`);
  await spokeSeesNoAi(base, passwords, caseId);

  await signIn(base, "path1", passwords.path1, { locale: LOCALE });
  await checkLanguage("slides");
  await openCaseFromList(base, caseId, { worklist: true });
  await page.click("#claim-case");
  await waitForStatus("assigned");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  await page.locator("#ai-hidden").waitFor({ timeout: 10_000 });
  // The decision-support notice is for the reader: in their language.
  const aiNotice = ((await page.textContent("#ai-notice")) || "").trim();
  check(JAPANESE.test(aiNotice) && aiNotice !== T("case.ai.notice", {}, "en"), `the AI panel's notice is not in Japanese: "${aiNotice}"`);
  // The reason is the server's, in whatever words it has (or none).
  check(textPattern("case.ai.hidden", { reason: /.*/ }).test(await page.textContent("#ai-hidden")), "the AI panel does not say, in Japanese, that it is hidden");
  check((await page.locator("#ai-score").count()) === 0, "the AI score shows before the first read");
  check((await page.evaluate(() => window.pathfedViewer.world.getItemCount())) === 1, "an overlay is drawn before the first read");
  await checkLanguage("case");
  step("  before the first read the AI panel says it is hidden");

  await page.selectOption("#read-code", "GAS-G3");
  await page.fill("#read-findings", "Stroma-rich biopsy; first read before seeing AI");
  await page.click("#read-submit");
  await waitForStatus("diagnosed");
  await page.locator("#ai-score").waitFor({ timeout: 15_000 });
  const score = (await page.textContent("#ai-score")) || "";
  check(/GAS-G3|Group 3/.test(score), `the AI panel shows "${score}"`);
  check(textPattern("case.ai.suggests").test(score), `the AI panel's suggestion is not worded in Japanese: "${score}"`);
  check((await page.getAttribute("#ai-model-link", "href")) === "/model-card?model=textures-small@1", "the panel does not link the model card");
  step(`  after the first read: "${score.trim()}"`);
  // What the model called, as the API says it (the panel shows the deployed model's result).
  const overview = await (await fetch(`${base}/api/v1/slides/${slideId}/ai`, { headers })).json();
  const results = overview.results || [];
  const deployedModel = overview.deployed;
  const chosen = results.find((r) => deployedModel && r.model === deployedModel.model && r.version === deployedModel.version) || results[0];
  check(chosen, `no AI result for the reader after the first read: ${JSON.stringify(overview)}`);

  await page.check("#ai-overlay-toggle");
  await waitInPage("the heatmap overlay to load", () => {
    const item = window.pathfedViewer.world.getItemAt(1);
    return Boolean(item && item.getFullyLoaded());
  }, null, TILES_TIMEOUT_MS);
  await page.evaluate(() => {
    const range = document.getElementById("ai-opacity");
    range.value = "0.8";
    range.dispatchEvent(new Event("input"));
  });
  const opacity = await page.evaluate(() => window.pathfedViewer.world.getItemAt(1).getOpacity());
  check(Math.abs(opacity - 0.8) < 1e-6, `the overlay's opacity is ${opacity}`);
  const overlaid = await page.evaluate(canvasStats);
  check(!overlaid.error && overlaid.opaque > 1000, "the viewer paints nothing with the overlay on");
  await checkLanguage("case");
  await screenshot("ai-overlay");

  const zoomBefore = await page.evaluate(() => window.pathfedViewer.viewport.getZoom(true));
  await page.click('.ai-region[data-region="0"]');
  await waitInPage("the viewer to centre on the top region", () => {
    const region = window.pathfedLastJump;
    const viewer = window.pathfedViewer;
    if (!region || viewer.viewport.getZoom(true) <= 0) return false;
    const item = viewer.world.getItemAt(0);
    const want = item.imageToViewportCoordinates(region.x + region.width / 2, region.y + region.height / 2);
    const at = viewer.viewport.getCenter(true);
    return Math.hypot(want.x - at.x, want.y - at.y) < 0.01;
  }, null, 10_000);
  const zoomAfter = await page.evaluate(() => window.pathfedViewer.viewport.getZoom(true));
  check(zoomAfter > zoomBefore * 2, `the jump did not zoom in (${zoomBefore} → ${zoomAfter})`);
  await page.uncheck("#ai-overlay-toggle");
  await waitInPage("the overlay to go", () => window.pathfedViewer.world.getItemCount() === 1, null, 10_000);
  await screenshot("ai-region");
  step("  overlay toggled, opacity set, jumped to the top region");

  // Double-check and sign-out; the card then counts the agreement.
  await signIn(base, "path2", passwords.path2, { locale: LOCALE });
  await checkLanguage("slides");
  await openCaseFromList(base, caseId, { worklist: true });
  await page.click("#take-double-check");
  await waitForStatus("in_double_check");
  await page.locator("#ai-hidden").waitFor({ timeout: 10_000 });
  await page.selectOption("#read-code", "GAS-G3");
  await page.fill("#read-findings", "Agree");
  await page.click("#read-submit");
  await waitForStatus("ready_for_sign_out");
  await page.locator("#ai-score").waitFor({ timeout: 15_000 });
  await signOutWithPreview("MRN-AI-1");
  await Promise.all([page.waitForURL(/\/model-card\?model=textures-small@1$/), page.click("#ai-model-link")]);
  await page.locator("#card-concordance").waitFor({ timeout: 10_000 });
  // The card's title is the model's name; its heading says what it is.
  await checkLanguage("model card", { title: false });
  // Both reads said Group 3; the card counts an agreement exactly when the model said so too.
  const agreements = chosen.predicted === "GAS-G3" ? 1 : 0;
  const agreement = (await page.textContent("#card-concordance")) || "";
  const wanted = textPattern("models.concordance.agreement_value", { agreements, comparable: 1 });
  check(wanted.test(agreement), `the card's agreement with pathologists: "${agreement}", expected ${agreements} of 1`);
  check(((await page.textContent("#card-notice")) || "").trim().length > 0, "the model card lacks the notice");
  await screenshot("ai-model-card", { fullPage: true });
  step("sign-out recorded the agreement; the model card shows it");
}

/** The referring spoke opens its submitted case once the model has run: no AI panel, no run
 * button, no score, and the page asks the server for none of it (the case says AI support is
 * not the spoke's). Before that, the new-case form refuses an untouched age band and sex. */
async function spokeSeesNoAi(base, passwords, caseId) {
  await signIn(base, "spoke1", passwords.spoke1, { locale: LOCALE });
  await checkLanguage("slides");
  await page.goto(`${base}/cases`);
  await page.locator("#new-case-button").waitFor({ state: "visible", timeout: 10_000 });
  await checkLanguage("cases");
  await page.click("#new-case-button");
  await page.fill("#nc-patient", "MRN-FORM-1");
  // The organs are the server's list, named in Japanese.
  await page.locator('#nc-organ option[value="stomach"]').waitFor({ state: "attached", timeout: 10_000 });
  await page.selectOption("#nc-organ", "stomach");
  const organ = ((await page.locator('#nc-organ option[value="stomach"]').textContent()) || "").trim();
  check(JAPANESE.test(organ), `the organ list names the stomach "${organ}"`);
  await page.fill("#nc-specimen", "gastric biopsy");
  await page.fill("#nc-question", "Dysplasia?");
  await checkLanguage("cases");
  await page.click("#nc-create");
  const untouched = await page.evaluate(() => ["nc-age", "nc-sex"].map((id) => document.getElementById(id).validity.valueMissing));
  check(untouched.every(Boolean), `an untouched age band or sex passes the form: ${untouched}`);
  // Nothing to wait for when nothing happens: give a wrongly accepted form the time to leave.
  await sleep(500);
  check(new URL(page.url()).pathname === "/cases", `the untouched form created a case: ${page.url()}`);
  step("  the new-case form refuses an untouched age band and sex");

  const aiRequests = [];
  page.on("request", (request) => {
    if (/^\/api\/v1\/slides\/[^/]+\/ai\b/.test(new URL(request.url()).pathname)) aiRequests.push(request.url());
  });
  await openCaseFromList(base, caseId);
  await waitForStatus("submitted");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  check(await page.locator("#ai-section").isHidden(), "the spoke sees the AI panel");
  check((await page.locator("#ai-run").count()) === 0, "the spoke has a Run the model button");
  check((await page.locator("#ai-score").count()) === 0, "the spoke sees the AI score");
  const panel = await page.innerText(".case-panel");
  // Nothing of the panel in either language (the server's own notice is English).
  const mentions = ["en", "ja"].flatMap((code) => [
    T("case.ai.heading", {}, code),
    T("case.ai.notice", {}, code),
    textPattern("case.ai.suggests", {}, { code }),
  ]);
  for (const mention of mentions) {
    const found = mention instanceof RegExp ? mention.test(panel) : panel.includes(mention);
    check(!found, `the spoke's case panel mentions AI (${mention}): ${panel}`);
  }
  check((await page.evaluate(() => window.pathfedCase.ai_support)) === false, "the case offers the spoke AI support");
  check(aiRequests.length === 0, `the spoke's page asked for AI support: ${aiRequests.join(", ")}`);
  await screenshot("ai-spoke");
  step("  the referring spoke sees no AI panel, run button or score, and its page asks for none");
}

await runTest("ja", main);
