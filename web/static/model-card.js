// A model's card for whoever meets its output (the AI panel links here): the decision-support
// notice, intended use, what it was trained on, its test metrics with intervals (and
// cross-validation by patient when it was run), ROC curve,
// where it is deployed and why (when its metrics do not show it beats chance), limitations,
// and how often it has agreed with the pathologists' final diagnoses.
import { api, el, requireSession, showError, t } from "/static/app.js";

/** A metric with its 95 % interval, or "n/a". */
export function interval(i) {
  return i
    ? t("models.interval", { value: i.value.toFixed(3), low: i.low.toFixed(3), high: i.high.toFixed(3) })
    : t("common.not_available");
}

const share = (x) => (x === null || x === undefined ? t("common.not_available") : `${(x * 100).toFixed(0)} %`);

// Balanced accuracy of the positive class against the rest when a model cannot discriminate.
const CHANCE = 0.5;

const MODEL_STATUSES = ["registering", "registered", "retired"];

/** A model version's status as people read it. */
export function modelStatusText(status) {
  return MODEL_STATUSES.includes(status) ? t(`models.status.${status}`) : status;
}

/** Where a version is deployed, with the reason given for each deployment that has one. */
export function deploymentText(deployments) {
  const where = deployments.map((d) =>
    d.reason
      ? t("models.deployed_where_reason", { organ: d.organ, taxonomy: d.taxonomy, reason: d.reason })
      : t("models.deployed_where", { organ: d.organ, taxonomy: d.taxonomy }),
  );
  return t("models.deployed_for", { where: where.join(t("models.list_separator")) });
}

/** A warning when the test balanced accuracy does not show the model beats chance, else null. */
export function chanceWarning(ba) {
  if (ba && ba.value > CHANCE && ba.low > CHANCE) return null;
  const figures = ba ? interval(ba) : t("models.not_measured");
  return el("p", { class: "alert", id: "card-chance", text: t("models.chance_warning", { figures, chance: CHANCE }) });
}

/** Cross-validation by patient: mean ± sd over folds and the pooled out-of-fold estimate. */
export function crossValidationSection(cv, heading = "h2") {
  if (!cv) return null;
  const overFolds = (m) =>
    m ? t("models.cv.mean_sd", { mean: m.mean.toFixed(3), sd: m.sd.toFixed(3) }) : t("common.not_available");
  return el(
    "div",
    { id: "card-cv" },
    el(heading, { text: t("models.section.cross_validation") }),
    el("p", { class: "muted", text: t("models.cv.summary", { folds: cv.folds, patients: cv.patients, slides: cv.pooled.slides }) }),
    el(
      "dl",
      { class: "facts", id: "card-cross-validation" },
      ["auc", "balanced_accuracy", "sensitivity", "specificity"].flatMap((key) => [
        el("dt", { text: t(`models.metric.${key}`) }),
        el("dd", {
          dataset: { metric: key },
          text: t("models.cv.value", { folds: overFolds(cv.over_folds[key]), pooled: interval(cv.pooled[key]) }),
        }),
      ]),
    ),
  );
}

/** The concordance section, shared with the registry page. */
export function concordanceSection(c) {
  if (!c.slides) {
    return el("p", { id: "card-concordance", class: "muted", text: t("models.concordance.none") });
  }
  return el(
    "dl",
    { class: "facts", id: "card-concordance" },
    [
      [t("models.concordance.slides"), t("models.concordance.slides_value", { slides: c.slides, comparable: c.comparable })],
      [
        t("models.concordance.agreement"),
        c.agreement
          ? t("models.concordance.agreement_value", { interval: interval(c.agreement), agreements: c.agreements, comparable: c.comparable })
          : t("common.not_available"),
      ],
      [t("models.concordance.discordant"), t("models.concordance.discordant_value", { n: c.discordant })],
      [t("models.concordance.sensitivity"), share(c.sensitivity)],
      [t("models.concordance.specificity"), share(c.specificity)],
    ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
  );
}

async function main() {
  const session = await requireSession({ active: "", areas: ["models"] });
  if (!session) return;
  const reference = new URLSearchParams(window.location.search).get("model") || "";
  const at = reference.lastIndexOf("@");
  if (at <= 0) {
    showError(t("models.card.no_model"));
    return;
  }
  const [name, version] = [reference.slice(0, at), reference.slice(at + 1)];
  const base = `/api/v1/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/card`;
  try {
    const { model, card, concordance } = await api(base);
    const s = model.summary || {};
    const data = card.training_data || {};
    document.title = t("models.card.page_title_of", { model: reference });
    document.getElementById("card-title").textContent = t("models.card.title_of", { model: reference });
    const section = document.getElementById("card");
    section.hidden = false;
    const trainedOn = {
      dataset: data.dataset,
      version: data.version,
      taxonomy: data.taxonomy,
      organ: data.organ,
      patients: data.patients,
      hospitals: data.research_hospitals,
    };
    // Sections that do not apply are null and left out.
    const parts = [
      el("p", { class: "notice", id: "card-notice", text: card.notice }),
      el("p", {
        class: "muted",
        text: t("models.card.summary", {
          architecture: model.architecture,
          status: modelStatusText(model.status),
          positive: model.positive,
          classes: model.classes.join(", "),
        }),
      }),
      el("h2", { text: t("models.section.intended_use") }),
      el("p", { id: "card-intended-use", text: card.intended_use }),
      el("h2", { text: t("models.section.test_split") }),
      el(
        "dl",
        { class: "facts", id: "card-metrics" },
        [
          [t("models.metric.slides"), t("models.metric.slides_value", { n: s.test_slides, threshold: s.threshold })],
          [t("models.metric.auc"), interval(s.auc)],
          [t("models.metric.balanced_accuracy"), interval(s.balanced_accuracy)],
          [t("models.metric.sensitivity"), interval(s.sensitivity)],
          [t("models.metric.specificity"), interval(s.specificity)],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      ),
      chanceWarning(s.balanced_accuracy),
      crossValidationSection(s.cross_validation),
      el(
        "figure",
        {},
        el("img", { id: "roc-plot", src: `${base}/roc.png`, alt: t("models.plot.roc_alt", { model: reference }), width: 480, height: 360 }),
        el("figcaption", { text: t("models.plot.roc") }),
      ),
      el("h2", { text: t("models.section.deployment") }),
      el("p", {
        id: "card-deployment",
        text: (model.deployed_for || []).length
          ? deploymentText(model.deployed_for)
          : t("models.not_deployed", { status: modelStatusText(model.status) }),
      }),
      el("h2", { text: t("models.section.agreement") }),
      concordanceSection(concordance),
      el("h2", { text: t("models.section.training_data") }),
      el("p", { text: data.organ ? t("models.card.trained_on_organ", trainedOn) : t("models.card.trained_on", trainedOn) }),
      el("h2", { text: t("models.section.limitations") }),
      el("ul", { id: "card-limitations" }, (card.limitations || []).map((l) => el("li", { text: l }))),
    ];
    section.replaceChildren(...parts.filter(Boolean));
  } catch (err) {
    showError(err);
  }
}

if (document.getElementById("card")) main();
