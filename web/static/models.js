// The model registry: every registered version with its card (intended use, training data,
// metrics with intervals, limitations, agreement with pathologists since deployment), ROC and
// loss plots, where it is deployed, and, for the platform admin, buttons to deploy it for an
// organ or retire it. A version not shown to beat chance is deployed only with a written reason.
import { ApiError, api, el, formatDate, requireSession, showError, statusBadge } from "/static/app.js";
import { chanceWarning, concordanceSection, deploymentText } from "/static/model-card.js";

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
    const reason = el("textarea", { id: "deploy-reason", rows: 4, required: true, style: "width: 100%", placeholder: "e.g. pilot at one hub, every call reviewed by a pathologist" });
    const dialog = el(
      "dialog",
      { id: "deploy-reason-dialog", class: "panel narrow-form", "aria-labelledby": "deploy-reason-title" },
      el(
        "form",
        { method: "dialog" },
        el("h3", { id: "deploy-reason-title", text: "A reason is needed to deploy" }),
        el("p", { id: "deploy-reason-message", text: message }),
        el("label", { for: "deploy-reason", text: "Why deploy it? (kept with the deployment and in the audit log)" }),
        reason,
        el(
          "div",
          { class: "actions" },
          el("button", { type: "submit", class: "button", id: "deploy-reason-confirm", value: "deploy", text: "Deploy with this reason" }),
          el("button", { type: "button", class: "button button-quiet", id: "deploy-reason-cancel", text: "Cancel", onclick: () => dialog.close("") }),
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

function pct(interval) {
  if (!interval) return "n/a";
  return `${interval.value.toFixed(3)} (95 % CI ${interval.low.toFixed(3)}–${interval.high.toFixed(3)})`;
}

function overSeeds(summary, key) {
  const o = summary.over_seeds?.[key];
  return summary.seeds > 1 && o ? ` · ${o.mean.toFixed(3)} ± ${o.sd.toFixed(3)} over ${o.n} seeds` : "";
}

function modelRow(m) {
  const ref = `${m.name}@${m.version}`;
  return el(
    "tr",
    { dataset: { model: ref } },
    el("td", {}, el("a", { href: `#${ref}`, class: "model-link", text: ref, onclick: () => show(m.name, m.version) })),
    el("td", { text: `${m.dataset}@${m.dataset_version}` }),
    el("td", { text: m.architecture }),
    el("td", { text: m.summary?.auc ? m.summary.auc.value.toFixed(3) : "n/a" }),
    el("td", {}, statusBadge(m.status)),
    el("td", { text: m.deployed_for.map((d) => `${d.organ} / ${d.taxonomy}`).join(", ") || "—" }),
    el("td", { text: formatDate(m.created_at) }),
  );
}

async function refresh() {
  const models = await api("/api/v1/models");
  if (!models.length) {
    listHost.replaceChildren(el("p", { class: "muted", id: "no-models", text: "No models yet: train one on the Training page." }));
    return models;
  }
  listHost.replaceChildren(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "slide-table", id: "models" },
        el("thead", {}, el("tr", {}, ["Model", "Dataset", "Architecture", "AUC", "Status", "Deployed for", "Registered"].map((h) => el("th", { text: h })))),
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
      el("label", {}, "Organ ", el("input", { id: "deploy-organ", value: organ, placeholder: "e.g. stomach", required: true })),
      el("button", { type: "submit", class: "button", id: "deploy-button", text: `Deploy for ${model.taxonomy}`, disabled: model.status !== "registered" }),
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
        document.getElementById("deploy-status").textContent = `Deployed for ${d.organ} slides in ${d.taxonomy}.${d.reason ? ` Reason: ${d.reason}` : ""}`;
      } catch (err) {
        showError(err.message);
      }
    });
    const retire = el("button", {
      type: "button",
      class: "button button-danger",
      id: "retire-button",
      text: "Retire",
      disabled: model.status !== "registered",
      onclick: async () => {
        if (!window.confirm(`Retire ${name}@${version}? It will be undeployed everywhere.`)) return;
        try {
          await api(`${base}/retire`, { method: "POST" });
          await refresh();
          await show(name, version);
        } catch (err) {
          showError(err.message);
        }
      },
    });
    const data = card.training_data || {};
    detail.hidden = false;
    detail.replaceChildren(
      el("h2", { id: "model-title", text: `${name}@${version}` }),
      el("p", { class: "notice", id: "card-notice", text: card.notice }),
      el("h3", { text: "Intended use" }),
      el("p", { id: "card-intended-use", text: card.intended_use }),
      el("h3", { text: "Test split (slide level)" }),
      el(
        "dl",
        { class: "facts", id: "card-metrics" },
        [
          ["Slides", `${s.test_slides} at threshold ${s.threshold}`],
          ["AUC", pct(s.auc) + overSeeds(s, "auc")],
          ["Balanced accuracy", pct(s.balanced_accuracy) + overSeeds(s, "balanced_accuracy")],
          ["Sensitivity", pct(s.sensitivity) + overSeeds(s, "sensitivity")],
          ["Specificity", pct(s.specificity) + overSeeds(s, "specificity")],
          ["Confusion", `TP ${c.tp} · FP ${c.fp} · TN ${c.tn} · FN ${c.fn_}`],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
      ),
      chanceWarning(s.balanced_accuracy),
      el(
        "div",
        { class: "plots" },
        el("figure", {}, el("img", { id: "roc-plot", src: `${base}/files/roc.png`, alt: `ROC curve of ${name}@${version}`, width: 480, height: 360 }), el("figcaption", { text: "ROC on the test split" })),
        el("figure", {}, el("img", { id: "loss-plot", src: `${base}/files/loss.png`, alt: `Loss curves of ${name}@${version}`, width: 480, height: 360 }), el("figcaption", { text: "Loss per epoch" })),
      ),
      el("h3", { text: "Agreement with pathologists" }),
      concordanceSection(concordance),
      el("h3", { text: "Training data" }),
      el(
        "dl",
        { class: "facts" },
        [
          ["Dataset", `${data.dataset}@${data.version} · ${data.taxonomy}${data.organ ? ` · ${data.organ}` : ""}`],
          ["Content hash", data.content_hash],
          ["Patients", `${data.patients} from ${data.research_hospitals} hospital(s)`],
          ["Slides train / val / test", `${data.train?.slides} / ${data.validation?.slides} / ${data.test?.slides}`],
          ["Code", model.code_version],
          ["Aggregation", metrics.aggregation],
        ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]),
      ),
      el("h3", { text: "Limitations" }),
      el("ul", { id: "card-limitations" }, (card.limitations || []).map((l) => el("li", { text: l }))),
      el("h3", { text: "Deployment" }),
      el("p", { id: "deploy-status", text: model.deployed_for.length ? deploymentText(model.deployed_for) : `Not deployed (${model.status}).` }),
      canDeploy
        ? el("div", { class: "actions" }, deployForm, retire)
        : el("p", { class: "muted", id: "deploy-note", text: "Deploying and retiring models is for the platform admin." }),
    );
  } catch (err) {
    detail.hidden = true;
    showError(err.message);
  }
}

async function main() {
  const session = await requireSession({ active: "models" });
  if (!session) return;
  canDeploy = session.user.role === "platform-admin";
  try {
    const models = await refresh();
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    const chosen = models.find((m) => `${m.name}@${m.version}` === wanted) || models[0];
    if (chosen) await show(chosen.name, chosen.version);
  } catch (err) {
    showError(err.message);
  }
}

main();
