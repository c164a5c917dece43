// Shared harness of the browser tests (browser.mjs in Japanese, browser-en.mjs in English):
// a throwaway data directory, `pathfed serve` on a free loopback port, Chromium through
// playwright-core, the pages' translation catalogues read in node (so the tests compare what
// the pages show with the catalogue's text in the language under test), the language checks
// every page gets, and one cleanup on every exit path.
//
// Environment:
//   PATHFED_BIN        pathfed binary        (default target/debug/pathfed)
//   CHROMIUM           Chromium executable   (default /usr/bin/chromium)
//   PATHFED_ARTIFACTS  screenshots go here   (default target/test-artifacts)
//   PATHFED_KEEP_TMP   set to 1 to keep the temporary directory for debugging

import { execFile, spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const execFileAsync = promisify(execFile);

export const BIN = path.resolve(process.env.PATHFED_BIN || "target/debug/pathfed");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = path.resolve(process.env.PATHFED_ARTIFACTS || "target/test-artifacts");
const KEEP_TMP = process.env.PATHFED_KEEP_TMP === "1";

export const HEALTH_TIMEOUT_MS = 60_000;
export const UPLOAD_TIMEOUT_MS = 120_000;
export const TILES_TIMEOUT_MS = 60_000;
// Hard ceiling so a wedged browser or server cannot hang CI forever.
const WATCHDOG_MS = 10 * 60_000;
/** The hospitals' clock: every context runs in it, as the workstations in Japan do. */
export const TIME_ZONE = "Asia/Tokyo";
const VIEWPORT = { width: 1400, height: 850 };

const started = Date.now();
let tag = "browser-test";

export function step(message) {
  const seconds = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`[${tag} ${seconds}s] ${message}`);
}

export class TestFailure extends Error {}

export function check(condition, message) {
  if (!condition) throw new TestFailure(message);
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- Resources to release on every exit path ------------------------------------------------

// Live bindings: the scripts read these; only the harness assigns them.
export let tmpDir = null;
export let server = null;
export let browser = null;
export let page = null;
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

// Shared so that a signal arriving mid-test and the normal exit path both wait for the same,
// single cleanup before the process exits.
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
    console.error(`\n[${tag}] interrupted by ${signal}, cleaning up`);
    cleanup().finally(() => process.exit(SIGNAL_EXIT_CODES[signal]));
  });
}

// ---- The platform ---------------------------------------------------------------------------

export async function run(args, env) {
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

/** A fresh data directory; returns the environment the platform's commands run with. */
export async function makeDataDir() {
  check(existsSync(BIN), `pathfed binary not found at ${BIN} (build it, or set PATHFED_BIN)`);
  check(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (install it, or set CHROMIUM)`);
  tmpDir = await mkdtemp(path.join(os.tmpdir(), "pathfed-browser-"));
  const dataDir = path.join(tmpDir, "data");
  await mkdir(dataDir, { recursive: true });
  await mkdir(ARTIFACTS, { recursive: true });
  step(`temporary directory ${tmpDir}`);
  // The platform's operator lowers the small-cell floor to 1 for this tiny platform (a
  // researcher could not ask for less than the floor).
  return { PATHFED_DATA_DIR: dataDir, PATHFED_RESEARCH_MIN_CELL_SIZE: "1" };
}

/** A random password for `name`, in a file only the owner reads; returns [password, file]. */
export async function passwordFile(name) {
  // Random per run: nothing depends on its value, and no fixed password ends up in a data
  // directory that someone might keep around.
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const file = path.join(tmpDir, `${name}.pw`);
  await writeFile(file, password, { mode: 0o600 });
  return [password, file];
}

/** Adds a user; returns their password. */
export async function addUser(env, name, hospital, role) {
  const [password, file] = await passwordFile(name);
  await run(["admin", "user", "add", name, "--hospital", hospital, "--role", role, "--password-file", file], env);
  return password;
}

/** A new API token of `user`. */
export async function apiToken(env, user) {
  return (await run(["admin", "token", "create", "--user", user], env)).trim().split("\n").pop();
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

/** Starts `pathfed serve` and Chromium; returns the server's base URL. */
export async function startServerAndBrowser(env) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  step(`starting pathfed serve on ${base}`);
  server = spawn(BIN, ["serve"], {
    env: { ...process.env, ...env, PATHFED_LISTEN: `127.0.0.1:${port}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const [stream, name] of [[server.stdout, "out"], [server.stderr, "err"]]) {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop();
      for (const line of lines) remember(serverLog, `[${name}] ${line}`);
    });
  }
  server.on("exit", (code, signal) => remember(serverLog, `[exit] code=${code} signal=${signal}`));
  await waitForHealth(base);
  step("server is healthy");

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI containers needs --no-sandbox; a small /dev/shm there would otherwise crash
    // renderers on large canvases.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
    // Our own signal handlers close the browser and then stop the server and remove the
    // temporary directory; Playwright's would exit before that.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  return base;
}

// ---- Pages ----------------------------------------------------------------------------------

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

/**
 * A page in a fresh browser context (no cookies, no stored language) whose browser speaks
 * `locale`, on the hospitals' clock, one device pixel per CSS pixel; it becomes the current page.
 */
export async function newPage(locale) {
  const context = await browser.newContext({
    viewport: VIEWPORT,
    deviceScaleFactor: 1,
    locale,
    timezoneId: TIME_ZONE,
  });
  page = await context.newPage();
  watchPage(page);
  return page;
}

/** page.waitForFunction with a readable failure that includes page state. */
export async function waitInPage(description, fn, arg, timeout) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 250 });
  } catch (err) {
    const state = await page
      .evaluate(() => ({
        url: location.href,
        lang: document.documentElement.lang,
        error: document.getElementById("app-error")?.textContent || "",
        tilesLoaded: window.pathfedTilesLoaded,
      }))
      .catch(() => ({}));
    throw new TestFailure(`timed out waiting for ${description}: ${err.message.split("\n")[0]} — page state ${JSON.stringify(state)}`);
  }
}

/** Waits until the text of `#id` matches `pattern` (a RegExp) and returns that text. */
export async function waitForText(description, id, pattern, timeout = 10_000) {
  await waitInPage(
    description,
    ({ id: wanted, source, flags }) => new RegExp(source, flags).test(document.getElementById(wanted)?.textContent || ""),
    { id, source: pattern.source, flags: pattern.flags },
    timeout,
  );
  return (await page.textContent(`#${id}`)) || "";
}

export async function screenshot(name, options = {}) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), ...options });
}

// Runs inside the page: luminance statistics of the viewer's 2D canvas, over opaque pixels only
// (outside the slide the canvas stays transparent).
export function canvasStats() {
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

// Runs inside the page: tiles have arrived, the zoom has settled and the tiled image has
// everything it needs for the current view.
export function viewerSettled(minTiles) {
  const viewer = window.pathfedViewer;
  if (!viewer || !(window.pathfedTilesLoaded > minTiles)) return false;
  const item = viewer.world.getItemAt(0);
  if (!item || !item.getFullyLoaded()) return false;
  const current = viewer.viewport.getZoom(true);
  const target = viewer.viewport.getZoom(false);
  return Math.abs(current - target) <= 1e-6 * target;
}

/** A scale bar's label: a round length in µm or mm. */
export const SCALE_TEXT = /^\d+(\.\d+)?\s*(µm|mm)$/;

/**
 * Uploads `file` through the upload page already open and waits for the row to finish;
 * returns the new slide's id (from the row's "Open in viewer" link).
 */
export async function uploadThroughPage(file, { offlineFirst = false } = {}) {
  if (offlineFirst) {
    // The connection is gone when the upload starts: the row must wait for it, not fail, and
    // carry on by itself once it is back (nobody presses Retry here).
    await page.context().setOffline(true);
    await page.setInputFiles("#file-input", file);
    await page.locator('.upload-row[data-phase="waiting"]').waitFor({ timeout: 60_000 });
    const note = ((await page.textContent(".upload-row")) || "").trim();
    check(note.includes(T("upload.waiting_note")), `the waiting row says "${note}"`);
    step("  offline: the row waits for the connection");
    await page.context().setOffline(false);
  } else {
    await page.setInputFiles("#file-input", file);
  }
  const deadline = Date.now() + UPLOAD_TIMEOUT_MS;
  let lastPhase = null;
  let row = null;
  // The row's phase is its data attribute; watch it for the log rather than one final wait.
  while (Date.now() < deadline) {
    row = await page.evaluate(() => {
      const element = document.querySelector(".upload-row");
      if (!element) return null;
      return {
        phase: element.dataset.phase,
        bytes: element.querySelector(".upload-bytes")?.textContent || "",
        error: element.querySelector(".upload-error")?.textContent || "",
      };
    });
    if (row && row.phase !== lastPhase) {
      step(`  upload phase: ${row.phase} ${row.bytes}`);
      lastPhase = row.phase;
    }
    if (row && ["done", "error", "cancelled"].includes(row.phase)) break;
    await sleep(250);
  }
  check(row, "no upload row appeared after choosing the file");
  check(row.phase !== "error", `upload failed: ${row.error}`);
  check(row.phase === "done", `upload not done after ${UPLOAD_TIMEOUT_MS / 1000}s (phase ${row.phase}, ${row.bytes})`);
  const openLink = page.locator('.upload-row[data-phase="done"] a.open-viewer');
  check((await openLink.count()) === 1, 'no "Open in viewer" link (was the Pathfed-Slide-Id header sent?)');
  const href = (await openLink.getAttribute("href")) || "";
  const slideId = new URLSearchParams(href.split("?")[1] || "").get("slide");
  check(href.startsWith("/viewer?slide=") && slideId, `unexpected viewer link: ${href}`);
  return slideId;
}

// ---- Translations ---------------------------------------------------------------------------

const I18N_DIR = fileURLToPath(new URL("../static/i18n/", import.meta.url));

/** Every catalogue the pages load, merged: key → { en, ja }. */
function loadCatalogue() {
  const merged = new Map();
  for (const file of readdirSync(I18N_DIR).filter((name) => name.endsWith(".json")).sort()) {
    let entries;
    try {
      entries = JSON.parse(readFileSync(path.join(I18N_DIR, file), "utf8"));
    } catch (err) {
      throw new TestFailure(`catalogue ${file} is not valid JSON: ${err.message}`);
    }
    for (const [key, texts] of Object.entries(entries)) merged.set(key, texts);
  }
  check(merged.size > 0, `no translation catalogues in ${I18N_DIR}`);
  return merged;
}

const CATALOGUE = loadCatalogue();
const PLACEHOLDER = /\{(\w+)\}/g;

/** Kana, kanji and half-width katakana: text a Japanese reader reads as Japanese. */
export const JAPANESE = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]/;

let currentLang = "en";

/** The language the pages are expected to speak from now on ("ja" or "en"). */
export function setLang(code) {
  check(code === "ja" || code === "en", `unknown language ${code}`);
  currentLang = code;
}

export function lang() {
  return currentLang;
}

function template(key, code) {
  const entry = CATALOGUE.get(key);
  check(entry, `the catalogues have no key ${key}`);
  const text = entry[code];
  check(typeof text === "string" && text.trim(), `${key} has no ${code} text`);
  return text;
}

/** The catalogue's text of `key` in `code` (the language under test by default), filled in. */
export function T(key, params = {}, code = currentLang) {
  return template(key, code).replace(PLACEHOLDER, (whole, name) => {
    check(params[name] !== undefined && params[name] !== null, `T(${key}) needs {${name}}`);
    return String(params[name]);
  });
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * A RegExp for the text of `key`: given parameters as their text (a RegExp parameter as its
 * pattern), any other placeholder as some text. `whole` anchors it to the whole string.
 */
export function textPattern(key, params = {}, { code = currentLang, whole = false } = {}) {
  const text = template(key, code);
  let source = "";
  let last = 0;
  for (const match of text.matchAll(PLACEHOLDER)) {
    source += escapeRegExp(text.slice(last, match.index));
    const value = params[match[1]];
    source += value instanceof RegExp ? `(?:${value.source})` : value === undefined || value === null ? "(.+?)" : escapeRegExp(String(value));
    last = match.index + match[0].length;
  }
  source += escapeRegExp(text.slice(last));
  return new RegExp(whole ? `^${source}$` : source);
}

/**
 * The English texts a Japanese page must not show: every catalogue text whose Japanese differs,
 * exactly, and the ones with placeholders as patterns where their fixed words say something
 * ("Case {id}", not "{label} ({file})", which any user data could match).
 */
const ENGLISH_LEFTOVERS = (() => {
  const exact = new Set();
  const patterns = [];
  for (const [key, texts] of CATALOGUE) {
    if (!texts.en || !texts.ja || texts.en.trim() === texts.ja.trim()) continue;
    if (!texts.en.match(PLACEHOLDER)) {
      exact.add(texts.en.trim());
    } else if (/[A-Za-z]{3,}/.test(texts.en.replace(PLACEHOLDER, ""))) {
      patterns.push({ key, pattern: textPattern(key, {}, { code: "en", whole: true }) });
    }
  }
  return { exact, patterns };
})();

// Runs inside the page: the texts the language checks read. Form controls, icons and the
// language switch (each language named in itself) are left out of an element's own text, as are
// elements marked as another language on purpose (a server message shown as it was sent).
function pageTexts({ heading }) {
  const tidy = (text) => (text || "").replace(/\s+/g, " ").trim();
  const own = (node) => {
    const copy = node.cloneNode(true);
    for (const inner of copy.querySelectorAll("select, input, textarea, svg")) inner.remove();
    return tidy(copy.textContent);
  };
  const pageLang = document.documentElement.lang;
  const foreign = (node) => {
    const marked = node.closest("[lang]");
    return Boolean(marked && marked !== document.documentElement && marked.lang !== pageLang);
  };
  const describe = (node) => {
    const id = node.id ? `#${node.id}` : "";
    const cls = !id && typeof node.className === "string" && node.className ? `.${node.className.trim().split(/\s+/).join(".")}` : "";
    return `${node.tagName.toLowerCase()}${id}${cls}`;
  };
  const items = [];
  const selector = "#app-nav a, #app-nav button, h1, h2, h3, button, th, label, summary, legend, caption, option";
  for (const node of document.querySelectorAll(selector)) {
    if (node.closest("#lang-select") || foreign(node)) continue;
    const text = node.tagName === "OPTION" ? tidy(node.textContent) : own(node);
    if (text) items.push({ what: describe(node), text });
  }
  const nav = document.getElementById("app-nav");
  const head = heading ? document.querySelector(heading) : null;
  return {
    lang: pageLang,
    title: document.title,
    nav: nav ? own(nav) : null,
    heading: head ? own(head) : null,
    items,
  };
}

/**
 * Checks that the current page speaks the language under test: `<html lang>`, the nav bar, the
 * page's heading and title read in it, and no nav link, heading, button, label, option or
 * table header still shows a text of the other language (English catalogue texts on a Japanese
 * page; any Japanese on an English page). `heading` picks the element that names the page
 * (the viewer's h1 is the file name); `title: false` skips a title made of user data.
 */
export async function checkLanguage(name, { nav = true, heading = "h1", title = true } = {}) {
  const code = currentLang;
  if (nav) await page.locator("#app-nav .user-name").waitFor({ timeout: 15_000 });
  await waitInPage(`<html lang="${code}"> on the ${name} page`, (want) => document.documentElement.lang === want, code, 15_000);
  const seen = await page.evaluate(pageTexts, { heading });
  const where = `the ${name} page (${page.url()})`;
  const japanese = (text) => JAPANESE.test(text || "");
  const wanted = [];
  if (nav) {
    check(seen.nav !== null, `${where} has no nav bar`);
    wanted.push(["nav bar", seen.nav]);
  }
  if (heading) {
    check(seen.heading !== null, `${where} has no ${heading}`);
    wanted.push([heading, seen.heading]);
  }
  if (title) wanted.push(["title", seen.title]);
  for (const [what, text] of wanted) {
    if (code === "ja") check(japanese(text), `${where}: the ${what} is not in Japanese: "${text}"`);
    else check(!japanese(text), `${where}: the ${what} shows Japanese on an English page: "${text}"`);
  }
  const wrong = [];
  for (const item of seen.items) {
    if (code === "ja") {
      if (ENGLISH_LEFTOVERS.exact.has(item.text)) {
        wrong.push(`${item.what}: "${item.text}"`);
        continue;
      }
      const pattern = ENGLISH_LEFTOVERS.patterns.find((p) => p.pattern.test(item.text));
      if (pattern) wrong.push(`${item.what}: "${item.text}" (${pattern.key} in English)`);
    } else if (japanese(item.text)) {
      wrong.push(`${item.what}: "${item.text}"`);
    }
  }
  check(!wrong.length, `${where} still shows ${code === "ja" ? "English" : "Japanese"} text:\n  ${wrong.join("\n  ")}`);
  step(`  ${name}: <html lang="${code}">, nav, ${heading || "page"}${title ? " and title" : ""} in ${code}; ${seen.items.length} texts checked`);
}

/** The navigation's link texts, once the page has rendered them (all at once, after the
 * session loads): reading before that would see none. */
export async function navLinks() {
  await page.locator("#app-nav .nav-link").first().waitFor({ timeout: 15_000 });
  return page.locator("#app-nav .nav-link").allTextContents();
}

/** Waits for the case page's status badge to say `status` (an API status such as
 * "ready_for_sign_out") in the language under test. */
export async function waitForStatus(status) {
  const want = T(`common.status.${status}`);
  await waitInPage(`case status "${want}"`, (text) => (document.getElementById("status-badge")?.textContent || "") === text, want, 15_000);
}

// ---- Second factor --------------------------------------------------------------------------

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/** TOTP's time step (RFC 6238), as the server and authenticator apps use it. */
export const TOTP_STEP_MS = 30_000;

/** The bytes of a base32 text (RFC 4648; case, spaces and padding ignored). */
function base32Bytes(text) {
  const clean = text.toUpperCase().replace(/[\s=-]/g, "");
  let bits = 0;
  let value = 0;
  const bytes = [];
  for (const char of clean) {
    const index = BASE32.indexOf(char);
    check(index >= 0, `not a base32 secret: ${JSON.stringify(text)}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

/** The 6-digit TOTP code of `secretBase32` for the 30-s step at `atMs` (RFC 6238, HMAC-SHA-1). */
export function totpCode(secretBase32, atMs = Date.now()) {
  return codeOfStep(base32Bytes(secretBase32), Math.floor(atMs / TOTP_STEP_MS));
}

function codeOfStep(key, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const digest = createHmac("sha1", key).update(counter).digest();
  // Dynamic truncation (RFC 4226 §5.3).
  const offset = digest[digest.length - 1] & 0x0f;
  const number = digest.readUInt32BE(offset) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, "0");
}

// The server takes each step's code once per account: the last step used for each secret.
const usedSteps = new Map();

/**
 * A code of `secret` for a step no earlier sign-in or enrolment of this run has used, waiting
 * for the next 30-s step when the current one is spent; the step counts as used from now on.
 */
export async function unusedTotpCode(secret) {
  const last = usedSteps.get(secret);
  let current = Math.floor(Date.now() / TOTP_STEP_MS);
  if (last !== undefined && current <= last) {
    const waitMs = (last + 1) * TOTP_STEP_MS - Date.now() + 200;
    step(`  waiting ${(waitMs / 1000).toFixed(1)} s for a fresh one-time code`);
    await sleep(waitMs);
    current = Math.floor(Date.now() / TOTP_STEP_MS);
  }
  usedSteps.set(secret, current);
  return codeOfStep(base32Bytes(secret), current);
}

/**
 * On the /security page of the current page: starts enrolment, reads the secret shown for
 * manual entry (and checks the QR code is drawn), confirms with a fresh code and waits for the
 * recovery codes. Returns `{ secret, recoveryCodes }`.
 */
export async function enrolSecondFactor() {
  await page.locator("#totp-start").waitFor({ state: "visible", timeout: 10_000 });
  await page.click("#totp-start");
  await page.locator("#totp-secret").waitFor({ state: "visible", timeout: 10_000 });
  await waitInPage("the secret for manual entry", () => /^[A-Z2-7 ]{16,}$/.test((document.getElementById("totp-secret")?.textContent || "").trim()), null, 10_000);
  const secret = ((await page.textContent("#totp-secret")) || "").replace(/\s+/g, "");
  const qr = await page.locator("#totp-qr svg").count();
  check(qr === 1, `the QR code is not drawn (${qr} svg elements in #totp-qr)`);
  await page.fill("#totp-code", await unusedTotpCode(secret));
  await page.click("#totp-confirm");
  await page.locator("#totp-done").waitFor({ state: "visible", timeout: 10_000 });
  const recoveryCodes = (await page.locator("#recovery-codes li").allTextContents()).map((code) => code.trim());
  step(`  second factor enrolled; ${recoveryCodes.length} recovery codes shown`);
  return { secret, recoveryCodes };
}

/**
 * Signs in on the login page of a fresh context speaking `locale`, after checking the login
 * page's language; waits for `home` and its nav bar. With `secret`, answers the second-factor
 * question with a fresh code of it; with `enrol`, expects the /security page, where a user who
 * must have a second factor and has none lands.
 */
export async function signIn(base, username, password, { locale, home = "/", secret, enrol = false }) {
  await newPage(locale);
  step(`signing in as ${username} (browser locale ${locale})${secret ? " with a one-time code" : ""}`);
  await page.goto(`${base}/login`);
  await checkLanguage("login", { nav: false, heading: "#login-button" });
  // The switch shows the language the page chose (its first option until the script ran).
  await waitInPage("the login page's language switch to show the page's language", (want) => document.getElementById("lang-select")?.value === want, currentLang, 10_000);
  await page.fill("#username", username);
  await page.fill("#password", password);
  const target = enrol ? `${base}/security` : `${base}${home}`;
  if (secret) {
    await page.click("#login-button");
    await page.locator("#code").waitFor({ state: "visible", timeout: 10_000 });
    await checkLanguage("login (one-time code)", { nav: false, heading: "#login-button" });
    await page.fill("#code", await unusedTotpCode(secret));
  }
  await Promise.all([page.waitForURL(target, { timeout: 15_000 }), page.click("#login-button")]);
  await page.locator("#app-nav .user-name").waitFor({ timeout: 10_000 });
  return page;
}

// ---- Running a script -----------------------------------------------------------------------

async function reportFailure(err, name) {
  console.error(`\n[${tag}] FAILED:`, err instanceof TestFailure ? err.message : err?.stack || err);
  if (browserLog.length) {
    console.error("\n--- browser log (last 40 lines) ---");
    console.error(browserLog.slice(-40).join("\n"));
  }
  console.error("\n--- server log (last 60 lines) ---");
  console.error(serverLog.length ? serverLog.slice(-60).join("\n") : "(no server output)");
  if (page) {
    try {
      await mkdir(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, `failure-${name}.png`);
      await page.screenshot({ path: shot, timeout: 10_000 });
      console.error(`\nsaved ${shot}`);
    } catch (shotError) {
      console.error(`\n(could not save failure screenshot: ${shotError.message})`);
    }
  }
}

/** Runs `main` under the watchdog, reports a failure with the logs, cleans up, and exits. */
export async function runTest(name, main) {
  tag = `browser-test ${name}`;
  const watchdog = setTimeout(() => {
    reportFailure(new TestFailure(`the whole test took longer than ${WATCHDOG_MS / 60_000} minutes`), name)
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
    // After a signal the browser is closed under the test's feet; the errors that follow are
    // noise, not a finding.
    if (!interrupted) await reportFailure(err, name);
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  process.exit(interrupted ? SIGNAL_EXIT_CODES[interrupted] : exitCode);
}
