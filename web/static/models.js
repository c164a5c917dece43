// The model registry: every registered version with its card (intended use, training data,
// metrics with intervals, limitations, agreement with pathologists since deployment), ROC and
// loss plots, where it is deployed, and, for the platform admin, buttons to deploy it for an
// organ or retire it. A version not shown to beat chance is deployed only with a written reason.
import { ApiError, api, el, formatDate, requireSession, showError, t } from "/static/app.js";
import { chanceWarning, concordanceSection, crossValidationSection, deploymentText, interval, modelStatusText } from "/static/model-card.js";

const listHost = document.getElementById("model-list");
const detail = document.getElementById("model-detail");
// Researchers train and register; only the platform admin decides what reaches the clinic.
let canDeploy = false;

/**
 * Asks why a version should be deployed although its metrics do not show it beats chance
 * (`message` is the server's, with the figures). Resolves to the reason, or null if cancelled.
 */
function askReason(message) {
  return new Promise((resolve) => {
    const reason = el("textarea", { id: "deploy-reason", rows: 4, required: true, style: "width: 100%", placeholder: t("models.reason.placeholder") });
    const dialog = el(
      "dialog",
      { id: "deploy-reason-dialog", class: "panel narrow-form", "aria-labelledby": "deploy-reason-title" },
      el(
        "form",
        { method: "dialog" },
        el("h3", { id: "deploy-reason-title", text: t("models.reason.title") }),
        el("p", { text: t("models.reason.intro") }),
        // The server's own words: they carry the figures.
        el("p", { id: "deploy-reason-message", lang: "en", text: message }),
        el("label", { for: "deploy-reason", text: t("models.reason.label") }),
        reason,
        el(
          "div",
          { class: "actions" },
          el("button", { type: "submit", class: "button", id: "deploy-reason-confirm", value: "deploy", text: t("models.reason.confirm") }),
          el("button", { type: "button", class: "button button-quiet", id: "deploy-reason-cancel", text: t("common.cancel"), onclick: () => dialog.close("") }),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      const text = reason.value.trim();
      dialog.remove();
      resolve(dialog.returnValue === "deploy" && text ? text : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}

function overSeeds(summary, key) {
  const o = summary.over_seeds?.[key];
  return summary.seeds > 1 && o ? t("models.over_seeds", { mean: o.mean.toFixed(3), sd: o.sd.toFixed(3), n: o.n }) : "";
}

/** A version's status as a coloured badge. */
const modelBadge = (status) => el("span", { class: `status status-${status}`, text: modelStatusText(status) });

function modelRow(m) {
  const ref = `${m.name}@${m.version}`;
  return el(
    "tr",
    { dataset: { model: ref } },
    el("td", {}, el("a", { href: `#${ref}`, class: "model-link", text: ref, onclick: () => show(m.name, m.version) })),
    el("td", { text: `${m.dataset}@${m.dataset_version}` }),
    el("td", { text: m.architecture }),
    el("td", { text: m.summary?.auc ? m.summary.auc.value.toFixed(3) : t("common.not_available") }),
    el("td", {}, modelBadge(m.status)),
    el("td", { text: m.deployed_for.map((d) => `${d.organ} / ${d.taxonomy}`).join(", ") || "—" }),
    el("td", { text: formatDate(m.created_at) }),
  );
}

async function refresh() {
  const models = await api("/api/v1/models");
  if (!models.length) {
    listHost.replaceChildren(el("p", { class: "muted", id: "no-models", text: t("models.empty") }));
    return models;
  }
  const headings = [
    t("models.col.model"),
    t("models.col.dataset"),
    t("models.col.architecture"),
    t("models.col.auc"),
    t("models.col.status"),
    t("models.col.deployed_for"),
    t("models.col.registered"),
  ];
  listHost.replaceChildren(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "slide-table", id: "models" },
        el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
        el("tbody", {}, models.map(modelRow)),
      ),
    ),
  );
  return models;
}

async function show(name, version) {
  showError("");
  const base = `/api/v1/models/${encodeURIComponent(name)}/versions/${version}`;
  try {
    const [{ model, card, metrics }, { concordance }] = await Promise.all([api(base), api(`${base}/card`)]);
    const s = model.summary;
    const c = s.confusion || {};
    const organ = model.organ || "";
    const deployForm = el(
      "form",
      { id: "deploy-form", class: "inline-form" },
      el(
        "label",
        {},
        `${t("models.deploy.organ")} `,
        el("input", { id: "deploy-organ", value: organ, placeholder: t("models.deploy.organ_placeholder"), required: true }),
      ),
      el("button", {
        type: "submit",
        class: "button",
        id: "deploy-button",
        text: t("models.deploy.button", { taxonomy: model.taxonomy }),
        disabled: model.status !== "registered",
      }),
    );
    deployForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const organ = document.getElementById("deploy-organ").value;
      try {
        let d;
        try {
          d = await api(`${base}/deploy`, { method: "POST", json: { organ } });
        } catch (err) {
          // The server names the figures; a person states why the model should still be used.
          if (!(err instanceof ApiError && err.code === "deploy_needs_reason")) throw err;
          const reason = await askReason(err.message);
          if (!reason) return;
          d = await api(`${base}/deploy`, { method: "POST", json: { organ, reason } });
        }
        await refresh();
        await show(name, version);
        document.getElementById("deploy-status").textContent = d.reason
          ? t("models.deploy.done_reason", { organ: d.organ, taxonomy: d.taxonomy, reason: d.reason })
          : t("models.deploy.done", { organ: d.organ, taxonomy: d.taxonomy });
      } catch (err) {
        showError(err);
      }
    });
    const retire = el("button", {
      type: "button",
      class: "button button-danger",
      id: "retire-button",
      text: t("models.retire.button"),
      disabled: model.status !== "registered",
      onclick: async () => {
        if (!window.confirm(t("models.retire.confirm", { model: `${name}@${version}` }))) return;
        try {
          await api(`${base}/retire`, { method: "POST" });
          await refresh();
          await show(name, version);
        } catch (err) {
          showError(err);
        }
      },
    });
    const data = card.training_data || {};
    const ref = `${name}@${version}`;
    const trainedOn = { dataset: data.dataset, version: data.version, taxonomy: data.taxonomy, organ: data.organ };
    const dataset = data.organ ? t("models.data.dataset_organ", trainedOn) : t("models.data.dataset", trainedOn);
    detail.hidden = false;
    detail.replaceChildren(
      el("h2", { id: "model-title", text: ref }),
      el("p", { class: "notice", id: "card-notice", text: card.notice }),
      el("h3", { text: t("models.section.intended_use") }),
      el("p", { id: "card-intended-use", text: card.intended_use }),
      el("h3", { text: t("models.section.test_split") }),
      el(
        "dl",
        { class: "facts", id: "card-metrics" },
        [
          [t("models.metric.slides"), t("models.metric.slides_value", { n: s.test_slides, threshold: s.threshold })],
          [t("models.metric.auc"), interval(s.auc) + overSeeds(s, "auc")],
          [t("models.metric.balanced_accuracy"), interval(s.balanced_accuracy) + overSeeds(s, "balanced_accuracy")],
          [t("models.metric.sensitivity"), interval(s.sensitivity) + overSeeds(s, "sensitivity")],
          [t("models.metric.specificity"), interval(s.specificity) + overSeeds(s, "specificity")],
          [t("models.metric.confusion"), `TP ${c.tp} · FP ${c.fp} · TN ${c.tn} · FN ${c.fn_}`],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      ),
      chanceWarning(s.balanced_accuracy) || "",
      crossValidationSection(s.cross_validation, "h3") || "",
      el(
        "div",
        { class: "plots" },
        el(
          "figure",
          {},
          el("img", { id: "roc-plot", src: `${base}/files/roc.png`, alt: t("models.plot.roc_alt", { model: ref }), width: 480, height: 360 }),
          el("figcaption", { text: t("models.plot.roc") }),
        ),
        el(
          "figure",
          {},
          el("img", { id: "loss-plot", src: `${base}/files/loss.png`, alt: t("models.plot.loss_alt", { model: ref }), width: 480, height: 360 }),
          el("figcaption", { text: t("models.plot.loss") }),
        ),
      ),
      el("h3", { text: t("models.section.agreement") }),
      concordanceSection(concordance),
      el("h3", { text: t("models.section.training_data") }),
      el(
        "dl",
        { class: "facts" },
        [
          [t("models.data.dataset_label"), dataset],
          [t("models.data.content_hash"), data.content_hash],
          [t("models.data.patients"), t("models.data.patients_value", { patients: data.patients, hospitals: data.research_hospitals })],
          [t("models.data.slides"), `${data.train?.slides} / ${data.validation?.slides} / ${data.test?.slides}`],
          [t("models.data.code"), model.code_version],
          [t("models.data.aggregation"), metrics.aggregation],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]),
      ),
      el("h3", { text: t("models.section.limitations") }),
      el("ul", { id: "card-limitations" }, (card.limitations || []).map((l) => el("li", { text: l }))),
      el("h3", { text: t("models.section.deployment") }),
      el("p", {
        id: "deploy-status",
        text: model.deployed_for.length ? deploymentText(model.deployed_for) : t("models.not_deployed", { status: modelStatusText(model.status) }),
      }),
      canDeploy
        ? el("div", { class: "actions" }, deployForm, retire)
        : el("p", { class: "muted", id: "deploy-note", text: t("models.deploy.admin_only") }),
    );
  } catch (err) {
    detail.hidden = true;
    showError(err);
  }
}

async function main() {
  const session = await requireSession({ active: "models", areas: ["models"] });
  if (!session) return;
  canDeploy = session.user.role === "platform-admin";
  try {
    const models = await refresh();
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    const chosen = models.find((m) => `${m.name}@${m.version}` === wanted) || models[0];
    if (chosen) await show(chosen.name, chosen.version);
  } catch (err) {
    showError(err);
  }
}

main();
