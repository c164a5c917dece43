// Case list: the spoke's own cases (with a "new report" marker) and, for hub
// staff, the worklist of cases sent to their hub, with filters. Spoke staff
// create drafts here.
import { api, el, formatDate, requireSession, showError, statusBadge } from "/static/app.js";

const STATUSES = ["draft", "submitted", "assigned", "diagnosed", "in_double_check", "adjudication", "ready_for_sign_out", "signed_out", "cancelled"];
const AGE_BANDS = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+", "unknown"];
const SEXES = ["female", "male", "other", "unknown"];

const listEl = document.getElementById("case-list");
const loadingEl = document.getElementById("cases-loading");
const form = document.getElementById("new-case-form");
const $ = (id) => document.getElementById(id);

function fillSelect(select, values) {
  for (const value of values) select.append(el("option", { value, text: value.replaceAll("_", " ") }));
}

function caseRow(item, session) {
  const mine = item.spoke_id === session.user.hospital.id;
  return el(
    "tr",
    { dataset: { caseId: item.id } },
    el("td", {}, el("a", { href: `/case?id=${encodeURIComponent(item.id)}`, class: "case-link", text: item.id.slice(0, 8) })),
    el("td", {}, statusBadge(item.status), item.new_report ? el("span", { class: "badge-new", text: "New report" }) : null),
    el("td", { text: item.urgency }, ),
    el("td", { text: item.organ }),
    el("td", { text: item.specimen }),
    el("td", { text: mine ? `→ ${item.hub_name || "(default hub)"}` : `← ${item.spoke_name}` }),
    el("td", { text: formatDate(item.submitted_at || item.created_at) }),
  );
}

async function load(session) {
  const query = new URLSearchParams();
  for (const [key, id] of [["status", "f-status"], ["urgency", "f-urgency"], ["organ", "f-organ"], ["older_than_hours", "f-age"]]) {
    const value = $(id).value.trim();
    if (value) query.set(key, value);
  }
  try {
    const { cases } = await api(`/api/v1/cases?${query}`);
    loadingEl.hidden = true;
    if (!cases.length) {
      listEl.replaceChildren(el("div", { class: "empty-state", id: "no-cases" }, el("p", { text: "No cases match." })));
      return;
    }
    listEl.replaceChildren(
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "slide-table case-table" },
          el("thead", {}, el("tr", {}, ["Case", "Status", "Urgency", "Organ", "Specimen", "Route", "Date"].map((h) => el("th", { text: h })))),
          el("tbody", {}, cases.map((item) => caseRow(item, session))),
        ),
      ),
    );
  } catch (err) {
    loadingEl.hidden = true;
    showError(err.message);
  }
}

async function createCase(event) {
  event.preventDefault();
  showError("");
  // No silent defaults: age band and sex start at "choose…" and must be chosen ("unknown" is
  // a choice). The selects are required, so the browser stops the form first; this catches
  // a form sent without its own validation.
  for (const [id, what] of [["nc-age", "an age band"], ["nc-sex", "the sex"]]) {
    if (!$(id).value) {
      showError(`Choose ${what} ("unknown" if it is not known).`);
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
        hub: $("nc-hub").value.trim() || null,
      },
    });
    window.location.assign(`/case?id=${encodeURIComponent(created.id)}`);
  } catch (err) {
    showError(err.message);
  } finally {
    $("nc-create").disabled = false;
  }
}

async function main() {
  const session = await requireSession({ active: "cases" });
  if (!session) return;
  fillSelect($("f-status"), STATUSES);
  fillSelect($("nc-age"), AGE_BANDS);
  fillSelect($("nc-sex"), SEXES);
  const role = session.user.role;
  const isHub = session.user.hospital.kind === "hub";
  $("cases-title").textContent = isHub && role === "pathologist" ? "Worklist and cases" : "Cases";
  if (role !== "researcher") {
    $("new-case-button").hidden = false;
    $("new-case-button").addEventListener("click", () => {
      form.hidden = false;
      $("nc-patient").focus();
    });
  }
  $("nc-cancel").addEventListener("click", () => {
    form.hidden = true;
  });
  form.addEventListener("submit", createCase);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    load(session);
  });
  await load(session);
}

main();
