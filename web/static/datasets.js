// Researchers' dataset catalogue: published versions, and for the chosen one its
// parameters, class balance per split (slides and patches), extraction QC and
// sample patches; and a form that creates the next version of a dataset. Everything shown
// comes from the research tier.
import { api, el, formatDate, lang, requireSession, showError, t } from "/static/app.js";

const SPLITS = ["train", "val", "test"];
const listHost = document.getElementById("version-list");
const detail = document.getElementById("version-detail");
const loading = document.getElementById("datasets-loading");

/** A split's name as people read it (the API's names are train, val and test). */
const splitName = (split) => (SPLITS.includes(split) ? t(`datasets.split.${split}`) : split);

function versionRow(v) {
  const slides = SPLITS.map((s) => Object.values(v.counts?.[s] || {}).reduce((a, b) => a + b, 0));
  const ref = `${v.dataset}@${v.version}`;
  return el(
    "tr",
    { dataset: { version: ref } },
    el("td", {}, el("a", { href: `#${ref}`, class: "version-link", text: ref, onclick: () => show(v.dataset, v.version) })),
    el("td", { text: slides.join(" / ") }),
    el("td", { text: v.created_by }),
    el("td", { text: formatDate(v.created_at) }),
    el("td", {}, el("code", { text: (v.content_hash || "").slice(0, 12) })),
  );
}

/** A labels × splits table of counts ({split: {label: n}}). */
function balanceTable(id, caption, counts) {
  const labels = [...new Set(SPLITS.flatMap((s) => Object.keys(counts?.[s] || {})))].sort();
  return el(
    "table",
    { class: "slide-table balance-table", id },
    el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, el("th", { text: t("datasets.col.label") }), SPLITS.map((s) => el("th", { text: splitName(s) })))),
    el(
      "tbody",
      {},
      labels.map((label) =>
        el("tr", { dataset: { label } }, el("td", { text: label }), SPLITS.map((s) => el("td", { text: String(counts?.[s]?.[label] || 0) }))),
      ),
    ),
  );
}

function mean(values) {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0;
}

const percent = (fraction) => (100 * fraction).toFixed(1);

async function show(name, version) {
  showError("");
  detail.hidden = false;
  detail.replaceChildren(el("p", { class: "muted", text: t("datasets.loading_version", { ref: `${name}@${version}` }) }));
  try {
    const [manifest, samples] = await Promise.all([
      api(`/api/v1/datasets/${encodeURIComponent(name)}/versions/${version}`),
      api(`/api/v1/datasets/${encodeURIComponent(name)}/versions/${version}/samples`),
    ]);
    const c = manifest.content;
    const x = c.extraction;
    const qc = x ? Object.values(x.slides || {}).map((s) => s.qc) : [];
    // Entries withdrawn since publication (an opt-out) carry only their id.
    const withdrawn = c.slides.filter((s) => s.withdrawn).length;
    const live = c.slides.length - withdrawn;
    const facts = [
      [
        t("datasets.fact.labels"),
        c.params.organ ? t("datasets.labels_with_organ", { labels: c.params.labels, organ: c.params.organ }) : c.params.labels,
      ],
      [t("datasets.fact.slides"), withdrawn ? t("datasets.slides_withdrawn", { live, withdrawn }) : String(live)],
      [t("datasets.fact.split"), t("datasets.split_rule", { fractions: c.params.fractions.join(" / "), seed: c.params.seed })],
      [
        t("datasets.fact.small_cells"),
        t("datasets.small_cells", {
          k: c.small_cells.min_cell_size,
          generalised: c.small_cells.generalised,
          suppressed: c.small_cells.suppressed,
        }),
      ],
      [t("datasets.fact.opted_out"), String(c.opted_out_excluded)],
      [t("datasets.fact.content_hash"), manifest.content_hash],
    ];
    if (x) {
      facts.push(
        [
          t("datasets.fact.patches"),
          t("datasets.patches", { n: x.patches, px: x.params.grid.patch_px, mpp: x.params.grid.patch_mpp, hash: x.params_hash }),
        ],
        [t("datasets.fact.tissue"), t("datasets.tissue", { pct: percent(mean(qc.map((q) => q.tissue_fraction))) })],
        [
          t("datasets.fact.blur"),
          t("datasets.blur", {
            blur: percent(mean(qc.map((q) => q.blur_fraction))),
            pen: percent(mean(qc.map((q) => q.pen_fraction))),
          }),
        ],
      );
    }
    detail.replaceChildren(
      el("h2", { id: "detail-title", text: `${manifest.dataset}@${manifest.version}` }),
      el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("div", { class: "table-wrap" }, balanceTable("slide-balance", t("datasets.slide_balance"), c.counts)),
      x
        ? el("div", { class: "table-wrap" }, balanceTable("patch-balance", t("datasets.patch_balance"), x.patch_counts))
        : el("p", { class: "muted", text: t("datasets.no_patches") }),
      el("h3", { text: t("datasets.samples") }),
      samples.length
        ? el(
            "div",
            { class: "patch-grid", id: "sample-patches" },
            samples.map((s) =>
              el(
                "figure",
                { class: "patch" },
                el("img", {
                  src: s.url,
                  alt: t("datasets.sample_alt", { label: s.label, slide: s.research_slide }),
                  width: 128,
                  height: 128,
                  loading: "lazy",
                }),
                el("figcaption", { text: `${s.label} · ${splitName(s.split)}` }),
              ),
            ),
          )
        : el("p", { class: "muted", text: t("datasets.no_samples") }),
    );
  } catch (err) {
    detail.hidden = true;
    showError(err);
  }
}

/** Lists the published versions and shows the one the address names (else the newest). */
async function loadVersions() {
  try {
    const versions = await api("/api/v1/datasets");
    loading.hidden = true;
    if (!versions.length) {
      listHost.replaceChildren(
        el(
          "div",
          { class: "panel empty-state", id: "no-datasets" },
          el("p", { text: t("datasets.empty") }),
          el("p", {}, el("code", { text: "pathfed dataset create NAME --labels TAXONOMY" })),
        ),
      );
      document.getElementById("create-panel").open = true;
      return;
    }
    const headings = [
      t("datasets.col.version"),
      t("datasets.col.slides"),
      t("datasets.col.built_by"),
      t("datasets.col.date"),
      t("datasets.col.content_hash"),
    ];
    listHost.replaceChildren(
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "slide-table", id: "versions" },
          el("thead", {}, el("tr", {}, headings.map((h) => el("th", { text: h })))),
          el("tbody", {}, versions.map(versionRow)),
        ),
      ),
    );
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    const chosen = versions.find((v) => `${v.dataset}@${v.version}` === wanted) || versions[0];
    await show(chosen.dataset, chosen.version);
  } catch (err) {
    loading.hidden = true;
    showError(err);
  }
}

async function main() {
  const session = await requireSession({ active: "datasets", areas: ["datasets"] });
  if (!session) return;
  fillChoices().catch(showError);
  await loadVersions();
}
// ---- Creating a version from the catalogue, as `pathfed dataset create` does ----------------

const createForm = document.getElementById("create-form");
const createProgress = document.getElementById("ds-progress");

/** Fills the taxonomy and organ choices from the platform's reference data. */
async function fillChoices() {
  const [taxonomies, { organs }] = await Promise.all([api("/api/v1/taxonomies"), api("/api/v1/organs")]);
  const labels = document.getElementById("ds-labels");
  const name = (tax) => (lang() === "ja" ? tax.name_ja : tax.name_en) || tax.name || tax.id;
  labels.replaceChildren(
    ...Object.values(taxonomies.taxonomies).map((tax) => el("option", { value: tax.id, text: `${name(tax)} (${tax.id})` })),
  );
  const organ = document.getElementById("ds-organ");
  organ.append(...organs.map((o) => el("option", { value: o.code, text: lang() === "ja" ? o.ja : o.en })));
}

/** The request body the form describes. */
function createRequest() {
  const value = (id) => document.getElementById(id).value.trim();
  const fractions = value("ds-split").split(",").map(Number);
  const minCell = value("ds-min-cell");
  const patches = document.getElementById("ds-patches").checked;
  return {
    name: value("ds-name"),
    params: {
      organ: value("ds-organ") || null,
      labels: value("ds-labels"),
      seed: Number(value("ds-seed") || 1),
      fractions,
      min_cell_size: minCell ? Number(minCell) : null,
      extraction: patches
        ? { grid: { patch_px: Number(value("ds-patch-px")), patch_mpp: Number(value("ds-patch-mpp")), min_tissue: 0.5 } }
        : null,
    },
  };
}

/** Follows a building version until it is published (or fails), showing its progress. Polls
 * back off from 1 to 10 seconds: every poll is an audited read, and builds can take an hour. */
async function followBuild(name, version) {
  const path = `/api/v1/datasets/${encodeURIComponent(name)}/versions/${version}/status`;
  for (let wait = 1000; ; wait = Math.min(wait * 1.5, 10_000)) {
    const state = await api(path);
    if (state.status === "published") return;
    if (state.status !== "building") {
      throw new Error(t("datasets.create.failed", { ref: `${name}@${version}`, error: state.error || "" }));
    }
    const percentDone = Math.round(100 * (state.progress || 0));
    createProgress.textContent = t("datasets.create.building", { ref: `${name}@${version}`, percent: percentDone });
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = document.getElementById("ds-create");
  button.disabled = true;
  createProgress.hidden = false;
  createProgress.textContent = t("datasets.create.sending");
  try {
    const request = createRequest();
    const state = await api("/api/v1/datasets", { method: "POST", json: request });
    if (state.status === "building") await followBuild(request.name, state.version);
    createProgress.textContent = t("datasets.create.published", { ref: `${request.name}@${state.version}` });
    window.location.hash = `${request.name}@${state.version}`;
    await loadVersions();
  } catch (err) {
    createProgress.hidden = true;
    showError(err);
  } finally {
    button.disabled = false;
  }
});

main();
