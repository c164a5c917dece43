// Shared helpers for every pathfed page: API calls, the session, the nav bar,
// translations (Japanese and English), error display and value formatting.
// Loaded as an ES module; page scripts import what they need from here.

const SESSION_URL = "/api/v1/session";
/** The page where the user sets up a second factor and changes the password. */
const SECURITY_PAGE = "/security";
// 401 answers to a password or code the user just typed (changing the password, turning the
// second factor off): the answer to show, not a sign that the session ended.
const TYPED_ANSWER_CODES = new Set(["invalid_credentials", "invalid_second_factor", "second_factor_required"]);
const LANGUAGE_URL = "/api/v1/session/language";
const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

// The CSRF token comes with the session answer; the server wants it on every
// unsafe request made with the cookie, so the fetch wrapper adds it itself.
let csrfToken = null;

export function getCsrfToken() {
  return csrfToken;
}

// ---- Translations ---------------------------------------------------------

/** The languages the pages speak. */
export const LANGUAGES = ["ja", "en"];
const LANG_STORAGE_KEY = "pathfed.lang";
/** The hospital's zone when the session does not name one. */
export const DEFAULT_TIME_ZONE = "Asia/Tokyo";

// Merged catalogues: key → { en, ja }.
const catalogue = new Map();
const loadedAreas = new Set();
let currentLang = "en";
let currentTimeZone = DEFAULT_TIME_ZONE;

function storedLanguage() {
  try {
    const value = window.localStorage.getItem(LANG_STORAGE_KEY);
    return LANGUAGES.includes(value) ? value : null;
  } catch {
    // Storage can be switched off; the browser's languages decide then.
    return null;
  }
}

function storeLanguage(value) {
  try {
    if (value) window.localStorage.setItem(LANG_STORAGE_KEY, value);
    else window.localStorage.removeItem(LANG_STORAGE_KEY);
  } catch {
    // Not fatal: the server keeps the choice of a signed-in user.
  }
}

/** The first of ja/en the browser lists, else English. */
function browserLanguage() {
  const listed = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || ""];
  for (const tag of listed) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(primary)) return primary;
  }
  return "en";
}

async function loadArea(area) {
  if (loadedAreas.has(area)) return;
  try {
    const response = await fetch(`/static/i18n/${encodeURIComponent(area)}.json`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const entries = await response.json();
    for (const [key, texts] of Object.entries(entries)) catalogue.set(key, texts);
    loadedAreas.add(area);
  } catch (err) {
    // The page still works with the English text of its HTML.
    console.warn(`translations "${area}" could not be loaded: ${err.message}`);
  }
}

/**
 * Loads the catalogues of `areas` (with common and errors), picks the
 * language (the user's saved choice, else this browser's last choice, else
 * the browser's languages), sets `<html lang>` and translates the page.
 */
export async function initI18n(areas = [], session = null) {
  const user = session && session.user;
  // requireSession keeps the saved choice in chosen_language once language holds the shown one.
  const choice = user ? (user.chosen_language !== undefined ? user.chosen_language : user.language) : null;
  currentLang = (LANGUAGES.includes(choice) && choice) || storedLanguage() || browserLanguage();
  currentTimeZone = (user && user.hospital && user.hospital.time_zone) || DEFAULT_TIME_ZONE;
  const wanted = [...new Set(["common", "errors", ...areas])];
  await Promise.all(wanted.map(loadArea));
  document.documentElement.lang = currentLang;
  translatePage(document);
  return currentLang;
}

/** Switches the page to `code` without a reload (the login page's switch). */
export function useLanguage(code) {
  if (!LANGUAGES.includes(code)) return;
  currentLang = code;
  storeLanguage(code);
  document.documentElement.lang = code;
  translatePage(document);
}

/** "ja" or "en". */
export function lang() {
  return currentLang;
}

/** The hospital's IANA time zone that dates are shown in. */
export function timeZone() {
  return currentTimeZone;
}

/** Whether the loaded catalogues hold `key`. */
export function hasText(key) {
  return catalogue.has(key);
}

/**
 * The text of `key` in the current language with `{name}` placeholders
 * filled from `params`. A missing key comes back as itself (and a warning),
 * so it shows up on the page instead of hiding.
 */
export function t(key, params = {}) {
  const entry = catalogue.get(key);
  if (!entry) {
    console.warn(`missing translation: ${key}`);
    return key;
  }
  const text = entry[currentLang] ?? entry.en ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) =>
    params[name] === undefined || params[name] === null ? whole : String(params[name]),
  );
}

const ATTRIBUTE_KEYS = [
  ["data-i18n-placeholder", "placeholder"],
  ["data-i18n-title", "title"],
  ["data-i18n-aria-label", "aria-label"],
];

function within(root, selector) {
  const found = [...root.querySelectorAll(selector)];
  if (root.matches && root.matches(selector)) found.unshift(root);
  return found;
}

/**
 * Fills every element under `root` that names a key: `data-i18n` (its text),
 * `data-i18n-placeholder`, `data-i18n-title` and `data-i18n-aria-label`.
 */
export function translatePage(root = document) {
  for (const node of within(root, "[data-i18n]")) {
    node.textContent = t(node.getAttribute("data-i18n"));
  }
  for (const [source, target] of ATTRIBUTE_KEYS) {
    for (const node of within(root, `[${source}]`)) {
      node.setAttribute(target, t(node.getAttribute(source)));
    }
  }
}

// ---- API ------------------------------------------------------------------

/** An API failure carrying the server's error code and human message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/**
 * Reads the server's `{"error": {"code", "message"}}` body from a failed
 * response. Falls back to the HTTP status text so the user always gets a line
 * of text, even when a proxy answered with HTML.
 */
export async function errorFromResponse(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || "request failed"}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, code, message);
}

/** Parses an error body given as text (tus-js-client hands us raw text). */
export function messageFromErrorBody(text, fallback) {
  if (text) {
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) {
        return errorText(new ApiError(0, body.error.code || "", body.error.message));
      }
    } catch {
      // Not JSON; fall through.
    }
  }
  return fallback;
}

// Codes whose translation is general: the server's message says what exactly was wrong.
const DETAILED_CODES = new Set(["invalid", "invalid_transition", "forbidden", "conflict", "bad_request", "bad_body"]);

/**
 * What to tell the user about `err`: the translation of an ApiError's code
 * (`errors.<code>`, with the server's detail for general codes), else the
 * server's own message; plain strings pass through.
 */
export function errorText(err) {
  if (err === null || err === undefined) return "";
  if (typeof err === "string") return err;
  const code = err.code;
  const message = err.message || "";
  if (code && hasText(`errors.${code}`)) {
    const text = t(`errors.${code}`);
    if (DETAILED_CODES.has(code) && message && message !== text) {
      return t("common.error.with_detail", { text, detail: message });
    }
    return text;
  }
  return message || t("common.error.unknown");
}

/** Where the login page should send the user back to. */
function currentLocationForNext() {
  return window.location.pathname + window.location.search;
}

export function redirectToLogin() {
  const next = currentLocationForNext();
  const query = next && next !== "/" ? `?next=${encodeURIComponent(next)}` : "";
  window.location.assign(`/login${query}`);
}

/**
 * Headers for requests a page makes by itself (polling): the server does not count them as
 * the user's activity, so a page left open still signs out after the idle time.
 */
export const BACKGROUND_HEADERS = Object.freeze({ "X-Pathfed-Background": "1" });

/**
 * fetch() for the JSON API. Sends JSON bodies, adds the CSRF header on unsafe
 * methods, throws ApiError with the server's message on 4xx/5xx, and returns
 * the parsed body (or null for 204). A 401 outside the session endpoint means
 * the session ran out, so the user is sent to the login page.
 */
export async function api(path, { method = "GET", json, headers = {}, signal } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  if (UNSAFE_METHODS.has(method.toUpperCase()) && csrfToken) {
    init.headers["X-CSRF-Token"] = csrfToken;
  }

  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", networkMessage());
  }

  if (!response.ok) {
    const error = await errorFromResponse(response);
    if (response.status === 401 && path !== SESSION_URL && !TYPED_ANSWER_CODES.has(error.code)) {
      redirectToLogin();
    }
    // The user must set up a second factor before anything else.
    if (response.status === 403 && error.code === "second_factor_enrolment_required" && window.location.pathname !== SECURITY_PAGE) {
      window.location.assign(SECURITY_PAGE);
    }
    throw error;
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("application/json") ? response.json() : null;
}

function networkMessage() {
  // Said before the catalogues arrive too (the session request is the first call).
  return hasText("errors.network")
    ? t("errors.network")
    : "The server could not be reached. Check your connection and try again.";
}

/** Current session, or null when not logged in. Also stores the CSRF token. */
export async function fetchSession() {
  try {
    const session = await api(SESSION_URL);
    csrfToken = session.csrf_token || null;
    return session;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

/**
 * For every page except login: makes sure a session exists (redirecting to
 * /login otherwise), loads the translations of `areas`, translates the page,
 * draws the nav bar, and returns the session. `user.language` is then the
 * language shown ("ja"/"en"; `user.chosen_language` is the saved choice or
 * null) and `user.hospital.time_zone` the zone dates are shown in. Resolves to
 * null when a redirect is under way so callers can simply stop.
 */
export async function requireSession({ active, userOnly, areas = [] } = {}) {
  // The bell in every page's nav speaks from the notifications catalogue.
  const wanted = ["notifications", ...areas];
  let session;
  try {
    session = await fetchSession();
  } catch (err) {
    await initI18n(wanted);
    showError(err);
    return null;
  }
  if (!session) {
    redirectToLogin();
    return null;
  }
  // Until the second factor the policy asks for is set up, the security page is the only one.
  if (session.second_factor_enrolment_required && window.location.pathname !== SECURITY_PAGE) {
    window.location.assign(SECURITY_PAGE);
    return null;
  }
  const user = session.user;
  user.chosen_language = LANGUAGES.includes(user.language) ? user.language : null;
  if (user.hospital && !user.hospital.time_zone) user.hospital.time_zone = DEFAULT_TIME_ZONE;
  await initI18n(wanted, session);
  user.language = lang();
  renderNav(session, { active, userOnly });
  return session;
}

export async function logout() {
  try {
    await api(SESSION_URL, { method: "DELETE" });
  } catch (err) {
    // A session that is already gone is as good as logged out.
    if (!(err instanceof ApiError && err.status === 401)) {
      showError(err);
      return;
    }
  }
  csrfToken = null;
  window.location.assign("/login");
}

/**
 * Saves the user's language on the server (so every device and the e-mails
 * follow it) and in this browser, then reloads the page in it.
 */
export async function chooseLanguage(code) {
  if (!LANGUAGES.includes(code)) return;
  await api(LANGUAGE_URL, { method: "PUT", json: { language: code } });
  storeLanguage(code);
  window.location.reload();
}

/**
 * Small DOM builder. Building nodes with textContent (never innerHTML) keeps
 * user-controlled values such as filenames from being read as markup.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- Nav ------------------------------------------------------------------

const NAV_LINKS = [
  { href: "/cases", label: () => t("common.nav.cases"), key: "cases" },
  { href: "/", label: () => t("common.nav.slides"), key: "slides" },
  { href: "/upload", label: () => t("common.nav.upload"), key: "upload" },
];
// Researchers work in the research tier only; the platform admin runs both. A hospital's
// admin stays within its hospital's clinical work.
const RESEARCH_LINKS = [
  { href: "/datasets", label: () => t("common.nav.datasets"), key: "datasets" },
  { href: "/training", label: () => t("common.nav.training"), key: "training" },
  { href: "/models", label: () => t("common.nav.models"), key: "models" },
];
// The patient's hospital (submitters, admins) records research opt-outs.
const OPT_OUT_LINK = { href: "/opt-out", label: () => t("common.nav.opt_out"), key: "opt-out" };
// Hospital admins administer their hospital, the platform admin every hospital: last in the bar.
const ADMIN_LINK = { href: "/admin", label: () => t("common.nav.admin"), key: "admin" };
// Every user's own sign-in settings (second factor, password), beside their name.
const SECURITY_LINK = { href: SECURITY_PAGE, label: () => t("common.nav.security"), key: "security" };

const ROLES = ["pathologist", "submitter", "admin", "researcher", "platform-admin"];

function linksFor(role) {
  if (role === "researcher") return RESEARCH_LINKS;
  if (role === "platform-admin") return [...NAV_LINKS, OPT_OUT_LINK, ...RESEARCH_LINKS, ADMIN_LINK];
  if (role === "admin") return [...NAV_LINKS, OPT_OUT_LINK, ADMIN_LINK];
  if (role === "submitter") return [...NAV_LINKS, OPT_OUT_LINK];
  return NAV_LINKS;
}

/** A role as people read it ("病理医", "pathologist"). */
export function roleName(role) {
  return ROLES.includes(role) ? t(`common.role.${role}`) : role;
}

function languageSwitch() {
  const select = el(
    "select",
    { id: "lang-select", class: "lang-select", "aria-label": t("common.nav.language"), title: t("common.nav.language") },
    // Each language is named in itself, so anyone can find their own.
    el("option", { value: "ja", lang: "ja", text: "日本語" }),
    el("option", { value: "en", lang: "en", text: "English" }),
  );
  select.value = lang();
  select.addEventListener("change", async () => {
    const wanted = select.value;
    select.disabled = true;
    try {
      await chooseLanguage(wanted);
    } catch (err) {
      showError(err);
      select.value = lang();
      select.disabled = false;
    }
  });
  return select;
}

async function mountBell(host, session) {
  try {
    // Loaded on demand: a bell that fails to load must not take the page down with it.
    const { mountNotifications } = await import("/static/notifications.js");
    await mountNotifications(host, session);
  } catch (err) {
    console.error("notifications could not be shown:", err);
  }
}

/**
 * Fills the page's `#app-nav` element with the product name, page links, who
 * is logged in (name, hospital, role), the notifications bell, the language
 * switch, the account security link and a logout button. `userOnly` draws just
 * the user part, for the viewer's own compact header. A session that must set
 * up a second factor first gets no page links and no bell: the server answers
 * nothing else until then.
 */
export function renderNav(session, { active, userOnly = false } = {}) {
  const host = document.getElementById("app-nav");
  if (!host) return;
  const user = session.user;
  const hospital = user.hospital ? user.hospital.name : "";
  const role = user.role ? roleName(user.role) : "";
  const meta = hospital && role ? t("common.nav.user_meta", { hospital, role }) : hospital || role;
  const enrolling = Boolean(session.second_factor_enrolment_required);
  const bell = el("span", { id: "notif-host", class: "notif-host" });
  const onSecurity = active === SECURITY_LINK.key;

  const userBlock = el(
    "div",
    { class: "nav-user" },
    el("span", { class: "user-name", title: user.username, text: user.display_name || user.username }),
    meta ? el("span", { class: "user-meta", text: ` ${meta}` }) : null,
    bell,
    languageSwitch(),
    el("a", {
      href: SECURITY_LINK.href,
      id: "security-link",
      class: "button button-quiet",
      "aria-current": onSecurity ? "page" : null,
      text: SECURITY_LINK.label(),
    }),
    el("button", { type: "button", class: "button button-quiet", id: "logout-button", onclick: logout, text: t("common.nav.logout") }),
  );
  if (userOnly) {
    host.replaceChildren(userBlock);
  } else {
    const links = (enrolling ? [] : linksFor(user.role)).map((link) =>
      el("a", {
        href: link.href,
        class: link.key === active ? "nav-link active" : "nav-link",
        "aria-current": link.key === active ? "page" : null,
        text: link.label(),
      }),
    );
    host.replaceChildren(
      el("a", { href: "/", class: "brand", text: "pathfed" }),
      el("nav", { class: "nav-links", "aria-label": t("common.nav.main") }, links),
      userBlock,
    );
  }
  if (!enrolling) mountBell(bell, session);
}

/**
 * Shows a message in the page's alert banner (`#app-error`), or clears it.
 * Takes an error (translated by its code, see `errorText`) or a text.
 */
export function showError(errOrText) {
  const message = errorText(errOrText);
  const banner = document.getElementById("app-error");
  if (!banner) {
    if (message) console.error(message);
    return;
  }
  banner.textContent = message || "";
  banner.hidden = !message;
}

// ---- Formatting -----------------------------------------------------------

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined || Number.isNaN(bytes)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** A number with the current language's digit grouping. */
export function formatNumber(value, options = {}) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  return new Intl.NumberFormat(lang(), options).format(value);
}

export function formatDimensions(width, height) {
  if (!width || !height) return "—";
  return `${formatNumber(width)} × ${formatNumber(height)} px`;
}

export function formatMpp(mppX, mppY) {
  if (mppX === null || mppX === undefined) return "—";
  const x = Number(mppX).toFixed(3);
  // Most scanners have square pixels; only show both axes when they differ.
  if (mppY !== null && mppY !== undefined && Math.abs(mppY - mppX) > 1e-6) {
    return `${x} × ${Number(mppY).toFixed(3)} µm/px`;
  }
  return `${x} µm/px`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

// Intl formatters are costly to build and a table formats many dates: one set per zone.
const formatters = new Map();

function formattersFor(zone) {
  let set = formatters.get(zone);
  if (!set) {
    set = {
      clock: new Intl.DateTimeFormat("en-US", {
        timeZone: zone,
        year: "numeric",
        month: "numeric",
        day: "numeric",
        hour: "2-digit",
        minute: "2-digit",
        hourCycle: "h23",
      }),
      names: ["en-US", "ja-JP"].map((locale) => new Intl.DateTimeFormat(locale, { timeZone: zone, timeZoneName: "short" })),
    };
    formatters.set(zone, set);
  }
  return set;
}

/** Calendar fields of `unix` on the hospital's clock (UTC if the zone is unknown). */
function clockParts(unix) {
  const date = new Date(unix * 1000);
  let set;
  try {
    set = formattersFor(timeZone());
  } catch {
    // An unknown zone name: say UTC rather than fail the page.
    set = formattersFor("UTC");
  }
  const parts = set.clock.formatToParts(date);
  const field = (type) => (parts.find((p) => p.type === type) || {}).value || "";
  // The zone's short name: "JST" rather than "GMT+9" where either locale knows one.
  const names = set.names.map((f) => (f.formatToParts(date).find((p) => p.type === "timeZoneName") || {}).value || "");
  return {
    y: field("year"),
    m: Number(field("month")),
    d: Number(field("day")),
    hh: field("hour").padStart(2, "0"),
    mm: field("minute").padStart(2, "0"),
    zone: names.find((n) => n && !/^(GMT|UTC)[+-]/.test(n)) || names[0] || "UTC",
  };
}

/**
 * A moment on the hospital's clock, as the server writes it in reports:
 * "2026年12月5日 15:04 JST" or "5 Dec 2026 15:04 JST".
 */
export function formatDateTime(unixSeconds) {
  if (!unixSeconds) return "—";
  const p = clockParts(unixSeconds);
  return lang() === "ja"
    ? `${p.y}年${p.m}月${p.d}日 ${p.hh}:${p.mm} ${p.zone}`
    : `${p.d} ${MONTHS[p.m - 1]} ${p.y} ${p.hh}:${p.mm} ${p.zone}`;
}

/** Date and time, as `formatDateTime` (the name the pages have always used). */
export function formatDate(unixSeconds) {
  return formatDateTime(unixSeconds);
}

/** The calendar date alone on the hospital's clock: "2026年12月5日" or "5 Dec 2026". */
export function formatDay(unixSeconds) {
  if (!unixSeconds) return "—";
  const p = clockParts(unixSeconds);
  return lang() === "ja" ? `${p.y}年${p.m}月${p.d}日` : `${p.d} ${MONTHS[p.m - 1]} ${p.y}`;
}

/** A waiting time in its two largest units: "3日 4時間" / "3 d 4 h", "25分" / "25 min". */
export function formatWaiting(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
  const total = Math.max(0, Math.floor(Number(seconds) / 60));
  const days = Math.floor(total / 1440);
  const hours = Math.floor((total % 1440) / 60);
  const minutes = total % 60;
  if (days > 0) return `${t("common.duration.days", { n: days })} ${t("common.duration.hours", { n: hours })}`;
  if (hours > 0) return `${t("common.duration.hours", { n: hours })} ${t("common.duration.minutes", { n: minutes })}`;
  return t("common.duration.minutes", { n: minutes });
}

const CASE_STATUSES = [
  "draft",
  "submitted",
  "assigned",
  "diagnosed",
  "in_double_check",
  "adjudication",
  "ready_for_sign_out",
  "signed_out",
  "cancelled",
];

/** A case status as people read it ("再検中（ダブルチェック）", "in double check"). */
export function statusText(status) {
  return CASE_STATUSES.includes(status) ? t(`common.status.${status}`) : String(status).replaceAll("_", " ");
}

/** A case's status as a coloured badge. */
export function statusBadge(status, attrs = {}) {
  return el("span", { class: `status status-${status}`, text: statusText(status), ...attrs });
}

export function viewerUrl(slideId) {
  return `/viewer?slide=${encodeURIComponent(slideId)}`;
}
