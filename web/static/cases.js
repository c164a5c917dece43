// Case list: the spoke's own cases (with a "new report" marker) and, for hub
// staff, the worklist of cases sent to their hub: search, filters, urgent
// cases first, how long each has waited, and the final diagnosis once signed
// out. The list refreshes itself while the tab is visible. Spoke staff create
// drafts here.
import { BACKGROUND_HEADERS, api, el, errorText, formatDateTime, formatWaiting, lang, requireSession, showError, t } from "/static/app.js";

const STATUSES = ["draft", "submitted", "assigned", "diagnosed", "in_double_check", "adjudication", "ready_for_sign_out", "signed_out", "cancelled"];
const AGE_BANDS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+", "unknown"];
const SEXES = ["female", "male", "other", "unknown"];
const URGENCIES = ["routine", "urgent"];
const VIEWS = ["open", "signed_out", "all"];
const REFRESH_MS = 30_000;
// Typing a search waits this long for the next key before asking the server.
const SEARCH_DELAY_MS = 300;

const $ = (id) => document.getElementById(id);
const listEl = $("case-list");
const loadingEl = $("cases-loading");
const form = $("new-case-form");

let session = null;
// Organ code → { code, ja, en }, for labels in the user's language.
const organs = new Map();
let organsError = null;
let hubsLoaded = false;
let loadSeq = 0;
let lastLoadedAt = 0;
let refreshTimer = null;
let searchTimer = null;
// Whether the banner shows a failure of the list (cleared by the next good load) rather
// than one of the form (which a refresh must not clear).
let listErrorShown = false;

const statusText = (status) => (STATUSES.includes(status) ? t(`cases.status.${status}`) : status);
const ageText = (band) => (AGE_BANDS.includes(band) ? t(`cases.age.${band}`) : band);
const sexText = (sex) => (SEXES.includes(sex) ? t(`cases.sex.${sex}`) : sex);
const urgencyText = (urgency) => (URGENCIES.includes(urgency) ? t(`cases.urgency.${urgency}`) : urgency);

function organText(code) {
  const organ = organs.get(code);
  return organ ? organ[lang()] || organ.en || code : code;
}

function fillSelect(select, values, label) {
  for (const value of values) select.append(el("option", { value, text: label(value) }));
}

function isHubPathologist() {
  return session.user.hospital.kind === "hub" && session.user.role === "pathologist";
}

function isSpokeUser() {
  return session.user.hospital.kind === "spoke";
}

/** hh:mm on the hospital's clock. */
function clockTime(ms) {
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  const locale = lang() === "ja" ? "ja-JP" : "en-GB";
  try {
    return new Intl.DateTimeFormat(locale, { ...options, timeZone: session.user.hospital.time_zone }).format(ms);
  } catch {
    // An unknown zone name: the browser's clock rather than no time at all.
    return new Intl.DateTimeFormat(locale, options).format(ms);
  }
}

// ---- Filters ----------------------------------------------------------------

function currentView() {
  const checked = document.querySelector('#f-view input[name="view"]:checked');
  return checked && VIEWS.includes(checked.value) ? checked.value : "open";
}

function readFilters() {
  const older = Number.parseInt($("f-age").value, 10);
  return {
    q: $("f-q").value.trim(),
    view: currentView(),
    mine: isHubPathologist() && $("f-mine").checked,
    status: $("f-status").value,
    urgency: $("f-urgency").value,
    organ: $("f-organ").value,
    older: Number.isFinite(older) && older > 0 ? String(older) : "",
  };
}

/** The API's query for the filters. */
function apiQuery(filters) {
  const query = new URLSearchParams();
  if (filters.q) query.set("q", filters.q);
  if (filters.view === "open") query.set("open", "1");
  else if (filters.view === "signed_out") query.set("status", "signed_out");
  else if (filters.status) query.set("status", filters.status);
  if (filters.mine) query.set("mine", "1");
  if (filters.urgency) query.set("urgency", filters.urgency);
  if (filters.organ) query.set("organ", filters.organ);
  if (filters.older) query.set("older_than_hours", filters.older);
  return query;
}

/** Keeps the filters in the page's address, so a reload or a shared link shows the same list. */
function writeAddress(filters) {
  const query = new URLSearchParams();
  if (filters.view !== "open") query.set("view", filters.view);
  // The search text stays out of the address: it may be a patient's id, which would then sit
  // in the browser's history and in any link copied from the page.
  if (filters.mine) query.set("mine", "1");
  if (filters.view === "all" && filters.status) query.set("status", filters.status);
  for (const key of ["urgency", "organ", "older"]) {
    if (filters[key]) query.set(key, filters[key]);
  }
  const search = query.toString();
  const wanted = search ? `${window.location.pathname}?${search}` : window.location.pathname;
  if (wanted !== window.location.pathname + window.location.search) window.history.replaceState(null, "", wanted);
}

/** Sets the filters from the page's address (see `writeAddress`). */
function readAddress() {
  const params = new URLSearchParams(window.location.search);
  const view = VIEWS.includes(params.get("view")) ? params.get("view") : "open";
  for (const radio of document.querySelectorAll('#f-view input[name="view"]')) radio.checked = radio.value === view;
  $("f-mine").checked = params.get("mine") === "1";
  if (STATUSES.includes(params.get("status"))) $("f-status").value = params.get("status");
  if (URGENCIES.includes(params.get("urgency"))) $("f-urgency").value = params.get("urgency");
  const older = Number.parseInt(params.get("older") || "", 10);
  if (Number.isFinite(older) && older > 0) $("f-age").value = String(older);
  // The organ list arrives later; its select takes the value then (see `loadOrgans`).
  return params.get("organ") || "";
}

function showViewControls() {
  // A status filter only makes sense over every case; the other views fix the status.
  $("f-status-label").hidden = currentView() !== "all";
}

// ---- The list ---------------------------------------------------------------

function timeCell(unix) {
  if (!unix) return el("td", { class: "num", text: "—" });
  return el("td", { class: "num" }, el("time", { datetime: new Date(unix * 1000).toISOString(), text: formatDateTime(unix) }));
}

function caseRow(item, columns) {
  const ours = item.spoke_id === session.user.hospital.id;
  const closed = item.status === "signed_out" || item.status === "cancelled";
  const classes = ["case-row"];
  // Urgency orders the open work; a closed case keeps only its badge.
  if (item.urgency === "urgent" && !closed) classes.push("urgent");
  if (item.assigned_to_me) classes.push("mine");
  const cells = [
    el("td", {}, el("a", { href: `/case?id=${encodeURIComponent(item.id)}`, class: "case-link", text: item.id.slice(0, 8) })),
    el(
      "td",
      {},
      el("span", { class: `status status-${item.status}`, text: statusText(item.status) }),
      item.new_report ? el("span", { class: "badge-new", text: t("cases.new_report") }) : null,
    ),
    el(
      "td",
      {},
      item.urgency === "urgent"
        ? el("span", { class: "badge-urgent", text: urgencyText(item.urgency) })
        : el("span", { class: "muted", text: urgencyText(item.urgency) }),
    ),
  ];
  if (columns.patient) cells.push(el("td", { class: "patient-id", text: item.patient_id || "—" }));
  cells.push(
    el("td", {}, el("span", { class: "age-sex" }, el("span", { text: ageText(item.age_band) }), el("span", { text: sexText(item.sex) }))),
    el("td", { text: organText(item.organ) }),
    el("td", { class: "specimen", text: item.specimen }),
    el("td", {
      text: ours
        ? t("cases.route.to", { hub: item.hub_name || t("cases.route.default_hub") })
        : t("cases.route.from", { spoke: item.spoke_name }),
    }),
    el(
      "td",
      {},
      item.assignee_name || "—",
      item.assigned_to_me ? el("span", { class: "badge-mine", title: t("cases.assigned_to_me"), text: t("cases.mine_badge") }) : null,
    ),
    timeCell(item.submitted_at || item.created_at),
    el("td", {
      class: "num waiting",
      title: item.waiting_seconds === null || item.waiting_seconds === undefined ? null : t(closed ? "cases.waiting_closed" : "cases.waiting_open"),
      text: formatWaiting(item.waiting_seconds),
    }),
  );
  if (columns.diagnosis) {
    const diagnosis = item.final_diagnosis;
    cells.push(
      diagnosis
        ? el("td", { class: "diagnosis", title: diagnosis.code, text: lang() === "ja" ? diagnosis.label_ja : diagnosis.label })
        : el("td", { class: "diagnosis muted", text: "—" }),
    );
  }
  return el("tr", { class: classes.join(" "), dataset: { caseId: item.id } }, cells);
}

function render(cases, filters) {
  // A refresh must not take the keyboard away from the row the user is on.
  const active = document.activeElement;
  const focusedRow = active && listEl.contains(active) ? active.closest("tr[data-case-id]") : null;
  const focusedId = focusedRow ? focusedRow.dataset.caseId : null;

  if (!cases.length) {
    listEl.replaceChildren(el("div", { class: "empty-state", id: "no-cases" }, el("p", { text: t("cases.empty") })));
    return;
  }
  const columns = {
    // The spoke's staff see their own patients' ids; a hub never gets them in the list.
    patient: cases.some((item) => item.patient_id !== undefined && item.patient_id !== null),
    diagnosis: filters.view !== "open" || cases.some((item) => item.final_diagnosis),
  };
  const heads = ["case", "status", "urgency"];
  if (columns.patient) heads.push("patient");
  heads.push("age_sex", "organ", "specimen", "route", "assignee", "submitted", "waiting");
  if (columns.diagnosis) heads.push("diagnosis");
  listEl.replaceChildren(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "slide-table case-table worklist-table" },
        el("caption", { class: "visually-hidden", text: t("cases.caption") }),
        el("thead", {}, el("tr", {}, heads.map((key) => el("th", { scope: "col", text: t(`cases.col.${key}`) })))),
        el("tbody", {}, cases.map((item) => caseRow(item, columns))),
      ),
    ),
  );
  if (focusedId) {
    const link = listEl.querySelector(`tr[data-case-id="${CSS.escape(focusedId)}"] a.case-link`);
    if (link) link.focus();
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  // Nobody is looking: the next visibility change loads at once instead.
  if (document.hidden) return;
  refreshTimer = setTimeout(() => load({ background: true }), REFRESH_MS);
}

// `background`: the page's own refresh, not the user's doing, so it does not keep the session
// from ending when idle.
async function load({ background = false } = {}) {
  clearTimeout(searchTimer);
  const seq = ++loadSeq;
  const filters = readFilters();
  writeAddress(filters);
  listEl.setAttribute("aria-busy", "true");
  const options = background ? { headers: BACKGROUND_HEADERS } : {};
  try {
    const requests = [api(`/api/v1/cases?${apiQuery(filters)}`, options)];
    // For the referring hospital a report nobody has opened yet is still open business:
    // its signed-out cases with a new report lead the open list.
    if (filters.view === "open" && isSpokeUser()) {
      requests.push(api(`/api/v1/cases?${apiQuery({ ...filters, view: "signed_out" })}`, options));
    }
    const [open, signed] = await Promise.all(requests);
    // A newer request (the user kept typing) answers for itself.
    if (seq !== loadSeq) return;
    const unread = signed ? (signed.cases || []).filter((item) => item.new_report) : [];
    render([...unread, ...((open && open.cases) || [])], filters);
    lastLoadedAt = Date.now();
    $("cases-updated").textContent = t("cases.updated", { time: clockTime(lastLoadedAt) });
    if (listErrorShown) {
      showError("");
      listErrorShown = false;
    }
  } catch (err) {
    if (seq !== loadSeq) return;
    showError(err);
    listErrorShown = true;
  } finally {
    if (seq === loadSeq) {
      loadingEl.hidden = true;
      listEl.removeAttribute("aria-busy");
      scheduleRefresh();
    }
  }
}

// ---- Choices from the server: organs and hubs ---------------------------------

async function loadOrgans(wantedOrgan) {
  try {
    const answer = await api("/api/v1/organs");
    for (const organ of (answer && answer.organs) || []) organs.set(organ.code, organ);
  } catch (err) {
    organsError = err;
    // Without the list the organ is typed, as the server also accepts.
    $("nc-organ").replaceWith(el("input", { id: "nc-organ", required: true, autocomplete: "off" }));
    return;
  }
  const label = (code) => organText(code);
  fillSelect($("f-organ"), [...organs.keys()], label);
  fillSelect($("nc-organ"), [...organs.keys()], label);
  if (wantedOrgan && organs.has(wantedOrgan)) $("f-organ").value = wantedOrgan;
}

async function loadHubs() {
  if (hubsLoaded) return;
  const select = $("nc-hub");
  const answer = await api("/api/v1/hubs");
  const hubs = (answer && answer.hubs) || [];
  for (const hub of hubs) {
    select.append(el("option", { value: hub.id, text: hub.default ? t("cases.form.hub_default", { name: hub.name }) : hub.name }));
  }
  const preferred = hubs.find((hub) => hub.default);
  if (preferred) select.value = preferred.id;
  select.required = true;
  hubsLoaded = true;
  if (!hubs.length) {
    $("nc-create").disabled = true;
    showError(t("cases.form.no_hubs"));
  }
}

// ---- New case -----------------------------------------------------------------

async function openForm() {
  form.hidden = false;
  $("nc-patient").focus();
  showError("");
  listErrorShown = false;
  if (organsError) showError(t("cases.form.lists_failed", { reason: errorText(organsError) }));
  try {
    await loadHubs();
  } catch (err) {
    showError(t("cases.form.lists_failed", { reason: errorText(err) }));
  }
}

async function createCase(event) {
  event.preventDefault();
  showError("");
  listErrorShown = false;
  // No silent defaults: age band, sex, organ and hub start at "Choose…" and must be chosen
  // ("Unknown" is a choice). The selects are required, so the browser stops the form first;
  // this catches a form sent without its own validation.
  for (const [id, key] of [
    ["nc-age", "cases.form.need_age"],
    ["nc-sex", "cases.form.need_sex"],
    ["nc-organ", "cases.form.need_organ"],
    ["nc-hub", "cases.form.need_hub"],
  ]) {
    // The hub is required once the list of hubs is there; without it the server sends the
    // case to the hospital's default hub.
    if (!$(id).value && $(id).required) {
      showError(t(key));
      $(id).focus();
      return;
    }
  }
  $("nc-create").disabled = true;
  try {
    const created = await api("/api/v1/cases", {
      method: "POST",
      json: {
        patient_id: $("nc-patient").value,
        age_band: $("nc-age").value,
        sex: $("nc-sex").value,
        organ: $("nc-organ").value,
        specimen: $("nc-specimen").value,
        clinical_question: $("nc-question").value,
        urgency: $("nc-urgency").value,
        hub: $("nc-hub").value || null,
      },
    });
    window.location.assign(`/case?id=${encodeURIComponent(created.id)}`);
  } catch (err) {
    showError(err);
  } finally {
    $("nc-create").disabled = false;
  }
}

// ---- Start --------------------------------------------------------------------

async function main() {
  session = await requireSession({ active: "cases", areas: ["cases"] });
  if (!session) return;
  fillSelect($("f-status"), STATUSES, statusText);
  fillSelect($("f-urgency"), URGENCIES, urgencyText);
  fillSelect($("nc-age"), AGE_BANDS, ageText);
  fillSelect($("nc-sex"), SEXES, sexText);
  fillSelect($("nc-urgency"), URGENCIES, urgencyText);
  $("nc-urgency").value = "routine";

  const role = session.user.role;
  // The keys change with the elements, so a later translation pass keeps these texts.
  if (isHubPathologist()) {
    $("cases-title").dataset.i18n = "cases.title_worklist";
    $("cases-title").textContent = t("cases.title_worklist");
    document.querySelector("title").dataset.i18n = "cases.page_title_worklist";
    document.title = t("cases.page_title_worklist");
    $("f-mine-label").hidden = false;
  }
  if (isSpokeUser()) {
    // The spoke's own staff also find cases by their patient's id.
    $("f-q").dataset.i18nPlaceholder = "cases.search.placeholder_spoke";
    $("f-q").placeholder = t("cases.search.placeholder_spoke");
    $("f-q").dataset.i18nTitle = "cases.search.hint_spoke";
    $("f-q").title = t("cases.search.hint_spoke");
  }
  if (role !== "researcher") {
    $("new-case-button").hidden = false;
    $("new-case-button").addEventListener("click", openForm);
  }
  $("nc-cancel").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", createCase);

  const wantedOrgan = readAddress();
  showViewControls();
  const filters = $("filters");
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  filters.addEventListener("change", (event) => {
    // The search box loads as the user types (below); its change event would load twice.
    if (event.target === $("f-q")) return;
    if (event.target.name === "view") showViewControls();
    load();
  });
  $("f-q").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => load(), SEARCH_DELAY_MS);
  });
  $("cases-refresh").addEventListener("click", () => load());
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(refreshTimer);
      refreshTimer = null;
    } else if (Date.now() - lastLoadedAt >= REFRESH_MS) {
      load({ background: true });
    } else {
      scheduleRefresh();
    }
  });

  // The organ labels come first, so the list shows them from its first drawing.
  await loadOrgans(wantedOrgan);
  await load();
}

main();
