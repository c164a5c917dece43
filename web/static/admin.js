// The administration console: a hospital's admin administers that hospital, the platform admin
// every hospital. Tabs for hospitals (settings, second-factor policy, upload quota and usage),
// users (add, role, disable, password, second factor, unlock), API tokens (revoke), failed jobs
// (retry) and the audit log (search, CSV, a patient's access report, the tamper check). The
// server decides what each admin reaches and refuses the rest; the page only leaves out
// buttons the server would refuse, and shows the server's answer when it does.
import {
  ApiError,
  api,
  el,
  errorFromResponse,
  formatBytes,
  formatDateTime,
  getCsrfToken,
  hasText,
  redirectToLogin,
  requireSession,
  roleName,
  showError,
  t,
  timeZone,
} from "/static/app.js";

const ADMIN_API = "/api/v1/admin";
const TABS = ["hospitals", "users", "tokens", "jobs", "audit"];
const GIB = 1024 ** 3;
/** Roles a hospital's admin gives; the platform admin also gives those beyond one hospital. */
const HOSPITAL_ROLES = ["submitter", "pathologist", "admin"];
const BEYOND_HOSPITAL = ["researcher", "platform-admin"];
/** Audit rows asked for per page. */
const AUDIT_PAGE = 100;

const consoleHost = document.getElementById("admin-console");
const statusLine = document.getElementById("admin-status");

let me = null;
let isPlatformAdmin = false;
let hospitals = [];
let hubs = [];
const loaded = new Set();

/** Shows what was just done (or clears it). */
function say(text) {
  statusLine.textContent = text || "";
  statusLine.hidden = !text;
}

function button(className, text, onclick, { disabled = false, danger = false } = {}) {
  return el("button", {
    type: "button",
    class: `button button-small ${danger ? "button-danger " : ""}${className}`,
    text,
    disabled,
    onclick,
  });
}

function table(id, headings, rows) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "slide-table admin-table", id },
      el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows),
    ),
  );
}

/** Runs an action of a button: errors go to the banner, the button waits meanwhile. */
async function act(target, work) {
  showError("");
  say("");
  if (target) target.disabled = true;
  try {
    await work();
  } catch (err) {
    showError(err);
  } finally {
    if (target && target.isConnected) target.disabled = false;
  }
}

// ---- Tabs ----------------------------------------------------------------------------------

async function showTab(name) {
  for (const tab of TABS) {
    const active = tab === name;
    const tabButton = document.getElementById(`tab-${tab}`);
    tabButton.classList.toggle("active", active);
    tabButton.setAttribute("aria-selected", String(active));
    document.getElementById(`panel-${tab}`).hidden = !active;
  }
  if (window.location.hash !== `#${name}`) window.history.replaceState(null, "", `#${name}`);
  await load(name);
}

async function load(name, again = false) {
  if (loaded.has(name) && !again) return;
  loaded.add(name);
  try {
    if (name === "hospitals") await loadHospitals();
    else if (name === "users") await loadUsers();
    else if (name === "tokens") await loadTokens();
    else if (name === "jobs") await loadJobs();
  } catch (err) {
    loaded.delete(name);
    showError(err);
  }
}

// ---- Hospitals -------------------------------------------------------------------------------

function gibText(bytes) {
  if (bytes === null || bytes === undefined) return "";
  return String(Math.round((bytes / GIB) * 100) / 100);
}

function toggle(id, checked, text) {
  return el("label", { class: "toggle", for: id }, el("input", { type: "checkbox", id, checked: Boolean(checked) }), ` ${text}`);
}

function field(control, text) {
  return el("div", { class: "field" }, el("label", { for: control.id, text }), control);
}

function usageText(h) {
  const used = formatBytes(h.upload_used_bytes);
  if (h.upload_quota_bytes === null || h.upload_quota_bytes === undefined) return t("admin.hospitals.usage_unlimited", { used });
  return t("admin.hospitals.usage", { used, limit: formatBytes(h.upload_quota_bytes) });
}

function hospitalForm(h) {
  const id = (name) => `h-${h.id}-${name}`;
  const isHub = h.kind === "hub";
  const defaultHub = el(
    "select",
    { id: id("default-hub"), class: "hospital-default-hub" },
    el("option", { value: "", text: t("admin.hospitals.no_default_hub") }),
    hubs.filter((hub) => hub.id !== h.id).map((hub) => el("option", { value: hub.id, text: hub.name })),
  );
  defaultHub.value = h.default_hub_id || "";
  const zone = el("input", { id: id("time-zone"), class: "hospital-time-zone", value: h.time_zone, required: true });
  const language = el(
    "select",
    { id: id("language"), class: "hospital-language" },
    el("option", { value: "ja", text: t("admin.language.ja") }),
    el("option", { value: "en", text: t("admin.language.en") }),
  );
  language.value = h.language;
  const quotaText = gibText(h.upload_quota_bytes);
  const quota = el("input", {
    id: id("quota"),
    class: "hospital-quota",
    type: "number",
    min: "0",
    step: "0.01",
    value: quotaText,
    placeholder: t("admin.hospitals.quota_none"),
  });

  const ai = toggle(id("ai"), h.ai_after_first_read, t("admin.hospitals.ai_after_first_read"));
  const shareLabel = toggle(id("share-label"), h.share_label_with_hub, t("admin.hospitals.share_label"));
  const sharePatient = toggle(id("share-patient"), h.share_patient_id_with_hub, t("admin.hospitals.share_patient_id"));
  const email = toggle(id("email"), h.email_notifications, t("admin.hospitals.email"));
  const requireFactor = toggle(id("require-2fa"), h.require_second_factor, t("admin.hospitals.require_second_factor"));
  const signoutFactor = toggle(id("signout-2fa"), h.signout_second_factor, t("admin.hospitals.signout_second_factor"));
  const checked = (label) => label.querySelector("input").checked;

  const form = el(
    "form",
    { class: "panel admin-form hospital-form", dataset: { hospital: h.id } },
    el("h3", { text: h.name }),
    el("p", { class: "muted", text: t(`admin.hospitals.kind.${h.kind}`) }),
    el(
      "fieldset",
      {},
      el("legend", { text: t("admin.hospitals.consultation") }),
      isHub ? ai : field(defaultHub, t("admin.hospitals.default_hub")),
      shareLabel,
      sharePatient,
    ),
    el(
      "fieldset",
      {},
      el("legend", { text: t("admin.hospitals.locale") }),
      el("div", { class: "form-grid" }, field(zone, t("admin.hospitals.time_zone")), field(language, t("admin.hospitals.language"))),
      email,
    ),
    el(
      "fieldset",
      {},
      el("legend", { text: t("admin.hospitals.second_factor") }),
      requireFactor,
      signoutFactor,
      h.admins_need_second_factor ? el("p", { class: "muted", text: t("admin.hospitals.admins_always") }) : null,
    ),
    el(
      "fieldset",
      {},
      el("legend", { text: t("admin.hospitals.uploads") }),
      el("p", { class: "hospital-usage", text: usageText(h) }),
      isPlatformAdmin ? field(quota, t("admin.hospitals.quota_gib")) : null,
    ),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "button hospital-save", text: t("admin.save") })),
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const change = {};
    if (isHub) {
      if (checked(ai) !== h.ai_after_first_read) change.ai_after_first_read = checked(ai);
    } else if (defaultHub.value !== (h.default_hub_id || "")) {
      change.default_hub_id = defaultHub.value || null;
    }
    if (checked(shareLabel) !== h.share_label_with_hub) change.share_label_with_hub = checked(shareLabel);
    if (checked(sharePatient) !== h.share_patient_id_with_hub) change.share_patient_id_with_hub = checked(sharePatient);
    if (zone.value.trim() !== h.time_zone) change.time_zone = zone.value.trim();
    if (language.value !== h.language) change.language = language.value;
    if (checked(email) !== h.email_notifications) change.email_notifications = checked(email);
    if (checked(requireFactor) !== h.require_second_factor) change.require_second_factor = checked(requireFactor);
    if (checked(signoutFactor) !== h.signout_second_factor) change.signout_second_factor = checked(signoutFactor);
    if (isPlatformAdmin && quota.value.trim() !== quotaText) {
      const text = quota.value.trim();
      const gib = Number(text);
      if (text && !(Number.isFinite(gib) && gib >= 0)) {
        showError(t("admin.hospitals.quota_invalid"));
        return;
      }
      change.upload_quota_bytes = text ? Math.round(gib * GIB) : null;
    }
    const save = form.querySelector(".hospital-save");
    act(save, async () => {
      if (!Object.keys(change).length) {
        say(t("admin.nothing_changed"));
        return;
      }
      const saved = await api(`${ADMIN_API}/hospitals/${encodeURIComponent(h.id)}`, { method: "PUT", json: change });
      hospitals = hospitals.map((x) => (x.id === saved.id ? saved : x));
      form.replaceWith(hospitalForm(saved));
      say(t("admin.hospitals.saved", { name: saved.name }));
    });
  });
  return form;
}

async function loadHospitals() {
  const answer = await api(`${ADMIN_API}/hospitals`);
  hospitals = answer.hospitals;
  hubs = answer.hubs;
  document.getElementById("hospital-list").replaceChildren(...hospitals.map(hospitalForm));
  const choice = document.getElementById("new-hospital");
  choice.replaceChildren(...hospitals.map((h) => el("option", { value: h.id, text: h.name })));
  choice.value = me.hospital.id;
}

// ---- Users ---------------------------------------------------------------------------------

function givableRoles() {
  return isPlatformAdmin ? [...HOSPITAL_ROLES, ...BEYOND_HOSPITAL] : HOSPITAL_ROLES;
}

function roleOptions(current) {
  const roles = givableRoles().includes(current) ? givableRoles() : [...givableRoles(), current];
  return roles.map((role) => el("option", { value: role, text: roleName(role) }));
}

/** Asks for the new password of `username`; resolves to it, or null if cancelled. */
function askPassword(username) {
  return new Promise((resolve) => {
    const input = el("input", { type: "password", id: "reset-password-input", autocomplete: "new-password", required: true });
    const dialog = el(
      "dialog",
      { id: "reset-password-dialog", class: "panel narrow-form", "aria-labelledby": "reset-password-title" },
      el(
        "form",
        { method: "dialog" },
        el("h3", { id: "reset-password-title", text: t("admin.users.password_dialog.title", { user: username }) }),
        el("p", { class: "muted", text: t("admin.users.password_dialog.intro") }),
        field(input, t("admin.users.password_dialog.label")),
        el(
          "div",
          { class: "actions" },
          el("button", { type: "submit", class: "button", id: "reset-password-confirm", value: "set", text: t("admin.users.password_dialog.confirm") }),
          el("button", { type: "button", class: "button button-quiet", id: "reset-password-cancel", text: t("common.cancel"), onclick: () => dialog.close("") }),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      const password = input.value;
      dialog.remove();
      resolve(dialog.returnValue === "set" && password ? password : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

function userPath(u, tail = "") {
  return `${ADMIN_API}/users/${encodeURIComponent(u.username)}${tail}`;
}

async function afterUserChange(message) {
  await load("users", true);
  say(message);
}

function userRow(u) {
  const self = u.username === me.username;
  // A hospital's admin leaves accounts that reach beyond the hospital to the platform admin.
  const manageable = isPlatformAdmin || !BEYOND_HOSPITAL.includes(u.role);
  const roleSelect = el("select", { class: "user-role", "aria-label": t("admin.users.role_of", { user: u.username }), disabled: self || !manageable }, roleOptions(u.role));
  roleSelect.value = u.role;
  const roleSave = button("user-role-save", t("admin.users.change_role"), (event) =>
    act(event.currentTarget, async () => {
      if (roleSelect.value === u.role) return;
      await api(userPath(u), { method: "PUT", json: { role: roleSelect.value } });
      await afterUserChange(t("admin.users.role_changed", { user: u.username, role: roleName(roleSelect.value) }));
    }),
  { disabled: self || !manageable });

  const actions = [];
  if (u.disabled) {
    actions.push(
      button("user-enable", t("admin.users.enable"), (event) =>
        act(event.currentTarget, async () => {
          await api(userPath(u), { method: "PUT", json: { disabled: false } });
          await afterUserChange(t("admin.users.enabled", { user: u.username }));
        }),
      { disabled: !manageable }),
    );
  } else {
    actions.push(
      button("user-disable", t("admin.users.disable"), (event) =>
        act(event.currentTarget, async () => {
          if (!window.confirm(t("admin.users.disable_confirm", { user: u.username }))) return;
          await api(userPath(u), { method: "PUT", json: { disabled: true } });
          await afterUserChange(t("admin.users.disabled", { user: u.username }));
        }),
      { disabled: self || !manageable, danger: true }),
    );
  }
  actions.push(
    button("user-password", t("admin.users.reset_password"), (event) =>
      act(event.currentTarget, async () => {
        const password = await askPassword(u.username);
        if (!password) return;
        const ended = await api(userPath(u, "/password"), { method: "POST", json: { password } });
        await afterUserChange(t("admin.users.password_reset", { user: u.username, sessions: ended.sessions_ended, tokens: ended.tokens_revoked }));
      }),
    { disabled: self || !manageable }),
  );
  if (u.second_factor) {
    actions.push(
      button("user-second-factor", t("admin.users.reset_second_factor"), (event) =>
        act(event.currentTarget, async () => {
          if (!window.confirm(t("admin.users.reset_second_factor_confirm", { user: u.username }))) return;
          await api(userPath(u, "/reset-second-factor"), { method: "POST" });
          await afterUserChange(t("admin.users.second_factor_reset", { user: u.username }));
        }),
      { disabled: self || !manageable }),
    );
  }
  if (u.locked_for_s) {
    actions.push(
      button("user-unlock", t("admin.users.unlock"), (event) =>
        act(event.currentTarget, async () => {
          await api(userPath(u, "/unlock"), { method: "POST" });
          await afterUserChange(t("admin.users.unlocked", { user: u.username }));
        }),
      ),
    );
  }
  return el(
    "tr",
    { dataset: { username: u.username } },
    el("td", {}, el("span", { class: "user-login", text: u.username }), u.display_name ? el("div", { class: "muted", text: u.display_name }) : null),
    el("td", { text: u.hospital_name }),
    el("td", { class: "user-role-cell" }, roleSelect, roleSave),
    el("td", { class: "user-state", text: u.disabled ? t("admin.users.state.disabled") : t("admin.users.state.active") }),
    el("td", { class: "user-second-factor-state", text: u.second_factor ? t("admin.users.second_factor.on") : t("admin.users.second_factor.off") }),
    el("td", { class: "user-lock", text: u.locked_for_s ? t("admin.users.locked", { minutes: Math.ceil(u.locked_for_s / 60) }) : "—" }),
    el("td", { class: "row-actions" }, actions),
  );
}

async function loadUsers() {
  const { users } = await api(`${ADMIN_API}/users`);
  const headings = [
    t("admin.users.col.user"),
    t("admin.users.col.hospital"),
    t("admin.users.col.role"),
    t("admin.users.col.state"),
    t("admin.users.col.second_factor"),
    t("admin.users.col.lock"),
    t("admin.users.col.actions"),
  ];
  document.getElementById("user-list").replaceChildren(table("users-table", headings, users.map(userRow)));
}

function setUpUserForm() {
  const role = document.getElementById("new-role");
  role.replaceChildren(...givableRoles().map((r) => el("option", { value: r, text: roleName(r) })));
  role.value = "pathologist";
  document.getElementById("new-hospital-field").hidden = !isPlatformAdmin;
  const form = document.getElementById("user-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const username = document.getElementById("new-username").value.trim();
    const body = {
      username,
      role: role.value,
      password: document.getElementById("new-password").value,
    };
    if (isPlatformAdmin) body.hospital_id = document.getElementById("new-hospital").value;
    act(document.getElementById("user-create"), async () => {
      const created = await api(`${ADMIN_API}/users`, { method: "POST", json: body });
      form.reset();
      role.value = "pathologist";
      if (isPlatformAdmin) document.getElementById("new-hospital").value = me.hospital.id;
      await afterUserChange(t("admin.users.created", { user: created.username, role: roleName(created.role), hospital: created.hospital_name }));
    });
  });
}

// ---- API tokens ----------------------------------------------------------------------------

function tokenRow(token) {
  const revoke =
    token.state === "active"
      ? button("token-revoke", t("admin.tokens.revoke"), (event) =>
          act(event.currentTarget, async () => {
            if (!window.confirm(t("admin.tokens.revoke_confirm", { name: token.name, user: token.username }))) return;
            await api(`${ADMIN_API}/tokens/${encodeURIComponent(token.id)}`, { method: "DELETE" });
            await load("tokens", true);
            say(t("admin.tokens.revoked", { name: token.name, user: token.username }));
          }),
        { danger: true })
      : null;
  return el(
    "tr",
    { dataset: { tokenId: token.id } },
    el("td", { text: token.username }),
    el("td", { text: token.hospital_name }),
    el("td", { class: "token-name", text: token.name }),
    el("td", { text: formatDateTime(token.created_at) }),
    el("td", { text: token.expires_at ? formatDateTime(token.expires_at) : t("admin.tokens.no_expiry") }),
    el("td", { class: "token-state", text: t(`admin.tokens.state.${token.state}`) }),
    el("td", { class: "row-actions" }, revoke),
  );
}

async function loadTokens() {
  const { tokens } = await api(`${ADMIN_API}/tokens`);
  const host = document.getElementById("token-list");
  if (!tokens.length) {
    host.replaceChildren(el("p", { class: "muted", id: "no-tokens", text: t("admin.tokens.empty") }));
    return;
  }
  const headings = [
    t("admin.tokens.col.user"),
    t("admin.tokens.col.hospital"),
    t("admin.tokens.col.name"),
    t("admin.tokens.col.created"),
    t("admin.tokens.col.expires"),
    t("admin.tokens.col.state"),
    t("admin.tokens.col.actions"),
  ];
  host.replaceChildren(table("tokens-table", headings, tokens.map(tokenRow)));
}

// ---- Failed jobs ---------------------------------------------------------------------------

function kindName(kind) {
  return hasText(`admin.jobs.kind.${kind}`) ? t(`admin.jobs.kind.${kind}`) : kind;
}

function jobRow(job) {
  const subject = Object.entries(job.payload || {})
    .map(([key, value]) => `${key}: ${value}`)
    .join(", ");
  return el(
    "tr",
    { dataset: { jobId: job.id } },
    el("td", {}, el("span", { text: kindName(job.kind) }), subject ? el("div", { class: "muted", text: subject }) : null),
    el("td", { text: job.created_by || t("admin.jobs.by_platform") }),
    el("td", { class: "num", text: `${job.attempts} / ${job.max_attempts}` }),
    // The server's own words, as the worker wrote them.
    el("td", { class: "job-error", lang: "en", text: job.last_error || "—" }),
    el("td", { text: formatDateTime(job.finished_at) }),
    el(
      "td",
      { class: "row-actions" },
      button("job-retry", t("admin.jobs.retry"), (event) =>
        act(event.currentTarget, async () => {
          await api(`${ADMIN_API}/jobs/${encodeURIComponent(job.id)}/retry`, { method: "POST" });
          await load("jobs", true);
          say(t("admin.jobs.retried", { kind: kindName(job.kind) }));
        }),
      ),
    ),
  );
}

async function loadJobs() {
  const { jobs } = await api(`${ADMIN_API}/jobs?state=failed`);
  const host = document.getElementById("job-list");
  if (!jobs.length) {
    host.replaceChildren(el("p", { class: "muted", id: "no-jobs", text: t("admin.jobs.empty") }));
    return;
  }
  const headings = [
    t("admin.jobs.col.kind"),
    t("admin.jobs.col.requested_by"),
    t("admin.jobs.col.attempts"),
    t("admin.jobs.col.error"),
    t("admin.jobs.col.failed_at"),
    t("admin.jobs.col.actions"),
  ];
  host.replaceChildren(table("jobs-table", headings, jobs.map(jobRow)));
}

// ---- Audit log -----------------------------------------------------------------------------

/** The hospital's zone, or UTC if the browser does not know it. */
function knownZone() {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: timeZone() });
    return timeZone();
  } catch {
    return "UTC";
  }
}

/**
 * Unix seconds of the midnight that starts the day `value` (YYYY-MM-DD, from a date input)
 * `plusDays` later on the hospital's clock; null when no date is given.
 */
function zonedMidnight(value, plusDays = 0) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  if (!match) return null;
  const [year, month, day] = match.slice(1).map(Number);
  const wall = Date.UTC(year, month - 1, day + plusDays);
  const clock = new Intl.DateTimeFormat("en-US", {
    timeZone: knownZone(),
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  });
  // The zone's offset at a moment: its clock then, read as if UTC, less the moment.
  const offsetAt = (ms) => {
    const parts = clock.formatToParts(new Date(ms));
    const part = (type) => Number((parts.find((p) => p.type === type) || {}).value);
    return Date.UTC(part("year"), part("month") - 1, part("day"), part("hour"), part("minute"), part("second")) - ms;
  };
  // Twice: across a change of offset, the first guess lands on the other side of it.
  let moment = wall - offsetAt(wall);
  moment = wall - offsetAt(moment);
  return Math.floor(moment / 1000);
}

/**
 * The search's filters (the JSON body of a search or CSV export), or null (and a message) when
 * they make no sense. They go in a POST body, never the URL: a patient's id must not be kept by
 * proxies and server logs.
 */
function auditFilters() {
  const filters = {};
  const text = (id) => document.getElementById(id).value.trim();
  for (const [name, id] of [
    ["actor", "audit-actor"],
    ["patient_id", "audit-patient"],
    ["slide", "audit-slide"],
    ["case", "audit-case"],
    ["action", "audit-action"],
    ["outcome", "audit-outcome"],
  ]) {
    if (text(id)) filters[name] = text(id);
  }
  const from = zonedMidnight(text("audit-from"));
  // The whole of the last day: up to the second before the next midnight.
  const nextDay = zonedMidnight(text("audit-to"), 1);
  if (from !== null && nextDay !== null && from >= nextDay) {
    showError(t("admin.audit.bad_range"));
    return null;
  }
  if (from !== null) filters.from = from;
  if (nextDay !== null) filters.to = nextDay - 1;
  return filters;
}

function outcomeText(outcome) {
  return hasText(`admin.outcome.${outcome}`) ? t(`admin.outcome.${outcome}`) : outcome;
}

function auditRow(row) {
  return el(
    "tr",
    { dataset: { seq: row.seq }, class: `outcome-${row.outcome}` },
    el("td", { class: "num", text: formatDateTime(row.at) }),
    el("td", { class: "audit-actor", text: row.actor }),
    el("td", { class: "audit-action", text: row.action }),
    el("td", { class: "audit-target", text: row.target }),
    el("td", { class: "audit-outcome", text: outcomeText(row.outcome) }),
    el("td", { text: row.address || "—" }),
    // Details are written by the server in English.
    el("td", { class: "audit-detail", lang: "en", text: row.detail || "" }),
  );
}

function auditTable(id, rows) {
  const headings = [
    t("admin.audit.col.time"),
    t("admin.audit.col.user"),
    t("admin.audit.col.action"),
    t("admin.audit.col.target"),
    t("admin.audit.col.outcome"),
    t("admin.audit.col.address"),
    t("admin.audit.col.detail"),
  ];
  return table(id, headings, rows.map(auditRow));
}

let auditQuery = null;
let nextBefore = null;
let shownRows = [];

async function searchAudit(more) {
  if (!more) {
    auditQuery = auditFilters();
    if (!auditQuery) return;
    nextBefore = null;
    shownRows = [];
  }
  const body = { ...auditQuery, limit: AUDIT_PAGE };
  if (more && nextBefore !== null) body.before = nextBefore;
  const answer = await api(`${ADMIN_API}/audit/search`, { method: "POST", json: body });
  shownRows = [...shownRows, ...answer.rows];
  nextBefore = answer.next_before ?? null;
  const count = document.getElementById("audit-count");
  count.textContent = t("admin.audit.count", { n: shownRows.length });
  count.hidden = false;
  const results = document.getElementById("audit-results");
  results.replaceChildren(shownRows.length ? auditTable("audit-table", shownRows) : el("p", { class: "muted", text: t("admin.audit.none") }));
  // What the rows shown answer, for whoever checks the page (a test waiting for a new search).
  results.dataset.query = new URLSearchParams(Object.entries(auditQuery).map(([name, value]) => [name, String(value)])).toString();
  document.getElementById("audit-more").hidden = nextBefore === null;
}

/** Downloads the CSV of the last search (before any, of the form's filters), asked for by POST. */
async function downloadAuditCsv() {
  const filters = auditQuery || auditFilters();
  if (!filters) return;
  const headers = { Accept: "text/csv", "Content-Type": "application/json" };
  const token = getCsrfToken();
  if (token) headers["X-CSRF-Token"] = token;
  let response;
  try {
    response = await fetch(`${ADMIN_API}/audit.csv`, {
      method: "POST",
      headers,
      credentials: "same-origin",
      body: JSON.stringify(filters),
    });
  } catch {
    throw new ApiError(0, "network", t("errors.network"));
  }
  if (!response.ok) {
    // As api() does: an ended session goes back to the sign-in page.
    if (response.status === 401) redirectToLogin();
    throw await errorFromResponse(response);
  }
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "audit.csv";
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // The browser reads the URL after the click returns: revoked a while later.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function listText(items) {
  return items.map((item) => (typeof item === "string" ? item : item.id || JSON.stringify(item))).join(", ");
}

async function patientReport() {
  const typed = document.getElementById("audit-report-patient").value.trim();
  if (!typed) return;
  // POST, not GET: the patient's id stays out of the URL, which proxies and logs keep.
  const report = await api(`${ADMIN_API}/audit/patient`, { method: "POST", json: { patient_id: typed } });
  const slides = report.slides || [];
  const cases = report.cases || [];
  const accesses = report.accesses || [];
  document.getElementById("audit-report").replaceChildren(
    el("p", { id: "audit-report-summary", text: t("admin.audit.report_summary", { patient: report.patient_id, cases: cases.length, slides: slides.length, accesses: accesses.length }) }),
    cases.length ? el("p", { class: "muted", text: t("admin.audit.report_cases", { ids: listText(cases) }) }) : null,
    slides.length ? el("p", { class: "muted", text: t("admin.audit.report_slides", { ids: listText(slides) }) }) : null,
    accesses.length ? auditTable("audit-report-table", accesses) : el("p", { class: "muted", text: t("admin.audit.report_none") }),
    report.truncated ? el("p", { class: "muted", text: t("admin.audit.report_truncated") }) : null,
  );
}

async function verifyChain() {
  const result = await api(`${ADMIN_API}/audit/verify`);
  const line = document.getElementById("audit-verify-result");
  line.dataset.intact = String(Boolean(result.intact));
  line.className = result.intact ? "notice" : "alert";
  line.textContent = result.intact
    ? t("admin.audit.verify_intact", { rows: result.rows, checkpoints: result.checkpoints })
    : t("admin.audit.verify_broken", {
        seq: result.problem ? result.problem.seq : "—",
        reason: result.problem ? result.problem.reason : "—",
      });
  line.hidden = false;
}

function setUpAudit() {
  document.getElementById("audit-zone").textContent = t("admin.audit.zone", { zone: knownZone() });
  document.getElementById("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(document.getElementById("audit-search"), () => searchAudit(false));
  });
  document.getElementById("audit-more").addEventListener("click", (event) => act(event.currentTarget, () => searchAudit(true)));
  document.getElementById("audit-csv").addEventListener("click", (event) => act(event.currentTarget, downloadAuditCsv));
  document.getElementById("audit-report-form").addEventListener("submit", (event) => {
    event.preventDefault();
    act(document.getElementById("audit-report-run"), patientReport);
  });
  document.getElementById("audit-verify").addEventListener("click", (event) => act(event.currentTarget, verifyChain));
}

// ---- Start ---------------------------------------------------------------------------------

async function main() {
  const session = await requireSession({ active: "admin", areas: ["admin"] });
  if (!session) return;
  me = session.user;
  if (me.role !== "admin" && me.role !== "platform-admin") {
    showError(t("admin.only_admins"));
    return;
  }
  isPlatformAdmin = me.role === "platform-admin";
  document.getElementById("admin-scope").textContent = isPlatformAdmin
    ? t("admin.scope.platform")
    : t("admin.scope.hospital", { hospital: me.hospital.name });
  document.getElementById("jobs-intro").textContent = isPlatformAdmin ? t("admin.jobs.intro_platform") : t("admin.jobs.intro_hospital");
  consoleHost.hidden = false;
  setUpUserForm();
  setUpAudit();
  for (const tab of TABS) {
    document.getElementById(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  }
  // The user form's hospital choice comes with the hospitals.
  await load("hospitals");
  const wanted = window.location.hash.slice(1);
  await showTab(TABS.includes(wanted) ? wanted : "hospitals");
}

main();
