// Slide list: one table row per slide, newest first (the server's order),
// with dates on the hospital's clock.
import {
  api,
  el,
  errorText,
  formatBytes,
  formatDateTime,
  formatDimensions,
  formatMpp,
  requireSession,
  showError,
  t,
  viewerUrl,
} from "/static/app.js";

const listHost = document.getElementById("slide-list");
const loading = document.getElementById("slides-loading");

function renderEmpty() {
  listHost.replaceChildren(
    el(
      "div",
      { class: "panel empty-state", id: "empty-state" },
      el("p", { text: t("slides.empty") }),
      el("a", { class: "button", href: "/upload", text: t("slides.upload_first") }),
    ),
  );
}

function slideRow(slide) {
  const open = viewerUrl(slide.id);
  const details = [
    slide.vendor || slide.format,
    slide.objective_power ? t("slides.objective", { n: slide.objective_power }) : null,
    slide.levels ? t("slides.levels", { n: slide.levels }) : null,
  ]
    .filter(Boolean)
    .join(" · ");

  const deleteButton = el("button", {
    type: "button",
    class: "button button-danger button-small",
    text: t("slides.delete"),
    "aria-label": t("slides.delete_aria", { name: slide.filename }),
  });
  const row = el(
    "tr",
    { dataset: { slideId: slide.id } },
    el(
      "td",
      { class: "thumb-cell" },
      el(
        "a",
        { class: "thumb-link", href: open, tabindex: "-1", "aria-hidden": "true" },
        // Lazy so a long list does not fetch every thumbnail at once.
        el("img", { src: slide.thumbnail_url, alt: "", loading: "lazy", decoding: "async", class: "thumbnail" }),
      ),
    ),
    el(
      "td",
      { class: "file-cell" },
      el("a", { class: "filename", href: open, text: slide.filename }),
      details ? el("span", { class: "sub", text: details }) : null,
    ),
    el("td", { class: "num", text: formatDimensions(slide.width, slide.height) }),
    el("td", { class: "num hide-narrow", text: formatMpp(slide.mpp_x, slide.mpp_y) }),
    el("td", { class: "num hide-narrow", text: formatBytes(slide.size_bytes) }),
    el("td", { class: "hide-narrow", text: slide.uploaded_by || "—" }),
    el("td", { class: "num hide-narrow" }, el("time", { datetime: new Date(slide.created_at * 1000).toISOString(), text: formatDateTime(slide.created_at) })),
    el(
      "td",
      { class: "actions" },
      el("a", { class: "button button-quiet button-small hide-narrow", href: open, text: t("slides.open") }),
      deleteButton,
    ),
  );

  deleteButton.addEventListener("click", async () => {
    if (!window.confirm(t("slides.delete_confirm", { name: slide.filename }))) return;
    deleteButton.disabled = true;
    showError("");
    try {
      await api(`/api/v1/slides/${encodeURIComponent(slide.id)}`, { method: "DELETE" });
      row.remove();
      if (!listHost.querySelector("tbody tr")) renderEmpty();
    } catch (err) {
      showError(t("slides.delete_failed", { name: slide.filename, reason: errorText(err) }));
      deleteButton.disabled = false;
    }
  });
  return row;
}

function renderSlides(slides) {
  if (slides.length === 0) {
    renderEmpty();
    return;
  }
  const head = ["", t("slides.col.file"), t("slides.col.dimensions"), t("slides.col.resolution"), t("slides.col.size"), t("slides.col.uploaded_by"), t("slides.col.date"), ""];
  const narrowHidden = new Set([3, 4, 5, 6]);
  const table = el(
    "table",
    { class: "slide-table" },
    el("caption", { class: "visually-hidden", text: t("slides.caption") }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        head.map((label, i) =>
          el("th", { scope: "col", class: narrowHidden.has(i) ? "hide-narrow" : null }, label || el("span", { class: "visually-hidden", text: i === 0 ? t("slides.col.thumbnail") : t("slides.col.actions") })),
        ),
      ),
    ),
    el("tbody", {}, slides.map(slideRow)),
  );
  listHost.replaceChildren(el("div", { class: "panel table-wrap" }, table));
}

async function main() {
  const session = await requireSession({ active: "slides", areas: ["slides"] });
  if (!session) return;
  // Researchers have no clinical slides to see; their home is the catalogue.
  if (session.user.role === "researcher") {
    window.location.replace("/datasets");
    return;
  }
  try {
    const { slides } = await api("/api/v1/slides");
    renderSlides(slides || []);
  } catch (err) {
    showError(t("slides.load_failed", { reason: errorText(err) }));
  } finally {
    loading.hidden = true;
  }
}

main();
