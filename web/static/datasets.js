// Researchers' dataset catalogue: published versions, and for the chosen one its
// parameters, class balance per split (slides and patches), extraction QC and
// sample patches. Everything shown comes from the research tier.
import { api, el, formatDate, requireSession, showError } from "/static/app.js";

const SPLITS = ["train", "val", "test"];
const listHost = document.getElementById("version-list");
const detail = document.getElementById("version-detail");
const loading = document.getElementById("datasets-loading");

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
    el("thead", {}, el("tr", {}, el("th", { text: "Label" }), SPLITS.map((s) => el("th", { text: s })))),
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

async function show(name, version) {
  showError("");
  detail.hidden = false;
  detail.replaceChildren(el("p", { class: "muted", text: `Loading ${name}@${version}…` }));
  try {
    const [manifest, samples] = await Promise.all([
      api(`/api/v1/datasets/${encodeURIComponent(name)}/versions/${version}`),
      api(`/api/v1/datasets/${encodeURIComponent(name)}/versions/${version}/samples`),
    ]);
    const c = manifest.content;
    const x = c.extraction;
    const qc = x ? Object.values(x.slides || {}).map((s) => s.qc) : [];
    const facts = [
      ["Labels", `${c.params.labels}${c.params.organ ? ` · organ ${c.params.organ}` : ""}`],
      ["Slides", (() => {
        // Entries withdrawn since publication (an opt-out) carry only their id.
        const withdrawn = c.slides.filter((s) => s.withdrawn).length;
        const live = c.slides.length - withdrawn;
        return withdrawn ? `${live} (${withdrawn} withdrawn since publication)` : String(live);
      })()],
      ["Split", `${c.params.fractions.join(" / ")} by patient, seed ${c.params.seed}`],
      ["Small cells", `k ≥ ${c.small_cells.min_cell_size}: ${c.small_cells.generalised} generalised, ${c.small_cells.suppressed} suppressed`],
      ["Opted out since curation", String(c.opted_out_excluded)],
      ["Content hash", manifest.content_hash],
    ];
    if (x) {
      facts.push(
        ["Patches", `${x.patches} of ${x.params.grid.patch_px} px at ${x.params.grid.patch_mpp} µm/px (parameters ${x.params_hash})`],
        ["Tissue per slide", `${(100 * mean(qc.map((q) => q.tissue_fraction))).toFixed(1)} % on average`],
        ["Blurred patches", `${(100 * mean(qc.map((q) => q.blur_fraction))).toFixed(1)} % · pen ink ${(100 * mean(qc.map((q) => q.pen_fraction))).toFixed(1)} %`],
      );
    }
    detail.replaceChildren(
      el("h2", { id: "detail-title", text: `${manifest.dataset}@${manifest.version}` }),
      el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])),
      el("div", { class: "table-wrap" }, balanceTable("slide-balance", "Slides per split and label", c.counts)),
      x ? el("div", { class: "table-wrap" }, balanceTable("patch-balance", "Patches per split and label", x.patch_counts)) : el("p", { class: "muted", text: "No patches extracted for this version." }),
      el("h3", { text: "Sample patches" }),
      samples.length
        ? el(
            "div",
            { class: "patch-grid", id: "sample-patches" },
            samples.map((s) =>
              el("figure", { class: "patch" }, el("img", { src: s.url, alt: `${s.label} patch from ${s.research_slide}`, width: 128, height: 128, loading: "lazy" }), el("figcaption", { text: `${s.label} · ${s.split}` })),
            ),
          )
        : el("p", { class: "muted", text: "No sample patches." }),
    );
  } catch (err) {
    detail.hidden = true;
    showError(err.message);
  }
}

async function main() {
  const session = await requireSession({ active: "datasets" });
  if (!session) return;
  try {
    const versions = await api("/api/v1/datasets");
    loading.hidden = true;
    if (!versions.length) {
      listHost.replaceChildren(el("div", { class: "panel empty-state", id: "no-datasets" }, el("p", { text: "No dataset versions yet. Create one with: pathfed dataset create NAME --labels TAXONOMY" })));
      return;
    }
    listHost.replaceChildren(
      el(
        "div",
        { class: "table-wrap" },
        el(
          "table",
          { class: "slide-table", id: "versions" },
          el("thead", {}, el("tr", {}, ["Version", "Slides (train / val / test)", "Built by", "Date", "Content hash"].map((h) => el("th", { text: h })))),
          el("tbody", {}, versions.map(versionRow)),
        ),
      ),
    );
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    const chosen = versions.find((v) => `${v.dataset}@${v.version}` === wanted) || versions[0];
    await show(chosen.dataset, chosen.version);
  } catch (err) {
    loading.hidden = true;
    showError(err.message);
  }
}

main();
