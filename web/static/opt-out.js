// Records a patient's opt-out from research use for the user's own hospital
// (a spoke's submitters and admins), says what it matched (zero matches
// included: future cases are excluded all the same), and lists the hospital's
// opt-outs. The server removes the patient's research data in the background.
import { api, el, formatDate, lang, requireSession, showError, t } from "/static/app.js";

const RECORDERS = ["submitter", "admin", "platform-admin"];

const form = document.getElementById("opt-out-form");
const patient = document.getElementById("oo-patient");
const submit = document.getElementById("oo-submit");
const result = document.getElementById("opt-out-result");
const resultText = document.getElementById("oo-result");
const listSection = document.getElementById("opt-out-list-section");
const listEl = document.getElementById("opt-out-list");

function say(text) {
  resultText.textContent = text || "";
  result.hidden = !text;
}

/** What an answer of POST /api/v1/opt-outs means, in sentences. */
function sentences(recorded, typed) {
  const id = recorded.normalised_patient_id;
  const when = formatDate(recorded.recorded_at);
  const cases = recorded.matched_cases;
  const slides = recorded.matched_research_slides;
  const said = [
    recorded.newly_recorded ? t("opt-out.recorded", { id, when }) : t("opt-out.recorded_again", { id, when }),
  ];
  if (typed.trim() !== id) said.push(t("opt-out.matched_as", { typed, id }));
  if (cases === 0) {
    said.push(t("opt-out.no_cases", { id }));
  } else {
    const matched = cases === 1 ? t("opt-out.cases.one", { n: cases }) : t("opt-out.cases.other", { n: cases });
    said.push(slides === 1 ? t("opt-out.matched.one_slide", { cases: matched }) : t("opt-out.matched.slides", { cases: matched, slides }));
  }
  // Japanese sentences follow one another without a space.
  return said.join(lang() === "ja" ? "" : " ");
}

async function record(event) {
  event.preventDefault();
  showError("");
  say("");
  const typed = patient.value;
  if (!typed.trim()) {
    showError(t("opt-out.enter_id"));
    return;
  }
  submit.disabled = true;
  try {
    // Sent as typed: the server normalises it exactly as it does a case's.
    const recorded = await api("/api/v1/opt-outs", { method: "POST", json: { patient_id: typed } });
    say(sentences(recorded, typed));
    form.reset();
    await loadList();
  } catch (err) {
    showError(err);
  } finally {
    submit.disabled = false;
  }
}

const count = (n) => (n === null || n === undefined ? "—" : String(n));

function entryRow(entry) {
  const id = entry.patient_id
    ? el("td", { text: entry.patient_id })
    : el("td", { class: "muted", title: t("opt-out.hash_title"), text: t("opt-out.hash", { prefix: entry.patient_hash_prefix }) });
  return el(
    "tr",
    {},
    id,
    el("td", { text: formatDate(entry.recorded_at) }),
    el("td", { text: entry.recorded_by }),
    el("td", { class: "num", text: count(entry.matched_cases) }),
    el("td", { class: "num", text: count(entry.matched_research_slides) }),
    el("td", { class: "num", text: count(entry.cases_now) }),
  );
}

async function loadList() {
  const listed = await api("/api/v1/opt-outs");
  document.getElementById("oo-list-title").textContent = t("opt-out.list_title", { hospital: listed.hospital });
  document.getElementById("oo-case-rule").textContent =
    listed.patient_id_case === "insensitive" ? t("opt-out.case_rule.insensitive") : t("opt-out.case_rule.sensitive");
  listSection.hidden = false;
  if (!listed.opt_outs.length) {
    listEl.replaceChildren(el("div", { class: "empty-state", id: "no-opt-outs" }, el("p", { text: t("opt-out.empty") })));
    return;
  }
  const headings = [
    t("opt-out.col.patient_id"),
    t("opt-out.col.recorded"),
    t("opt-out.col.by"),
    t("opt-out.col.cases_matched"),
    t("opt-out.col.slides_matched"),
    t("opt-out.col.cases_now"),
  ];
  listEl.replaceChildren(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "slide-table", id: "opt-out-table" },
        el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
        el("tbody", {}, listed.opt_outs.map(entryRow)),
      ),
    ),
  );
}

const session = await requireSession({ active: "opt-out", areas: ["opt-out"] });
if (session) {
  const user = session.user;
  // The server decides whose patients these are (a spoke, or a hub that refers cases of its
  // own patients); its refusal, if any, is shown as it says it.
  if (RECORDERS.includes(user.role)) {
    form.hidden = false;
    form.addEventListener("submit", record);
    patient.focus();
    loadList().catch((err) => showError(err));
  } else {
    showError(t("opt-out.recorders_only"));
  }
}
