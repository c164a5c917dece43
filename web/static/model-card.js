// A model's card for whoever meets its output (the AI panel links here): the decision-support
// notice, intended use, what it was trained on, its test metrics with intervals, ROC curve,
// where it is deployed and why (when its metrics do not show it beats chance), limitations,
// and how often it has agreed with the pathologists' final diagnoses.
import { api, el, requireSession, showError } from "/static/app.js";

const interval = (i) => (i ? `${i.value.toFixed(3)} (95 % CI ${i.low.toFixed(3)}–${i.high.toFixed(3)})` : "n/a");
const share = (x) => (x === null || x === undefined ? "n/a" : `${(x * 100).toFixed(0)} %`);

// Balanced accuracy of the positive class against the rest when a model cannot discriminate.
const CHANCE = 0.5;

/** Where a version is deployed, with the reason given for each deployment that has one. */
export function deploymentText(deployments) {
  const where = deployments.map((d) => `${d.organ} / ${d.taxonomy}${d.reason ? ` (reason given: ${d.reason})` : ""}`);
  return `Deployed for ${where.join(", ")}.`;
}

/** A warning when the test balanced accuracy does not show the model beats chance, else null. */
export function chanceWarning(ba) {
  if (ba && ba.value > CHANCE && ba.low > CHANCE) return null;
  const figures = ba ? `${interval(ba)}` : "not measured";
  return el("p", { class: "alert", id: "card-chance", text: `Not shown to do better than chance: test balanced accuracy ${figures}, chance ${CHANCE}.` });
}

/** The concordance section, shared with the registry page. */
export function concordanceSection(c) {
  if (!c.slides) {
    return el("p", { id: "card-concordance", class: "muted", text: "No signed-out slide has an AI result from this version yet." });
  }
  return el(
    "dl",
    { class: "facts", id: "card-concordance" },
    [
      ["Signed-out slides", `${c.slides} (${c.comparable} with a diagnosis the model can name)`],
      ["Agreement", c.agreement ? `${interval(c.agreement)} — ${c.agreements} of ${c.comparable}` : "n/a"],
      ["Discordant", `${c.discordant} (flagged for review in later dataset versions)`],
      ["Sensitivity vs pathologists", share(c.sensitivity)],
      ["Specificity vs pathologists", share(c.specificity)],
    ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );
}

async function main() {
  const session = await requireSession({ active: "" });
  if (!session) return;
  const reference = new URLSearchParams(window.location.search).get("model") || "";
  const at = reference.lastIndexOf("@");
  if (at <= 0) {
    showError("No model was given.");
    return;
  }
  const [name, version] = [reference.slice(0, at), reference.slice(at + 1)];
  const base = `/api/v1/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/card`;
  try {
    const { model, card, concordance } = await api(base);
    const s = model.summary || {};
    const data = card.training_data || {};
    document.title = `${reference} · pathfed`;
    document.getElementById("card-title").textContent = `Model card: ${reference}`;
    const section = document.getElementById("card");
    section.hidden = false;
    section.replaceChildren(
      el("p", { class: "notice", id: "card-notice", text: card.notice }),
      el("p", { class: "muted", text: `${model.architecture} · ${model.status} · positive class ${model.positive} of ${model.classes.join(", ")}` }),
      el("h2", { text: "Intended use" }),
      el("p", { id: "card-intended-use", text: card.intended_use }),
      el("h2", { text: "Test split (slide level)" }),
      el(
        "dl",
        { class: "facts", id: "card-metrics" },
        [
          ["Slides", `${s.test_slides} at threshold ${s.threshold}`],
          ["AUC", interval(s.auc)],
          ["Balanced accuracy", interval(s.balanced_accuracy)],
          ["Sensitivity", interval(s.sensitivity)],
          ["Specificity", interval(s.specificity)],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      ),
      chanceWarning(s.balanced_accuracy),
      el("figure", {}, el("img", { id: "roc-plot", src: `${base}/roc.png`, alt: `ROC curve of ${reference}`, width: 480, height: 360 }), el("figcaption", { text: "ROC on the test split" })),
      el("h2", { text: "Deployment" }),
      el("p", { id: "card-deployment", text: (model.deployed_for || []).length ? deploymentText(model.deployed_for) : `Not deployed (${model.status}).` }),
      el("h2", { text: "Agreement with pathologists" }),
      concordanceSection(concordance),
      el("h2", { text: "Training data" }),
      el("p", { text: `${data.dataset}@${data.version} (${data.taxonomy}${data.organ ? `, ${data.organ}` : ""}): ${data.patients} patients from ${data.research_hospitals} hospital(s).` }),
      el("h2", { text: "Limitations" }),
      el("ul", { id: "card-limitations" }, (card.limitations || []).map((l) => el("li", { text: l }))),
    );
  } catch (err) {
    showError(err.message);
  }
}

if (document.getElementById("card")) main();
