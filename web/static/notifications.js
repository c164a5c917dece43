// The notifications bell of every page's nav: the unread count, the newest notices with links
// to their cases, and "mark all as read". It asks the server every 30 s while the tab is
// visible, and at once when the tab comes back. The nav (app.js) mounts it.

import { BACKGROUND_HEADERS, api, el, errorText, formatDateTime, t } from "/static/app.js";

const LIST_URL = "/api/v1/notifications";
const READ_ALL_URL = "/api/v1/notifications/read-all";
const POLL_MS = 30_000;
const STYLES_ID = "notif-styles";
const SVG_NS = "http://www.w3.org/2000/svg";

// Every kind the server sends; each has its text under `notifications.kind.<kind>`.
const KINDS = [
  "case_submitted",
  "case_assigned",
  "double_check_requested",
  "adjudication_needed",
  "report_issued",
  "report_amended",
];

// The bell of this page; a second mount (the nav drawn again) replaces it.
let current = null;

function readUrl(id) {
  return `/api/v1/notifications/${encodeURIComponent(id)}/read`;
}

function caseUrl(caseId) {
  return `/case?id=${encodeURIComponent(caseId)}`;
}

/** The bell's own styles, added to the page once. */
function ensureStyles() {
  if (document.getElementById(STYLES_ID)) return;
  document.head.append(el("link", { id: STYLES_ID, rel: "stylesheet", href: "/static/notifications.css" }));
}

/** A bell drawn as SVG (no icon font or emoji, so it looks the same on every workstation). */
function bellIcon() {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", "notif-icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute(
    "d",
    "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z",
  );
  svg.append(path);
  return svg;
}

/**
 * Draws the bell into `host` (the nav's slot) for the signed-in user of `session` and keeps it
 * current. Resolves once the first count is shown.
 */
export async function mountNotifications(host, session) {
  if (!host || !session || !session.user) return;
  if (current) current.stop();
  ensureStyles();

  const badge = el("span", { id: "notif-badge", class: "notif-badge", hidden: true });
  const button = el(
    "button",
    {
      type: "button",
      id: "notif-button",
      class: "notif-button",
      "aria-haspopup": "true",
      "aria-expanded": "false",
      "aria-controls": "notif-panel",
    },
    bellIcon(),
    badge,
  );
  const list = el("ul", { id: "notif-list", class: "notif-list" });
  const empty = el("p", { class: "notif-empty", hidden: true, text: t("notifications.empty") });
  const status = el("p", { class: "notif-status", role: "status", hidden: true });
  const readAll = el("button", {
    type: "button",
    id: "notif-read-all",
    class: "button button-small button-quiet",
    text: t("notifications.mark_all"),
  });
  const panel = el(
    "div",
    { id: "notif-panel", class: "notif-panel", role: "region", "aria-label": t("notifications.title"), hidden: true },
    el("div", { class: "notif-head" }, el("h2", { class: "notif-title", text: t("notifications.title") }), readAll),
    status,
    empty,
    list,
  );
  const root = el("span", { class: "notif" }, button, panel);
  host.replaceChildren(root);

  const state = { unread: 0, items: [], timer: null, stopped: false, loading: null };

  function showCount(unread) {
    state.unread = Math.max(0, Number(unread) || 0);
    badge.hidden = state.unread === 0;
    badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
    const label = state.unread === 0 ? t("notifications.button") : t("notifications.button_unread", { n: state.unread });
    button.setAttribute("aria-label", label);
    button.title = label;
    readAll.disabled = state.unread === 0;
  }

  function showStatus(text) {
    status.textContent = text || "";
    status.hidden = !text;
  }

  function item(notice) {
    const text = KINDS.includes(notice.kind) ? t(`notifications.kind.${notice.kind}`) : notice.kind;
    const meta = [
      notice.case_short ? t("notifications.case", { id: notice.case_short }) : null,
      formatDateTime(notice.created_at),
    ]
      .filter(Boolean)
      .join(" · ");
    const body = [
      notice.read ? null : el("span", { class: "visually-hidden", text: t("notifications.unread_marker") }),
      el("span", { class: "notif-text", text }),
      el("span", { class: "notif-meta", text: meta }),
    ];
    const inner = notice.case_id
      ? el("a", { class: "notif-link", href: caseUrl(notice.case_id), onclick: (event) => open(event, notice) }, body)
      : el("span", { class: "notif-link" }, body);
    return el("li", { class: notice.read ? "notif-item" : "notif-item unread", dataset: { notificationId: notice.id } }, inner);
  }

  function draw() {
    list.replaceChildren(...state.items.map(item));
    empty.hidden = state.items.length > 0;
  }

  // `background`: asked by the page itself (the poll), not by the user, so it does not keep
  // the session from ending when idle.
  async function refresh({ background = false } = {}) {
    // One request at a time: a poll and an opening panel share it.
    if (state.loading) return state.loading;
    state.loading = (async () => {
      try {
        const answer = await api(LIST_URL, background ? { headers: BACKGROUND_HEADERS } : {});
        state.items = Array.isArray(answer.items) ? answer.items : [];
        showCount(answer.unread);
        draw();
        showStatus("");
      } catch (err) {
        if (err.name === "AbortError") return;
        console.warn("notifications could not be loaded:", err);
        if (!panel.hidden) showStatus(t("notifications.load_failed"));
      } finally {
        state.loading = null;
      }
    })();
    return state.loading;
  }

  async function markRead(notice) {
    if (notice.read) return;
    const answer = await api(readUrl(notice.id), { method: "POST" });
    notice.read = true;
    showCount(answer ? answer.unread : state.unread - 1);
    draw();
  }

  // Marks the notice read before following its link, so the count is right on the next page.
  async function open(event, notice) {
    const plain = event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
    if (!plain) {
      markRead(notice).catch((err) => console.warn("could not mark the notice read:", err));
      return;
    }
    event.preventDefault();
    try {
      await markRead(notice);
    } catch (err) {
      // The case still opens; the notice stays unread.
      console.warn("could not mark the notice read:", err);
    }
    window.location.assign(caseUrl(notice.case_id));
  }

  function setOpen(wanted) {
    panel.hidden = !wanted;
    button.setAttribute("aria-expanded", wanted ? "true" : "false");
    if (wanted) {
      showStatus("");
      refresh();
    }
  }

  button.addEventListener("click", () => setOpen(panel.hidden));
  readAll.addEventListener("click", async () => {
    readAll.disabled = true;
    try {
      const answer = await api(READ_ALL_URL, { method: "POST" });
      for (const notice of state.items) notice.read = true;
      showCount(answer ? answer.unread : 0);
      draw();
      showStatus("");
    } catch (err) {
      showStatus(errorText(err));
      readAll.disabled = state.unread === 0;
    }
  });
  const onKey = (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      setOpen(false);
      button.focus();
    }
  };
  const onClick = (event) => {
    if (!panel.hidden && !root.contains(event.target)) setOpen(false);
  };
  const onVisible = () => {
    if (!document.hidden) refresh({ background: true });
  };
  document.addEventListener("keydown", onKey);
  document.addEventListener("click", onClick);
  document.addEventListener("visibilitychange", onVisible);

  function schedule() {
    if (state.stopped) return;
    state.timer = window.setTimeout(async () => {
      // A hidden tab asks nothing; it catches up when it is shown again.
      if (!document.hidden) await refresh({ background: true });
      schedule();
    }, POLL_MS);
  }

  current = {
    stop() {
      state.stopped = true;
      window.clearTimeout(state.timer);
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("click", onClick);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };

  showCount(0);
  // Every page shows the bell: its first load is the page's, not the user's.
  await refresh({ background: true });
  schedule();
}
