// End-to-end browser test for the pathfed web UI.
//
// Run from the repository root:   node web/tests/browser.mjs
//
// It sets up a throwaway data directory with one hospital and user, generates
// a synthetic slide, starts `pathfed serve` on a free loopback port, and drives
// a real Chromium through login → upload → viewer → slide list, checking that
// the viewer actually paints tissue (not a blank canvas); then the consultation
// flow: a hub pathologist claims a case from the worklist, checks the patient's
// identity (the patient id in the case panel, the slide label), pans, draws an
// annotation and enters a read; a second pathologist double-checks blind and
// signs out; the spoke sees the new report; a researcher builds a dataset
// version from the signed-out slide and sees it in the catalogue, trains a
// model in the browser and deploys it; a new case gets the model's second
// opinion, which the referring spoke never sees (no panel, no run button, no
// request for it; nor can an untouched new-case form record an age band or sex),
// and which the hub pathologist sees only after their first read, with
// the heatmap overlay and the jump to a top region; sign-out records the
// agreement on the model card.
//
// Environment:
//   PATHFED_BIN        pathfed binary        (default target/debug/pathfed)
//   CHROMIUM           Chromium executable   (default /usr/bin/chromium)
//   PATHFED_ARTIFACTS  screenshots go here   (default target/test-artifacts)
//   PATHFED_KEEP_TMP   set to 1 to keep the temporary directory for debugging

import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const execFileAsync = promisify(execFile);

const BIN = path.resolve(process.env.PATHFED_BIN || "target/debug/pathfed");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.resolve(process.env.PATHFED_ARTIFACTS || "target/test-artifacts");
const KEEP_TMP = process.env.PATHFED_KEEP_TMP === "1";

const USERNAME = "alice";
// Random per run: nothing depends on its value, and no fixed password ends
// up in a data directory that someone might keep around.
const PASSWORD = `pw-${randomBytes(12).toString("hex")}`;
const SLIDE_NAME = "browser.svs";

const HEALTH_TIMEOUT_MS = 60_000;
const UPLOAD_TIMEOUT_MS = 120_000;
const TILES_TIMEOUT_MS = 60_000;
// Hard ceiling so a wedged browser or server cannot hang CI forever.
const WATCHDOG_MS = 10 * 60_000;

const started = Date.now();
function step(message) {
  const seconds = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`[browser-test ${seconds}s] ${message}`);
}

class TestFailure extends Error {}

function check(condition, message) {
  if (!condition) throw new TestFailure(message);
}

// ---- Resources to release on every exit path ------------------------------

let tmpDir = null;
let server = null;
let browser = null;
let page = null;
const serverLog = []; // last lines of the server's stderr and stdout
const browserLog = []; // console messages, page errors, failed requests
const LOG_LINES = 200;

function remember(buffer, line) {
  buffer.push(line);
  if (buffer.length > LOG_LINES) buffer.shift();
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((resolve) => server.once("exit", resolve));
  server.kill("SIGTERM");
  const timer = setTimeout(() => server.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

// Shared so that a signal arriving mid-test and the normal exit path both wait
// for the same, single cleanup before the process exits.
let cleanupPromise = null;
function cleanup() {
  cleanupPromise ??= releaseAll();
  return cleanupPromise;
}

async function releaseAll() {
  if (browser) await browser.close().catch(() => {});
  await stopServer().catch(() => {});
  if (tmpDir) {
    if (KEEP_TMP) step(`keeping temporary directory ${tmpDir}`);
    else await rm(tmpDir, { recursive: true, force: true }).catch(() => {});
  }
}

// Last resort if the process exits some other way: never leave a server behind.
process.on("exit", () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
});
const SIGNAL_EXIT_CODES = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };
let interrupted = null;
for (const signal of Object.keys(SIGNAL_EXIT_CODES)) {
  process.on(signal, () => {
    if (interrupted) return;
    interrupted = signal;
    console.error(`\n[browser-test] interrupted by ${signal}, cleaning up`);
    cleanup().finally(() => process.exit(SIGNAL_EXIT_CODES[signal]));
  });
}

// ---- Helpers ------------------------------------------------------------------

async function run(args, env) {
  step(`$ pathfed ${args.join(" ")}`);
  try {
    const { stdout } = await execFileAsync(BIN, args, {
      env: { ...process.env, ...env },
      timeout: 300_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const output = [err.stdout, err.stderr].filter(Boolean).join("\n").trim();
    throw new TestFailure(`pathfed ${args[0]} ${args[1] || ""} failed (${err.code ?? err.signal}):\n${output}`);
  }
}

/** A port the kernel just handed out, so very likely still free. */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitForHealth(base) {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new TestFailure(`server exited early (${server.exitCode ?? server.signalCode})`);
    }
    try {
      const response = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return;
      last = `HTTP ${response.status}`;
    } catch (err) {
      last = err.cause?.code || err.message;
    }
    await sleep(250);
  }
  throw new TestFailure(`server not healthy after ${HEALTH_TIMEOUT_MS / 1000}s (last: ${last})`);
}

/** page.waitForFunction with a readable failure that includes page state. */
async function waitInPage(description, fn, arg, timeout) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 250 });
  } catch (err) {
    const state = await page
      .evaluate(() => ({
        url: location.href,
        error: document.getElementById("app-error")?.textContent || "",
        tilesLoaded: window.pathfedTilesLoaded,
      }))
      .catch(() => ({}));
    throw new TestFailure(`timed out waiting for ${description}: ${err.message.split("\n")[0]} — page state ${JSON.stringify(state)}`);
  }
}

// Runs inside the page: luminance statistics of the viewer's 2D canvas,
// over opaque pixels only (outside the slide the canvas stays transparent).
function canvasStats() {
  const viewer = window.pathfedViewer;
  const canvas = viewer && viewer.drawer && viewer.drawer.canvas;
  if (!canvas || typeof canvas.getContext !== "function") return { error: "no drawer canvas" };
  const context = canvas.getContext("2d");
  if (!context) return { error: `drawer is ${viewer.drawer.getType()}, not a 2D canvas` };
  const { width, height } = canvas;
  const data = context.getImageData(0, 0, width, height).data;
  let opaque = 0;
  let sum = 0;
  let sumSquares = 0;
  let nonWhite = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] < 250) continue;
    const lum = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
    opaque += 1;
    sum += lum;
    sumSquares += lum * lum;
    if (lum < 235) nonWhite += 1;
  }
  const mean = opaque ? sum / opaque : 0;
  const std = opaque ? Math.sqrt(Math.max(0, sumSquares / opaque - mean * mean)) : 0;
  return { width, height, opaque, mean, std, nonWhiteFraction: opaque ? nonWhite / opaque : 0 };
}

// Runs inside the page: tiles have arrived, the zoom has settled and the
// tiled image has everything it needs for the current view.
function viewerSettled(minTiles) {
  const viewer = window.pathfedViewer;
  if (!viewer || !(window.pathfedTilesLoaded > minTiles)) return false;
  const item = viewer.world.getItemAt(0);
  if (!item || !item.getFullyLoaded()) return false;
  const current = viewer.viewport.getZoom(true);
  const target = viewer.viewport.getZoom(false);
  return Math.abs(current - target) <= 1e-6 * target;
}

const SCALE_TEXT = /^\d+(\.\d+)?\s*(µm|mm)$/;

async function scaleText() {
  return ((await page.textContent("#scale-bar-label")) || "").trim();
}

/** Records what a page logs, fails and answers with errors, for failure reports. */
function watchPage(target) {
  target.on("console", (message) => remember(browserLog, `[console.${message.type()}] ${message.text()}`));
  target.on("pageerror", (error) => remember(browserLog, `[pageerror] ${error.message}`));
  target.on("requestfailed", (request) => remember(browserLog, `[requestfailed] ${request.method()} ${request.url()} ${request.failure()?.errorText}`));
  target.on("response", (response) => {
    if (response.status() >= 400) remember(browserLog, `[http ${response.status()}] ${response.request().method()} ${response.url()}`);
  });
  target.on("dialog", (dialog) => {
    step(`accepting ${dialog.type()} dialog: ${dialog.message()}`);
    dialog.accept().catch(() => {});
  });
}

// ---- The test -------------------------------------------------------------------

async function main() {
  check(existsSync(BIN), `pathfed binary not found at ${BIN} (build it, or set PATHFED_BIN)`);
  check(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (install it, or set CHROMIUM)`);

  tmpDir = await mkdtemp(path.join(os.tmpdir(), "pathfed-browser-"));
  const dataDir = path.join(tmpDir, "data");
  await mkdir(dataDir, { recursive: true });
  // The platform's operator lowers the small-cell floor to 1 for this tiny platform (a
  // researcher could not ask for less than the floor).
  const env = { PATHFED_DATA_DIR: dataDir, PATHFED_RESEARCH_MIN_CELL_SIZE: "1" };
  step(`temporary directory ${tmpDir}`);

  const passwordFile = path.join(tmpDir, "password");
  await writeFile(passwordFile, PASSWORD, { mode: 0o600 });
  await run(["admin", "init", "--hospital", "Test Hub", "--kind", "hub", "--user", USERNAME, "--password-file", passwordFile], env);

  const slidePath = path.join(tmpDir, SLIDE_NAME);
  await run(["slide", "synth", "--out", slidePath, "--width", "6000", "--height", "4000"], env);

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  step(`starting pathfed serve on ${base}`);
  server = spawn(BIN, ["serve"], {
    env: { ...process.env, ...env, PATHFED_LISTEN: `127.0.0.1:${port}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const [stream, tag] of [[server.stdout, "out"], [server.stderr, "err"]]) {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop();
      for (const line of lines) remember(serverLog, `[${tag}] ${line}`);
    });
  }
  server.on("exit", (code, signal) => remember(serverLog, `[exit] code=${code} signal=${signal}`));
  await waitForHealth(base);
  step("server is healthy");

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI containers needs --no-sandbox; a small /dev/shm there would
    // otherwise crash renderers on large canvases.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
    // Our own signal handlers close the browser and then stop the server and
    // remove the temporary directory; Playwright's would exit before that.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  watchPage(page);

  // -- Login: a wrong password first, to see the server's message displayed.
  step("login page: wrong password shows an error");
  await page.goto(`${base}/login`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", `${PASSWORD}-wrong`);
  await page.click("#login-button");
  await page.locator("#app-error").waitFor({ state: "visible", timeout: 10_000 });
  const loginError = ((await page.textContent("#app-error")) || "").trim();
  check(loginError.length > 0, "login error banner is empty");
  step(`  error shown: "${loginError}"`);

  step(`logging in as ${USERNAME}`);
  await page.fill("#username", USERNAME);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 15_000 }), page.click("#login-button")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  const navText = (await page.textContent("#app-nav")) || "";
  check(navText.includes(USERNAME), `nav bar does not name the user: "${navText}"`);
  check(navText.includes("Test Hub"), `nav bar does not name the hospital: "${navText}"`);
  step("slide list: expecting the empty state");
  await page.locator("#empty-state").waitFor({ timeout: 10_000 });

  // -- Upload.
  step("going to the upload page");
  await Promise.all([page.waitForURL(`${base}/upload`), page.click('#app-nav a[href="/upload"]')]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  step(`uploading ${SLIDE_NAME}`);
  await page.setInputFiles("#file-input", slidePath);

  const uploadDeadline = Date.now() + UPLOAD_TIMEOUT_MS;
  let lastPhase = null;
  let row = null;
  while (Date.now() < uploadDeadline) {
    row = await page.evaluate(() => {
      const element = document.querySelector(".upload-row");
      if (!element) return null;
      return {
        phase: element.dataset.phase,
        percent: element.querySelector(".upload-percent")?.textContent || "",
        bytes: element.querySelector(".upload-bytes")?.textContent || "",
        error: element.querySelector(".upload-error")?.textContent || "",
      };
    });
    if (row && row.phase !== lastPhase) {
      step(`  upload phase: ${row.phase} ${row.bytes}`);
      lastPhase = row.phase;
    }
    if (row && (row.phase === "done" || row.phase === "error" || row.phase === "cancelled")) break;
    await sleep(250);
  }
  check(row, "no upload row appeared after choosing the file");
  check(row.phase !== "error", `upload failed: ${row.error}`);
  check(row.phase === "done", `upload not done after ${UPLOAD_TIMEOUT_MS / 1000}s (phase ${row.phase}, ${row.bytes})`);

  const openLink = page.locator('.upload-row[data-phase="done"] a.open-viewer');
  check((await openLink.count()) === 1, 'no "Open in viewer" link (was the Pathfed-Slide-Id header sent?)');
  const href = await openLink.getAttribute("href");
  const slideId = new URLSearchParams(href.split("?")[1] || "").get("slide");
  check(href.startsWith("/viewer?slide=") && slideId, `unexpected viewer link: ${href}`);
  step(`upload done, slide id ${slideId}`);

  // -- Viewer.
  step("opening the viewer");
  await Promise.all([page.waitForURL(/\/viewer\?slide=/), openLink.click()]);
  await waitInPage("the first tiles to load and the image to be fully loaded", viewerSettled, 0, TILES_TIMEOUT_MS);
  const tilesAtHome = await page.evaluate(() => window.pathfedTilesLoaded);
  step(`  ${tilesAtHome} tiles loaded at home zoom`);

  const title = ((await page.textContent("#slide-title")) || "").trim();
  check(title === SLIDE_NAME, `viewer header shows "${title}", expected "${SLIDE_NAME}"`);

  // The drawer paints on the next animation frame after the last tile; poll
  // briefly instead of reading the canvas once.
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
  await waitInPage("the scale bar to change after zooming", (before) => {
    const text = (document.getElementById("scale-bar-label")?.textContent || "").trim();
    return text !== before && /^\d+(\.\d+)?\s*(µm|mm)$/.test(text);
  }, scaleAtHome, 10_000);
  step(`  scale bar after zoom: ${await scaleText()}`);

  await mkdir(ARTIFACTS, { recursive: true });
  const viewerShot = path.join(ARTIFACTS, "viewer.png");
  await page.screenshot({ path: viewerShot });
  step(`saved ${viewerShot}`);

  // -- Back to the list: the new slide with its thumbnail.
  step("back to the slide list");
  await Promise.all([page.waitForURL(`${base}/`), page.click("#back-link")]);
  const listRow = page.locator(`#slide-list tr[data-slide-id="${slideId}"]`);
  await listRow.waitFor({ timeout: 10_000 });
  const rowText = (await listRow.textContent()) || "";
  check(rowText.includes(SLIDE_NAME), `slide row does not show the filename: "${rowText}"`);
  // Digit grouping depends on the browser's locale; compare digits only.
  check(rowText.replace(/[^\d×]/g, "").includes("6000×4000"), `slide row does not show 6000 × 4000: "${rowText}"`);
  const thumbnail = listRow.locator("img.thumbnail");
  await thumbnail.scrollIntoViewIfNeeded();
  const thumbHandle = await thumbnail.elementHandle();
  await waitInPage("the thumbnail to load", (img) => img.complete && img.naturalWidth > 0, thumbHandle, 30_000);
  const thumbSize = await thumbHandle.evaluate((img) => `${img.naturalWidth}×${img.naturalHeight}`);
  step(`  thumbnail loaded (${thumbSize})`);

  const passwords = await consultation(base, env, slidePath);
  const researcher = await researchCatalogue(base, env);
  await optOut(base, env, passwords, researcher.token);
  await trainingAndModels(base, env, researcher);
  await aiSupport(base, env, passwords);
}

// ---- AI support: the deployed model's second opinion in the case view ----

async function aiSupport(base, env, passwords) {
  await run(["admin", "hospital", "ai-after-first-read", "Test Hub", "on"], env);
  const token = (await run(["admin", "token", "create", "--user", "spoke1"], env)).trim().split("\n").pop();
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
  // The run is the hub's: followed as its pathologist (the result itself stays hidden from
  // them until their first read); the spoke is refused it.
  const readerToken = (await run(["admin", "token", "create", "--user", "path1"], env)).trim().split("\n").pop();
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

  await signIn(base, "path1", passwords.path1);
  await openCaseFromList(base, caseId);
  await page.click("#claim-case");
  await waitForStatus("assigned");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  await page.locator("#ai-hidden").waitFor({ timeout: 10_000 });
  check(/Decision support only/.test(await page.textContent("#ai-notice")), "the AI panel lacks the decision-support notice");
  check((await page.locator("#ai-score").count()) === 0, "the AI score shows before the first read");
  check((await page.evaluate(() => window.pathfedViewer.world.getItemCount())) === 1, "an overlay is drawn before the first read");
  step("  before the first read the AI panel says it is hidden");

  await page.selectOption("#read-code", "GAS-G3");
  await page.fill("#read-findings", "Stroma-rich biopsy; first read before seeing AI");
  await page.click("#read-submit");
  await waitForStatus("diagnosed");
  await page.locator("#ai-score").waitFor({ timeout: 15_000 });
  const score = (await page.textContent("#ai-score")) || "";
  check(/GAS-G3|Group 3/.test(score), `the AI panel shows "${score}"`);
  check((await page.getAttribute("#ai-model-link", "href")) === "/model-card?model=textures-small@1", "the panel does not link the model card");
  step(`  after the first read: "${score.trim()}"`);

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
  await page.screenshot({ path: path.join(ARTIFACTS, "ai-overlay.png") });

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
  await page.screenshot({ path: path.join(ARTIFACTS, "ai-region.png") });
  step("  overlay toggled, opacity set, jumped to the top region");

  // Double-check and sign-out; the card then counts the agreement.
  await signIn(base, "path2", passwords.path2);
  await openCaseFromList(base, caseId);
  await page.click("#take-double-check");
  await waitForStatus("in double check");
  await page.locator("#ai-hidden").waitFor({ timeout: 10_000 });
  await page.selectOption("#read-code", "GAS-G3");
  await page.fill("#read-findings", "Agree");
  await page.click("#read-submit");
  await waitForStatus("ready for sign out");
  await page.locator("#ai-score").waitFor({ timeout: 15_000 });
  await page.click("#sign-out");
  await waitForStatus("signed out");
  await Promise.all([page.waitForURL(/\/model-card\?model=textures-small@1$/), page.click("#ai-model-link")]);
  await page.locator("#card-concordance").waitFor({ timeout: 10_000 });
  // Both reads said Group 3; the card counts an agreement exactly when the model said so too.
  const agreed = /suggests Group 3/.test(score) ? "1 of 1" : "0 of 1";
  const agreement = (await page.textContent("#card-concordance")) || "";
  check(agreement.includes(agreed), `the card's agreement with pathologists: "${agreement}", expected ${agreed}`);
  check(/^Decision support only/.test(await page.textContent("#card-notice")), "the model card lacks the notice");
  await page.screenshot({ path: path.join(ARTIFACTS, "ai-model-card.png"), fullPage: true });
  step("sign-out recorded the agreement; the model card shows it");
}

/** The referring spoke opens its submitted case once the model has run: no AI panel, no run
 * button, no score, and the page asks the server for none of it (the case says AI support is
 * not the spoke's). Before that, the new-case form refuses an untouched age band and sex. */
async function spokeSeesNoAi(base, passwords, caseId) {
  await signIn(base, "spoke1", passwords.spoke1);
  await page.goto(`${base}/cases`);
  await page.click("#new-case-button");
  await page.fill("#nc-patient", "MRN-FORM-1");
  await page.fill("#nc-organ", "stomach");
  await page.fill("#nc-specimen", "gastric biopsy");
  await page.fill("#nc-question", "Dysplasia?");
  await page.click("#nc-create");
  const untouched = await page.evaluate(() => ["nc-age", "nc-sex"].map((id) => document.getElementById(id).validity.valueMissing));
  check(untouched.every(Boolean), `an untouched age band or sex passes the form: ${untouched}`);
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
  check(!/suggests|AI support|Decision support/.test(panel), `the spoke's case panel mentions AI: ${panel}`);
  check((await page.evaluate(() => window.pathfedCase.ai_support)) === false, "the case offers the spoke AI support");
  check(aiRequests.length === 0, `the spoke's page asked for AI support: ${aiRequests.join(", ")}`);
  await page.screenshot({ path: path.join(ARTIFACTS, "ai-spoke.png") });
  step("  the referring spoke sees no AI panel, run button or score, and its page asks for none");
}

// ---- Training: the researcher trains in the browser, follows the curves, deploys ----

/** Signs `count` generated cases per class out through the API: G1 dense, G3 stromal tissue. */
async function signedOutTextureCases(base, env) {
  const tokens = {};
  for (const name of ["spoke1", "path1", "path2"]) {
    tokens[name] = (await run(["admin", "token", "create", "--user", name], env)).trim().split("\n").pop();
  }
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

async function trainingAndModels(base, env, researcher) {
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

  await signIn(base, "res1", researcher.password);
  await page.goto(`${base}/training`);
  const links = await navLinks();
  check(links.join(",") === "Datasets,Training,Models", `a researcher's navigation: ${links}`);
  await page.locator(`#train-dataset option[value="textures@${version}"]`).waitFor({ state: "attached", timeout: 10_000 });
  await page.selectOption("#train-dataset", `textures@${version}`);
  // A batch larger than the train split is refused with the server's message, nothing queued.
  await page.selectOption("#train-model", "resnet-small");
  await page.fill("#train-batch", "4000");
  await page.click("#train-start");
  await waitInPage("the refusal to show", () => /larger than the train split/.test(document.getElementById("app-error")?.textContent || ""), null, 10_000);
  await page.fill("#train-batch", "16");
  await page.fill("#train-epochs", "4");
  await page.fill("#train-name", "textures-small");
  await page.click("#train-start");
  step("training run started from the form");
  await waitInPage("curves of two epochs", () => document.querySelectorAll('#run-curves polyline[data-split="valid"]').length === 3 && /epoch [2-4]/.test(document.getElementById("run-curves")?.textContent || ""), null, 120_000);
  await waitInPage("the run to register its model", () => /textures-small@1/.test(document.getElementById("run-detail")?.textContent || ""), null, 180_000);
  await page.screenshot({ path: path.join(ARTIFACTS, "training.png"), fullPage: true });
  step("the run's curves drew as it trained and it registered textures-small@1");

  await Promise.all([page.waitForURL(/\/models#textures-small@1$/), page.click("#run-model-link")]);
  await page.locator("#card-notice").waitFor({ timeout: 10_000 });
  check(/^Decision support only/.test(await page.textContent("#card-notice")), "the card lacks the decision-support notice");
  check(/AUC/.test(await page.textContent("#card-metrics")), "the card lacks metrics");
  check((await page.locator("#card-limitations li").count()) >= 3, "the card lists no limitations");
  for (const plot of ["#roc-plot", "#loss-plot"]) {
    const handle = await page.locator(plot).elementHandle();
    await waitInPage(`${plot} to load`, (img) => img.complete && img.naturalWidth === 640, handle, 20_000);
  }
  check((await page.locator("#deploy-button").count()) === 0, "a researcher is offered Deploy");
  step("the researcher reads the card; deploying is the platform admin's");

  // The platform admin (the first user, made by `admin init`) decides what reaches the clinic.
  // Six slides cannot show that a model beats chance, so the deploy asks for a reason.
  await signIn(base, USERNAME, PASSWORD);
  await page.goto(`${base}/models#textures-small@1`);
  await page.locator("#deploy-button").waitFor({ timeout: 10_000 });
  await page.click("#deploy-button");
  const dialog = page.locator("#deploy-reason-dialog");
  await Promise.race([
    dialog.waitFor({ timeout: 10_000 }).catch(() => {}),
    page.waitForFunction(() => /Deployed for/.test(document.getElementById("deploy-status")?.textContent || ""), null, { timeout: 10_000 }).catch(() => {}),
  ]);
  if (await dialog.isVisible()) {
    check(/chance/.test(await page.textContent("#deploy-reason-message")), "the reason dialog does not say why");
    await page.fill("#deploy-reason", "browser test: pilot, every call reviewed by a pathologist");
    await page.click("#deploy-reason-confirm");
    step("deploy asked for a reason (the model is not shown to beat chance) and got one");
  }
  await waitInPage("the deployment to show", () => /Deployed for stomach slides in gastric-group/.test(document.getElementById("deploy-status")?.textContent || ""), null, 10_000);
  const row = (await page.locator('#models tr[data-model="textures-small@1"]').textContent()) || "";
  check(row.includes("stomach / gastric-group"), `the registry row does not show the deployment: ${row}`);
  await page.screenshot({ path: path.join(ARTIFACTS, "model-card.png"), fullPage: true });
  step("model card with ROC and loss plots read; model deployed for stomach / gastric-group");
}

// ---- Opt-out: the spoke records it in the browser; the research tier lets go ----

async function optOut(base, env, passwords, researcherToken) {
  await signIn(base, "spoke1", passwords.spoke1);
  const links = await navLinks();
  check(links.includes("Opt-out"), `a submitter's navigation should offer Opt-out, got ${links}`);
  await page.goto(`${base}/opt-out`);
  await page.locator("#opt-out-form").waitFor({ timeout: 10_000 });
  step("recording MRN-BROWSER-1's opt-out in the form");
  await page.fill("#oo-patient", "MRN-BROWSER-1");
  await page.check("#oo-confirm");
  await page.click("#oo-submit");
  await waitInPage("the opt-out to be recorded", () => /Opt-out recorded for MRN-BROWSER-1/.test(document.getElementById("opt-out-result")?.textContent || ""), null, 10_000);
  await page.screenshot({ path: path.join(ARTIFACTS, "opt-out.png") });
  await page.fill("#oo-patient", "MRN-BROWSER-1");
  await page.check("#oo-confirm");
  await page.click("#oo-submit");
  await waitInPage("the second submission to say it was on record", () => /opted out since/.test(document.getElementById("opt-out-result")?.textContent || ""), null, 10_000);
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

// ---- Research: the signed-out slide becomes a dataset version with patches ----

async function researchCatalogue(base, env) {
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const file = path.join(tmpDir, "res1.pw");
  await writeFile(file, password, { mode: 0o600 });
  await run(["admin", "user", "add", "res1", "--hospital", "Test Hub", "--role", "researcher", "--password-file", file], env);
  const token = (await run(["admin", "token", "create", "--user", "res1"], env)).trim().split("\n").pop();
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

  await signIn(base, "res1", password);
  await page.waitForURL(`${base}/datasets`, { timeout: 15_000 });
  const links = await navLinks();
  check(links.join(",") === "Datasets,Training,Models", `a researcher's navigation should offer only the research pages, got ${links}`);
  await page.locator('#versions tr[data-version="gastric@1"]').waitFor({ timeout: 10_000 });
  await page.locator('#patch-balance tr[data-label="GAS-G4"]').waitFor({ timeout: 10_000 });
  const slideCells = await page.locator('#slide-balance tr[data-label="GAS-G4"] td').allTextContents();
  check(slideCells.slice(1).map(Number).reduce((a, b) => a + b, 0) === 1, `one slide of GAS-G4 in the balance, got ${slideCells}`);
  await waitInPage("the sample patches to load", () => {
    const images = [...document.querySelectorAll("#sample-patches img")];
    return images.length > 0 && images.every((img) => img.complete && img.naturalWidth === 256);
  }, null, 20_000);
  const shown = (await page.textContent("main")) || "";
  check(!shown.includes("MRN-BROWSER-1"), "the catalogue shows a clinical patient id");
  await page.screenshot({ path: path.join(ARTIFACTS, "datasets.png"), fullPage: true });
  step("research catalogue shows the version, its class balance and sample patches");
  return { token, password };
}

// ---- Consultation: worklist → claim → annotate → read → blind check → report ----

/** The navigation's link texts, once the page has rendered them (all at once, after the session
 * loads): reading before that would see none. */
async function navLinks() {
  await page.locator("#app-nav .nav-link").first().waitFor({ timeout: 15_000 });
  return page.locator("#app-nav .nav-link").allTextContents();
}

/** A fresh browser context signed in as `username`; becomes the current page. */
async function signIn(base, username, password) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 850 } });
  page = await context.newPage();
  watchPage(page);
  step(`signing in as ${username}`);
  await page.goto(`${base}/login`);
  await page.fill("#username", username);
  await page.fill("#password", password);
  await Promise.all([page.waitForURL(`${base}/`, { timeout: 15_000 }), page.click("#login-button")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  return page;
}

async function openCaseFromList(base, caseId) {
  await page.goto(`${base}/cases`);
  const row = page.locator(`tr[data-case-id="${caseId}"]`);
  await row.waitFor({ timeout: 10_000 });
  await Promise.all([page.waitForURL(/\/case\?id=/), row.locator("a.case-link").click()]);
  await page.locator("#status-badge").waitFor({ timeout: 10_000 });
}

async function waitForStatus(status) {
  await waitInPage(`case status "${status}"`, (want) => (document.getElementById("status-badge")?.textContent || "") === want, status, 15_000);
}

async function consultation(base, env, slidePath) {
  const passwords = {};
  await run(["admin", "hospital", "add", "Test Spoke", "--kind", "spoke"], env);
  for (const [name, hospital, role] of [["spoke1", "Test Spoke", "submitter"], ["path1", "Test Hub", "pathologist"], ["path2", "Test Hub", "pathologist"]]) {
    passwords[name] = `pw-${randomBytes(12).toString("hex")}`;
    const file = path.join(tmpDir, `${name}.pw`);
    await writeFile(file, passwords[name], { mode: 0o600 });
    await run(["admin", "user", "add", name, "--hospital", hospital, "--role", role, "--password-file", file], env);
  }
  await run(["admin", "hospital", "default-hub", "Test Spoke", "Test Hub"], env);
  const token = (await run(["admin", "token", "create", "--user", "spoke1"], env)).trim().split("\n").pop();
  const created = await run([
    "case", "create", "--server", base, "--token", token, "--patient-id", "MRN-BROWSER-1",
    "--age-band", "50-59", "--sex", "female", "--organ", "stomach", "--specimen", "gastric biopsy",
    "--question", "Neoplasia?", "--upload", slidePath, "--submit", "--state-file", path.join(tmpDir, "uploads.json"),
  ], env);
  const caseId = created.trim().split("\n").pop().trim();
  step(`case ${caseId} submitted by the spoke`);

  // -- First pathologist: worklist → claim → pan → annotate → first read.
  await signIn(base, "path1", passwords.path1);
  await openCaseFromList(base, caseId);
  await page.click("#claim-case");
  await waitForStatus("assigned");
  await waitInPage("the case's slide to load", viewerSettled, 0, TILES_TIMEOUT_MS);
  // The reader checks the patient's identity: the id in the case panel, the label on request.
  const caseDetails = await page.innerText("#case-details");
  check(caseDetails.includes("MRN-BROWSER-1"), `the reader's case panel lacks the patient id: ${caseDetails}`);
  await page.locator("#label-section").waitFor({ timeout: 10_000 });
  await page.click("#label-summary");
  await page.locator("#label-image").waitFor({ timeout: 10_000 });
  const labelImage = await page.locator("#label-image").elementHandle();
  await waitInPage("the slide label to load", (img) => img.complete && img.naturalWidth > 0, labelImage, 20_000);
  await page.screenshot({ path: path.join(ARTIFACTS, "case-label.png") });
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
  await page.selectOption("#annotation-label", "GAS-G4");
  await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.4);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.55, box.y + box.height * 0.6, { steps: 8 });
  await page.mouse.up();
  await page.locator("#annotation-list li[data-annotation-id]").first().waitFor({ timeout: 10_000 });
  const shapes = await page.locator("#osd-a svg.annotation-layer polygon.shape").count();
  check(shapes === 1, `expected the rectangle drawn on the slide, found ${shapes} shapes`);
  await page.click('.tool[data-tool=""]');

  step("entering the first read");
  await page.selectOption("#read-code", "GAS-G4");
  await page.fill("#read-findings", "Irregular crowded glands; first read by path1");
  await page.click("#read-submit");
  await waitForStatus("diagnosed");
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, "case-first-read.png") });

  // -- Second pathologist: blind double-check, concordant, sign-out.
  await signIn(base, "path2", passwords.path2);
  await openCaseFromList(base, caseId);
  await page.click("#take-double-check");
  await waitForStatus("in double check");
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
  await waitForStatus("ready for sign out");
  const readsShown = await page.locator("#reads .read").count();
  check(readsShown === 2, `after the double-check both reads should show, found ${readsShown}`);
  await page.click("#sign-out");
  await waitForStatus("signed out");
  await page.locator("#reports a.report-html").waitFor({ timeout: 10_000 });
  await page.screenshot({ path: path.join(ARTIFACTS, "case-signed-out.png") });

  // -- The spoke sees the new report.
  await signIn(base, "spoke1", passwords.spoke1);
  await page.goto(`${base}/cases`);
  const flagged = page.locator(`tr[data-case-id="${caseId}"] .badge-new`);
  await flagged.waitFor({ timeout: 10_000 });
  step("  the spoke's list marks a new report");
  await openCaseFromList(base, caseId);
  const reportHref = await page.locator("#reports a.report-html").first().getAttribute("href");
  await page.goto(`${base}${reportHref}`);
  const reportText = (await page.textContent("body")) || "";
  for (const expected of ["MRN-BROWSER-1", "Group 4: neoplasia suspicious for carcinoma", "Report SHA-256", "path2"]) {
    check(reportText.includes(expected), `the report lacks "${expected}"`);
  }
  await page.screenshot({ path: path.join(ARTIFACTS, "case-report.png"), fullPage: true });
  await page.goto(`${base}/cases`);
  await page.locator(`tr[data-case-id="${caseId}"]`).waitFor({ timeout: 10_000 });
  check((await flagged.count()) === 0, "the new-report marker stays after the spoke opened the report");
  step("consultation flow done");
  return passwords;
}

async function reportFailure(err) {
  console.error("\n[browser-test] FAILED:", err instanceof TestFailure ? err.message : err?.stack || err);
  if (browserLog.length) {
    console.error("\n--- browser log (last 40 lines) ---");
    console.error(browserLog.slice(-40).join("\n"));
  }
  console.error("\n--- server log (last 60 lines) ---");
  console.error(serverLog.length ? serverLog.slice(-60).join("\n") : "(no server output)");
  if (page) {
    try {
      await mkdir(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, "failure.png");
      await page.screenshot({ path: shot, timeout: 10_000 });
      console.error(`\nsaved ${shot}`);
    } catch (shotError) {
      console.error(`\n(could not save failure screenshot: ${shotError.message})`);
    }
  }
}

const watchdog = setTimeout(() => {
  reportFailure(new TestFailure(`the whole test took longer than ${WATCHDOG_MS / 60_000} minutes`))
    .finally(cleanup)
    .finally(() => process.exit(1));
}, WATCHDOG_MS);
watchdog.unref();

let exitCode = 0;
try {
  await main();
  console.log("browser test passed");
} catch (err) {
  exitCode = 1;
  // After a signal the browser is closed under the test's feet; the errors
  // that follow are noise, not a finding.
  if (!interrupted) await reportFailure(err);
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
process.exit(interrupted ? SIGNAL_EXIT_CODES[interrupted] : exitCode);
