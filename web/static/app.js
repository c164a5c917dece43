// Shared helpers for every pathfed page: API calls, the session, the nav bar,
// error display and value formatting. Loaded as an ES module; page scripts
// import what they need from here.

const SESSION_URL = "/api/v1/session";
const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

// The CSRF token comes with the session answer; the server wants it on every
// unsafe request made with the cookie, so the fetch wrapper adds it itself.
let csrfToken = null;

export function getCsrfToken() {
  return csrfToken;
}

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
      if (body && body.error && body.error.message) return body.error.message;
    } catch {
      // Not JSON; fall through.
    }
  }
  return fallback;
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
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }

  if (!response.ok) {
    const error = await errorFromResponse(response);
    if (response.status === 401 && path !== SESSION_URL) {
      redirectToLogin();
    }
    throw error;
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("application/json") ? response.json() : null;
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
 * /login otherwise), draws the nav bar, and returns the session. Resolves to
 * null when a redirect is under way so callers can simply stop.
 */
export async function requireSession({ active, userOnly } = {}) {
  let session;
  try {
    session = await fetchSession();
  } catch (err) {
    showError(err.message);
    return null;
  }
  if (!session) {
    redirectToLogin();
    return null;
  }
  renderNav(session, { active, userOnly });
  return session;
}

export async function logout() {
  try {
    await api(SESSION_URL, { method: "DELETE" });
  } catch (err) {
    // A session that is already gone is as good as logged out.
    if (!(err instanceof ApiError && err.status === 401)) {
      showError(err.message);
      return;
    }
  }
  csrfToken = null;
  window.location.assign("/login");
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

const NAV_LINKS = [
  { href: "/cases", label: "Cases", key: "cases" },
  { href: "/", label: "Slides", key: "slides" },
  { href: "/upload", label: "Upload", key: "upload" },
];
// Researchers work in the research tier only; the platform admin runs both. A hospital's
// admin stays within its hospital's clinical work.
const RESEARCH_LINKS = [
  { href: "/datasets", label: "Datasets", key: "datasets" },
  { href: "/training", label: "Training", key: "training" },
  { href: "/models", label: "Models", key: "models" },
];
// The patient's hospital (submitters, admins) records research opt-outs.
const OPT_OUT_LINK = { href: "/opt-out", label: "Opt-out", key: "opt-out" };

function linksFor(role) {
  if (role === "researcher") return RESEARCH_LINKS;
  if (role === "platform-admin") return [...NAV_LINKS, OPT_OUT_LINK, ...RESEARCH_LINKS];
  if (role === "admin" || role === "submitter") return [...NAV_LINKS, OPT_OUT_LINK];
  return NAV_LINKS;
}

/**
 * Fills the page's `#app-nav` element with the product name, page links, who
 * is logged in (name, hospital, role) and a logout button. `userOnly` draws
 * just the user part, for the viewer's own compact header.
 */
export function renderNav(session, { active, userOnly = false } = {}) {
  const host = document.getElementById("app-nav");
  if (!host) return;
  const user = session.user;
  const hospital = user.hospital ? user.hospital.name : "";
  const who = [hospital, user.role].filter(Boolean).join(", ");

  const userBlock = el(
    "div",
    { class: "nav-user" },
    el("span", { class: "user-name", text: user.username }),
    who ? el("span", { class: "user-meta", text: ` (${who})` }) : null,
    el("button", { type: "button", class: "button button-quiet", id: "logout-button", onclick: logout, text: "Log out" }),
  );
  if (userOnly) {
    host.replaceChildren(userBlock);
    return;
  }

  const links = linksFor(user.role).map((link) =>
    el("a", {
      href: link.href,
      class: link.key === active ? "nav-link active" : "nav-link",
      "aria-current": link.key === active ? "page" : null,
      text: link.label,
    }),
  );
  host.replaceChildren(
    el("a", { href: "/", class: "brand", text: "pathfed" }),
    el("nav", { class: "nav-links", "aria-label": "Main" }, links),
    userBlock,
  );
}

/** Shows a message in the page's alert banner (`#app-error`), or clears it. */
export function showError(message) {
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

export function formatDimensions(width, height) {
  if (!width || !height) return "—";
  const fmt = new Intl.NumberFormat();
  return `${fmt.format(width)} × ${fmt.format(height)} px`;
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

export function formatDate(unixSeconds) {
  if (!unixSeconds) return "—";
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

/** A case's status as a coloured badge ("in double check", …). */
export function statusBadge(status, attrs = {}) {
  return el("span", { class: `status status-${status}`, text: status.replaceAll("_", " "), ...attrs });
}

export function viewerUrl(slideId) {
  return `/viewer?slide=${encodeURIComponent(slideId)}`;
}
