// Records a patient's opt-out from research use for the user's own hospital
// (a spoke's submitters and admins), says in English and Japanese what it
// matched (zero matches included: future cases are excluded all the same), and
// lists the hospital's opt-outs. The server removes the patient's research
// data in the background.
import { api, el, formatDate, requireSession, showError } from "/static/app.js";

const RECORDERS = ["submitter", "admin", "platform-admin"];

const form = document.getElementById("opt-out-form");
const patient = document.getElementById("oo-patient");
const submit = document.getElementById("oo-submit");
const result = document.getElementById("opt-out-result");
const resultEn = document.getElementById("oo-result-en");
const resultJa = document.getElementById("oo-result-ja");
const listSection = document.getElementById("opt-out-list-section");
const listEl = document.getElementById("opt-out-list");

function say(en, ja) {
  resultEn.textContent = en || "";
  resultJa.textContent = ja || "";
  result.hidden = !en;
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

/** The sentences for an answer of POST /api/v1/opt-outs. */
function sentences(recorded, typed) {
  const id = recorded.normalised_patient_id;
  const when = formatDate(recorded.recorded_at);
  const cases = recorded.matched_cases;
  const slides = recorded.matched_research_slides;
  const en = [];
  const ja = [];
  if (recorded.newly_recorded) {
    en.push(`Opt-out recorded for ${id} (${when}).`);
    ja.push(`患者ID ${id} のオプトアウトを登録しました（${when}）。`);
  } else {
    en.push(`${id} has been opted out since ${when}; recorded again.`);
    ja.push(`患者ID ${id} は ${when} からオプトアウト済みです（再登録）。`);
  }
  if (typed.trim() !== id) {
    en.push(`The id as typed, “${typed}”, was matched as ${id}.`);
    ja.push(`入力された「${typed}」は ${id} として照合しました。`);
  }
  if (cases === 0) {
    en.push(`No case of this hospital has patient id ${id} yet; future cases will be excluded.`);
    ja.push(`この病院には患者ID ${id} の症例はまだありません。今後の症例は研究利用から除外されます。`);
  } else {
    en.push(
      `It matched ${plural(cases, "case", "cases")} of this hospital; ` +
        `${plural(slides, "research slide", "research slides")} made from them ${slides === 1 ? "is" : "are"} being withdrawn. ` +
        "Future cases will be excluded.",
    );
    ja.push(
      `この病院の症例 ${cases} 件に一致しました。そこから作成された研究用スライド ${slides} 枚を取り下げています。` +
        "今後の症例も研究利用から除外されます。",
    );
  }
  return [en.join(" "), ja.join("")];
}

async function record(event) {
  event.preventDefault();
  showError("");
  say("");
  const typed = patient.value;
  if (!typed.trim()) {
    showError("Enter the patient id used at your hospital. / 貴院の患者IDを入力してください。");
    return;
  }
  submit.disabled = true;
  try {
    // Sent as typed: the server normalises it exactly as it does a case's.
    const recorded = await api("/api/v1/opt-outs", { method: "POST", json: { patient_id: typed } });
    say(...sentences(recorded, typed));
    form.reset();
    await loadList();
  } catch (err) {
    showError(err.message);
  } finally {
    submit.disabled = false;
  }
}

const count = (n) => (n === null || n === undefined ? "—" : String(n));

function entryRow(entry) {
  const id = entry.patient_id
    ? el("td", { text: entry.patient_id })
    : el("td", { class: "muted", title: "recorded before ids were kept with opt-outs", text: `hash ${entry.patient_hash_prefix}…` });
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
  document.getElementById("oo-hospital").textContent = listed.hospital;
  document.getElementById("oo-case-rule").textContent =
    listed.patient_id_case === "insensitive"
      ? "Patient ids at this hospital ignore letter case: ab123 and AB123 are one patient. / 患者IDの大文字・小文字は区別しません。"
      : "Patient ids at this hospital distinguish letter case: ab123 and AB123 are different patients. / 患者IDの大文字・小文字を区別します。";
  listSection.hidden = false;
  if (!listed.opt_outs.length) {
    listEl.replaceChildren(el("div", { class: "empty-state", id: "no-opt-outs" }, el("p", { text: "No opt-outs recorded yet. / 登録はまだありません。" })));
    return;
  }
  const headings = [
    "Patient id · 患者ID",
    "Recorded · 登録日時",
    "By · 登録者",
    "Cases matched · 一致した症例",
    "Research slides matched · 研究用スライド",
    "Cases now · 現在の症例",
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

const session = await requireSession({ active: "opt-out" });
if (session) {
  const user = session.user;
  // The server decides whose patients these are (a spoke, or a hub that refers cases of its
  // own patients); its refusal, if any, is shown as it says it.
  if (RECORDERS.includes(user.role)) {
    form.hidden = false;
    form.addEventListener("submit", record);
    patient.focus();
    loadList().catch((err) => showError(err.message));
  } else {
    showError("Only your hospital's submitters and admins record opt-outs. / オプトアウトを登録できるのは貴院の提出担当者と管理者のみです。");
  }
}
