// Researchers' training runs: start a run on a dataset version, follow its loss, accuracy
// and AUROC per epoch as it trains, cancel it, resume a stopped one, and open the model it
// registered.
import { BACKGROUND_HEADERS, api, el, formatDate, requireSession, showError, t } from "/static/app.js";

const form = document.getElementById("train-form");
const listHost = document.getElementById("run-list");
const detail = document.getElementById("run-detail");
let shown = null;
let timer = null;

const COLOURS = { train: "#1f77b4", valid: "#ff7f0e" };
const SPLITS = ["train", "valid"];
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

/** A run's status as people read it. */
const statusText = (status) => (STATUSES.includes(status) ? t(`training.status.${status}`) : status);

/** A run's status as a coloured badge. */
const runBadge = (status) => el("span", { class: `status status-${status}`, text: statusText(status) });

const percent = (fraction) => `${Math.round(fraction * 100)} %`;

/** An SVG line chart of one metric per split over epochs (seed by seed, in order). */
function chart(title, points, ceiling) {
  const W = 420, H = 220, L = 48, B = 28, T = 22, R = 10;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "curve");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("text", { x: L, y: 14, class: "curve-title" }, title);
  if (!points.length) {
    add("text", { x: L, y: H / 2 }, t("training.chart.waiting"));
    return svg;
  }
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.value);
  const [x0, x1] = [Math.min(...xs), Math.max(Math.max(...xs), Math.min(...xs) + 1)];
  // Percentages run to 100, never past it; a loss gets headroom above its highest point.
  const [y0, y1] = [Math.min(0, ...ys), ceiling ?? (Math.max(...ys) * 1.05 || 1)];
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  add("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" });
  add("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" });
  add("text", { x: L - 4, y: sy(y1) + 4, "text-anchor": "end" }, y1.toFixed(2));
  add("text", { x: L - 4, y: sy(y0) + 4, "text-anchor": "end" }, y0.toFixed(2));
  add("text", { x: W - R, y: H - 6, "text-anchor": "end" }, t("training.chart.epoch", { n: x1 }));
  for (const split of SPLITS) {
    const line = points.filter((p) => p.split === split);
    if (!line.length) continue;
    add("polyline", {
      points: line.map((p) => `${sx(p.x)},${sy(p.value)}`).join(" "),
      fill: "none",
      stroke: COLOURS[split],
      "stroke-width": 2,
      "data-split": split,
    });
    add("text", { x: W - R - 60, y: split === "train" ? T + 10 : T + 24, fill: COLOURS[split] }, t(`training.split.${split}`));
  }
  return svg;
}

/** History points of `metric`, with x counting epochs across seeds in order. */
function series(history, metric) {
  const seeds = [...new Set(history.map((p) => p.seed))].sort((a, b) => a - b);
  const offset = {};
  let total = 0;
  for (const s of seeds) {
    offset[s] = total;
    total += Math.max(...history.filter((p) => p.seed === s).map((p) => p.epoch));
  }
  return history
    .filter((p) => p.name === metric || p.name.startsWith(metric))
    .map((p) => ({ x: offset[p.seed] + p.epoch, value: p.value, split: p.split }))
    .sort((a, b) => a.x - b.x);
}

/** What a run trains: its CNN, or its encoder and head. */
const architecture = (request) => (request.encoder ? `${request.encoder}+${request.head || "abmil"}` : request.model);

function runRow(run) {
  return el(
    "tr",
    { dataset: { run: run.id } },
    el("td", {}, el("a", { href: `#${run.id}`, class: "run-link", text: run.id.slice(0, 8), onclick: () => follow(run.id) })),
    el("td", { text: run.dataset }),
    el("td", { text: `${architecture(run.request)} · ${run.request.device}` }),
    el("td", {}, runBadge(run.status)),
    el("td", { text: percent(run.progress) }),
    el("td", {}, run.model ? el("a", { href: `/models#${run.model}`, text: run.model }) : "—"),
    el("td", { text: formatDate(run.created_at) }),
  );
}

// `background`: the page's own poll while a run goes on, which does not keep the session from
// ending when idle.
async function refreshList({ background = false } = {}) {
  const runs = await api("/api/v1/training/runs", background ? { headers: BACKGROUND_HEADERS } : {});
  if (!runs.length) {
    listHost.replaceChildren(el("p", { class: "muted", id: "no-runs", text: t("training.no_runs") }));
    return runs;
  }
  listHost.replaceChildren(
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "slide-table", id: "runs" },
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            [
              t("training.col.run"),
              t("training.col.dataset"),
              t("training.col.model"),
              t("training.col.status"),
              t("training.col.progress"),
              t("training.col.registered"),
              t("training.col.started"),
            ].map((h) => el("th", { text: h })),
          ),
        ),
        el("tbody", {}, runs.map(runRow)),
      ),
    ),
  );
  return runs;
}

function renderRun(run) {
  const active = run.status === "queued" || run.status === "running";
  const actions = [];
  if (active) {
    actions.push(el("button", { type: "button", class: "button button-danger", id: "run-cancel", text: t("training.cancel"), onclick: () => act(run.id, "cancel") }));
  }
  if (run.resumable) {
    actions.push(el("button", { type: "button", class: "button", id: "run-resume", text: t("training.resume"), onclick: () => act(run.id, "resume") }));
  }
  detail.hidden = false;
  detail.replaceChildren(
    el("h2", { id: "run-title", text: t("training.run_title", { id: run.id.slice(0, 8), dataset: run.dataset }) }),
    el(
      "dl",
      { class: "facts" },
      [
        ["status", t("training.fact.status"), statusText(run.status)],
        ["progress", t("training.fact.progress"), run.note ? `${percent(run.progress)} · ${run.note}` : percent(run.progress)],
        [
          "model",
          t("training.fact.model"),
          run.request.encoder
            ? t(run.request.folds === 0 ? "training.encoder_summary_no_cv" : "training.encoder_summary", {
                encoder: run.request.encoder,
                head: run.request.head || "abmil",
                epochs: run.request.epochs,
                lr: run.request.lr,
                seeds: run.request.seeds,
                folds: run.request.folds ?? 5,
              })
            : t("training.model_summary", {
                model: run.request.model,
                epochs: run.request.epochs,
                batch: run.request.batch,
                lr: run.request.lr,
                seeds: run.request.seeds,
                aggregation: run.request.aggregation,
              }),
        ],
        ["device", t("training.fact.device"), run.request.device],
        run.error ? ["error", t("training.fact.error"), run.error] : null,
        run.model ? ["registered", t("training.fact.registered"), run.model] : null,
      ]
        .filter(Boolean)
        .flatMap(([fact, k, v]) => [el("dt", { text: k }), el("dd", { text: v, dataset: { fact } })]),
    ),
    el("progress", { id: "run-progress", max: 1, value: run.progress }),
    el(
      "div",
      { class: "curves", id: "run-curves" },
      chart(t("training.chart.loss"), series(run.history, "Loss")),
      chart(t("training.chart.accuracy"), series(run.history, "Accuracy"), 100),
      chart(t("training.chart.auroc"), series(run.history, "AUROC"), 100),
    ),
    run.model
      ? el("p", {}, el("a", { href: `/models#${run.model}`, id: "run-model-link", class: "button", text: t("training.open_model", { model: run.model }) }))
      : null,
    el("div", { class: "actions" }, actions),
  );
}

async function follow(id, { background = false } = {}) {
  shown = id;
  clearTimeout(timer);
  try {
    const run = await api(`/api/v1/training/runs/${encodeURIComponent(id)}`, background ? { headers: BACKGROUND_HEADERS } : {});
    if (shown !== id) return;
    renderRun(run);
    if (run.status === "queued" || run.status === "running") {
      const poll = { background: true };
      timer = setTimeout(() => follow(id, poll).then(() => refreshList(poll)).catch((e) => showError(e)), 1000);
    }
  } catch (err) {
    showError(err);
  }
}

async function act(id, action) {
  showError("");
  try {
    await api(`/api/v1/training/runs/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    await refreshList();
    await follow(id);
  } catch (err) {
    showError(err);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const value = (id) => document.getElementById(id).value;
  const request = {
    dataset: value("train-dataset"),
    epochs: Number(value("train-epochs")),
    batch: Number(value("train-batch")),
    lr: Number(value("train-lr")),
    seeds: Number(value("train-seeds")),
    device: value("train-device"),
  };
  if (value("train-encoder")) {
    // A cleared folds field means the default, not 0 (which turns cross-validation off).
    const folds = value("train-folds").trim() === "" ? 5 : Number(value("train-folds"));
    Object.assign(request, { encoder: value("train-encoder"), head: value("train-head"), folds });
  } else {
    Object.assign(request, { model: value("train-model"), aggregation: value("train-aggregation") });
  }
  if (value("train-name").trim()) request.name = value("train-name").trim();
  const button = document.getElementById("train-start");
  button.disabled = true;
  try {
    const run = await api("/api/v1/training/runs", { method: "POST", json: request });
    window.location.hash = run.id;
    await refreshList();
    await follow(run.id);
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
});

// Heads train in seconds and keep their best validation epoch, so they get more epochs than a
// CNN by default; an edited value is left alone.
const EPOCHS = { cnn: "10", encoder: "40" };

/** Shows the fields of the kind of run chosen: a CNN, or an encoder with its head. */
function showRunKind() {
  const encoder = Boolean(document.getElementById("train-encoder").value);
  for (const node of form.querySelectorAll(".encoder-only")) node.hidden = !encoder;
  for (const node of form.querySelectorAll(".cnn-only")) node.hidden = encoder;
  const epochs = document.getElementById("train-epochs");
  if (epochs.value === (encoder ? EPOCHS.cnn : EPOCHS.encoder)) epochs.value = encoder ? EPOCHS.encoder : EPOCHS.cnn;
}

/** The encoder choices: installed ones to pick, the others shown but disabled. */
async function loadEncoders() {
  const encoders = await api("/api/v1/encoders");
  const select = document.getElementById("train-encoder");
  select.replaceChildren(
    select.options[0],
    ...encoders.map((e) =>
      el("option", {
        value: e.name,
        disabled: !e.installed,
        text: e.installed ? t("training.encoder.option", e) : t("training.encoder.missing", e),
      }),
    ),
  );
  select.addEventListener("change", showRunKind);
}

async function main() {
  const session = await requireSession({ active: "training", areas: ["training"] });
  if (!session) return;
  try {
    await loadEncoders();
    const versions = await api("/api/v1/datasets");
    const select = document.getElementById("train-dataset");
    select.replaceChildren(...versions.map((v) => el("option", { value: `${v.dataset}@${v.version}`, text: `${v.dataset}@${v.version}` })));
    if (!versions.length) {
      // The form cannot start anything yet; say why instead of an empty list.
      select.replaceChildren(el("option", { value: "", disabled: true, selected: true, text: t("training.no_versions") }));
    }
    const runs = await refreshList();
    const wanted = window.location.hash.slice(1);
    const chosen = runs.find((r) => r.id === wanted) || runs[0];
    if (chosen) await follow(chosen.id);
  } catch (err) {
    showError(err);
  }
}

main();
