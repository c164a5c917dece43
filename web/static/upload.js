// Upload page: hash each file locally (SHA-256, so the server can verify the
// assembled file), then send it with the tus resumable protocol. Uses the
// globals `hashwasm` and `tus` from the vendor scripts loaded by upload.html.
//
// DICOM instances picked or dropped together are one upload per series: a zip
// packed in the browser while it is hashed (dicom-group.js). A series the
// server could not read (a whole-slide instance in a transfer syntax it does
// not decode), or one instance alone, is refused in its row before any byte is
// sent; files that are not DICOM go up one by one beside it.
//
// A lost connection does not end an upload: its row waits for the connection
// and resumes where it stopped, after a growing pause or at once when the
// browser says it is back online. Only an answer of the server can end one.
import {
  ApiError,
  api,
  el,
  errorText,
  fetchSession,
  formatBytes,
  getCsrfToken,
  messageFromErrorBody,
  redirectToLogin,
  requireSession,
  showError,
  t,
  viewerUrl,
} from "/static/app.js";
import { groupDicom, planZip, unreadableSyntaxes, writeZip, zipName } from "/static/dicom-group.js";

const TUS_ENDPOINT = "/api/v1/uploads";
const MAX_PARALLEL = 2;
// Large enough that per-request overhead is small, small enough that a lost
// connection only costs a few seconds of resending.
const CHUNK_SIZE = 8 * 1024 * 1024;
// Hashing reads this much of the file into memory at a time.
const HASH_SLICE = 16 * 1024 * 1024;
// tus-js-client's own quick retries of a failed request, before the row waits.
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000];
// Pauses between resume attempts while the connection stays away; the last repeats.
const RESUME_DELAYS = [2000, 5000, 10000, 20000, 30000, 60000];
// Longest specimen/block label the case accepts.
const MAX_LABEL_CHARS = 40;

// Phases in which leaving the page would lose work.
const ACTIVE_PHASES = new Set(["queued", "hashing", "uploading", "processing", "attaching", "waiting"]);
const PHASES = ["queued", "hashing", "uploading", "processing", "attaching", "waiting", "done", "error", "cancelled"];

const listEl = document.getElementById("upload-list");
const input = document.getElementById("file-input");
const dropzone = document.getElementById("dropzone");

const items = [];
const waiting = [];
let running = 0;
let rowCount = 0;

// Files picked before the session check finishes wait for it: every tus
// request needs the CSRF token that comes with the session, and every row
// needs the translations that come with it.
const sessionReady = requireSession({ active: "upload", areas: ["upload"] });

// Opened from a draft case ("Upload slides into this case"): each finished
// upload is attached to that case, with the specimen/block label typed in its row.
const targetCase = new URLSearchParams(window.location.search).get("case");

sessionReady.then((session) => {
  if (!session || !targetCase) return;
  const heading = document.getElementById("upload-title");
  // The heading now holds a link; a later translation pass must not replace it.
  heading.removeAttribute("data-i18n");
  const [before, after = ""] = t("upload.title_into_case").split("{case}");
  heading.replaceChildren(
    before,
    el("a", { href: `/case?id=${encodeURIComponent(targetCase)}`, id: "back-to-case", text: targetCase.slice(0, 8) }),
    after,
  );
});

class CancelledError extends Error {
  constructor() {
    super("Cancelled");
    this.name = "CancelledError";
  }
}

/** The slide is on the server; adding it to the case failed with `cause`. */
class AttachError extends Error {
  constructor(cause) {
    super(cause.message);
    this.name = "AttachError";
    this.cause = cause;
  }
}

/** A request that got no answer at all: the connection, not the server, failed. */
function isNetworkError(err) {
  if (err instanceof ApiError) return err.status === 0 && err.code === "network";
  if (!err || !err.originalRequest) return false;
  return !err.originalResponse || err.originalResponse.getStatus() === 0;
}

/**
 * One upload's row in the list and its state. `series` ({ plan, count }) makes
 * it a DICOM series: `file` is then only its zip's name and size until the zip
 * is packed (see zipSeries).
 */
class UploadItem {
  constructor(file, series = null) {
    rowCount += 1;
    this.file = file;
    this.series = series;
    this.phase = "queued";
    this.cancelled = false;
    this.upload = null;
    this.slideId = null;
    this.attached = false;
    this.sentLabel = "";
    this.resumeAttempt = 0;
    this.resumeTimer = null;
    this.resumeNow = null;
    this.stopResumeWait = null;
    this.lastSent = 0;

    this.phaseEl = el("span", { class: "upload-phase", "aria-live": "polite" });
    this.progressEl = el("progress", { max: "100", value: "0", "aria-label": t("upload.progress_of", { name: file.name }) });
    this.percentEl = el("span", { class: "upload-percent", text: "0%" });
    this.bytesEl = el("span", { class: "upload-bytes" });
    this.noteEl = el("p", { class: "upload-note", "aria-live": "polite" });
    this.errorEl = el("p", { class: "upload-error", role: "alert" });
    this.actionsEl = el("div", { class: "upload-actions" });
    this.labelRow = null;
    this.labelInput = null;
    if (targetCase) {
      const id = `upload-label-${rowCount}`;
      this.labelInput = el("input", {
        id,
        type: "text",
        maxlength: String(MAX_LABEL_CHARS),
        autocomplete: "off",
        placeholder: t("upload.label.placeholder"),
      });
      this.labelSavedEl = el("span", { class: "saved", "aria-live": "polite" });
      this.labelInput.addEventListener("change", () => this.saveLabel());
      this.labelRow = el(
        "div",
        { class: "upload-label" },
        el("label", { for: id, text: t("upload.label.label") }),
        this.labelInput,
        el("span", { class: "hint", text: t("upload.label.hint") }),
        this.labelSavedEl,
      );
    }
    this.row = el(
      "li",
      { class: "upload-row" },
      el("span", { class: "upload-name", text: file.name }),
      series ? el("p", { class: "upload-note upload-series", text: t("upload.dicom.series_note", { count: series.count }) }) : null,
      this.phaseEl,
      el("div", { class: "upload-progress" }, this.progressEl, this.percentEl),
      this.bytesEl,
      this.actionsEl,
      this.labelRow,
      this.noteEl,
      this.errorEl,
    );
    this.lastDone = 0;
    this.setPhase("queued");
    this.setProgress(0);
  }

  setPhase(phase) {
    this.phase = phase;
    this.row.dataset.phase = phase;
    this.phaseEl.textContent = PHASES.includes(phase) ? t(`upload.phase.${phase}`) : phase;
    this.renderActions();
  }

  /** `done` bytes of the current phase; null shows an indeterminate bar. */
  setProgress(done) {
    const total = this.file.size;
    if (done === null) {
      this.progressEl.removeAttribute("value");
      this.percentEl.textContent = "";
      this.bytesEl.textContent = t("upload.processing_note");
      return;
    }
    this.lastDone = done;
    const fraction = total > 0 ? done / total : 1;
    const percent = Math.floor(fraction * 100);
    this.progressEl.value = percent;
    this.percentEl.textContent = `${percent}%`;
    const key = this.phase === "hashing" ? "upload.bytes.hashing" : this.phase === "queued" ? "upload.bytes.queued" : "upload.bytes.sent";
    this.bytesEl.textContent = t(key, { done: formatBytes(done), total: formatBytes(total) });
  }

  renderActions() {
    const buttons = [];
    const button = (text, onclick) => el("button", { type: "button", class: "button button-quiet button-small", onclick, text });
    if (this.phase === "waiting" && this.resumeNow) {
      buttons.push(button(t("upload.action.retry_now"), () => this.resumeNow && this.resumeNow()));
    }
    // Once the file is on the server there is nothing left to cancel.
    if (["queued", "hashing", "uploading"].includes(this.phase) || (this.phase === "waiting" && !this.slideId)) {
      buttons.push(button(t("upload.action.cancel"), () => this.cancel()));
    }
    if (this.phase === "error" && this.retryable) {
      buttons.push(button(t("upload.action.retry"), () => this.retry()));
    }
    if (this.phase === "done") {
      buttons.push(
        this.slideId
          ? el("a", { class: "button button-small open-viewer", href: viewerUrl(this.slideId), text: t("upload.action.open") })
          : el("a", { class: "button button-quiet button-small", href: "/", text: t("upload.action.slides") }),
      );
    }
    this.actionsEl.replaceChildren(...buttons);
  }

  fail(message, retryable) {
    this.retryable = retryable;
    this.noteEl.textContent = "";
    this.errorEl.textContent = message;
    this.setPhase("error");
    // Replace the indeterminate "processing" bar with how far it got.
    this.setProgress(this.lastDone);
  }

  /** Refused before anything was read or sent: no byte count to show. */
  refuse(message) {
    this.fail(message, false);
    this.bytesEl.textContent = "";
  }

  /**
   * Shows the row as waiting for the connection and resolves when it is time
   * to try again: after the next pause, when the browser is back online, or
   * when the user asks. Rejects with CancelledError if the upload is cancelled.
   */
  waitForConnection() {
    return new Promise((resolve, reject) => {
      const delay = RESUME_DELAYS[Math.min(this.resumeAttempt, RESUME_DELAYS.length - 1)];
      this.resumeAttempt += 1;
      const settle = (finish) => {
        clearTimeout(this.resumeTimer);
        this.resumeTimer = null;
        this.resumeNow = null;
        this.stopResumeWait = null;
        this.noteEl.textContent = "";
        finish();
      };
      this.resumeNow = () => settle(resolve);
      this.stopResumeWait = () => settle(() => reject(new CancelledError()));
      this.resumeTimer = setTimeout(this.resumeNow, delay);
      this.errorEl.textContent = "";
      this.noteEl.textContent = t("upload.waiting_note");
      this.setPhase("waiting");
    });
  }

  labelValue() {
    return this.labelInput ? this.labelInput.value.trim() : "";
  }

  /** A label changed after the slide joined the case is saved on its own. */
  async saveLabel() {
    if (this.labelSavedEl) this.labelSavedEl.textContent = "";
    if (!this.attached || !this.slideId) return;
    const label = this.labelValue();
    try {
      await api(`/api/v1/cases/${encodeURIComponent(targetCase)}/slides/${encodeURIComponent(this.slideId)}`, {
        method: "PUT",
        json: { label },
      });
      this.sentLabel = label;
      this.errorEl.textContent = "";
      this.labelSavedEl.textContent = t("upload.label.saved");
    } catch (err) {
      this.errorEl.textContent = t("upload.error.label", { reason: errorText(err) });
    }
  }

  async cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    const index = waiting.indexOf(this);
    if (index >= 0) waiting.splice(index, 1);
    this.errorEl.textContent = "";
    this.noteEl.textContent = "";
    this.setPhase("cancelled");
    if (this.stopResumeWait) this.stopResumeWait();
    // tus-js-client calls neither onSuccess nor onError after abort(), so
    // settle the waiting promise here to free the parallel slot.
    if (this.stopWaiting) this.stopWaiting();
    if (this.upload && !this.slideId) {
      // `true` also ends the upload on the server (tus termination) and
      // forgets the stored resume URL.
      try {
        await this.upload.abort(true);
      } catch {
        // The server will expire the upload on its own.
      }
    }
  }

  async retry() {
    // The session may have expired and been renewed since (new CSRF token).
    let session = null;
    try {
      session = await fetchSession();
    } catch (err) {
      this.errorEl.textContent = errorText(err);
      return;
    }
    if (!session) {
      // The stored resume URL survives the login round trip.
      redirectToLogin();
      return;
    }
    this.cancelled = false;
    this.upload = null;
    this.resumeAttempt = 0;
    this.errorEl.textContent = "";
    this.setPhase("queued");
    // A slide already on the server is only attached again, not sent again.
    this.setProgress(this.slideId ? this.file.size : 0);
    waiting.push(this);
    pump();
  }
}

/** SHA-256 of the whole file, read a slice at a time to keep memory flat. */
async function hashFile(item) {
  const hasher = await hashwasm.createSHA256();
  hasher.init();
  const { file } = item;
  for (let offset = 0; offset < file.size; offset += HASH_SLICE) {
    if (item.cancelled) throw new CancelledError();
    const end = Math.min(offset + HASH_SLICE, file.size);
    const buffer = await file.slice(offset, end).arrayBuffer();
    hasher.update(new Uint8Array(buffer));
    item.setProgress(end);
  }
  return hasher.digest("hex");
}

/**
 * Packs a DICOM series into its zip and returns the zip's SHA-256: one pass
 * over every instance computes their CRC-32s and the hash together. The row's
 * file becomes the zip, so a retry or resume later hashes that as any file.
 */
async function zipSeries(item) {
  const hasher = await hashwasm.createSHA256();
  hasher.init();
  item.file = await writeZip(item.series.plan, {
    createCrc32: () => hashwasm.createCRC32(),
    sink: (bytes) => hasher.update(bytes),
    progress: (done) => {
      if (item.cancelled) throw new CancelledError();
      item.setProgress(done);
    },
    sliceSize: HASH_SLICE,
  });
  item.series.packed = true;
  return hasher.digest("hex");
}

/** 4xx answers are final (bad file, no permission) except tus's "busy" ones. */
function shouldRetry(err) {
  const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
  if (status >= 400 && status < 500 && status !== 409 && status !== 423) return false;
  // Offline: no quick retries; the row waits for the connection instead.
  return navigator.onLine !== false;
}

function describeUploadError(err) {
  const response = err && err.originalResponse;
  if (response) {
    const status = response.getStatus();
    if (status === 401) return t("upload.error.session");
    if (status >= 500) return t("upload.error.server", { status });
    return messageFromErrorBody(response.getBody(), t("upload.error.refused", { status }));
  }
  return t("upload.error.failed", { reason: (err && err.message) || t("upload.phase.error") });
}

/**
 * Runs the tus upload; resolves with the new slide's id (or null). A request
 * that gets no answer leaves the row waiting for the connection, then resumes
 * the same upload; any answer the server refuses with ends it.
 */
function sendFile(item, sha256) {
  return new Promise((resolve, reject) => {
    const readSlideId = (response) => (response ? response.getHeader("Pathfed-Slide-Id") : null);
    const upload = new tus.Upload(item.file, {
      endpoint: TUS_ENDPOINT,
      chunkSize: CHUNK_SIZE,
      retryDelays: RETRY_DELAYS,
      headers: { "X-CSRF-Token": getCsrfToken() },
      metadata: { filename: item.file.name, sha256 },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onShouldRetry: shouldRetry,
      onProgress(sent, total) {
        // Bytes got through: the next loss of connection starts with a short pause again.
        if (sent > item.lastSent) item.resumeAttempt = 0;
        item.lastSent = sent;
        // Once the last byte is out, the final PATCH waits for the server to
        // verify and index the slide, which can take a while.
        if (total > 0 && sent >= total) {
          item.lastDone = total;
          item.setPhase("processing");
          item.setProgress(null);
        } else {
          // A retried request starts sending again after "processing".
          if (item.phase !== "uploading") item.setPhase("uploading");
          item.setProgress(sent);
        }
      },
      onAfterResponse(_request, response) {
        // Remember the id from whichever response carries it; after a retried
        // final request the success may come from a HEAD instead of the PATCH.
        const id = readSlideId(response);
        if (id) item.slideId = id;
      },
      onSuccess(payload) {
        resolve(readSlideId(payload && payload.lastResponse) || item.slideId);
      },
      onError(err) {
        if (item.cancelled) return;
        if (!isNetworkError(err)) {
          reject(err);
          return;
        }
        // start() again resumes from the upload's URL: the server says how much it has.
        item.waitForConnection().then(() => {
          if (item.cancelled) return;
          item.setPhase("uploading");
          item.setProgress(item.lastDone);
          upload.start();
        }, reject);
      },
    });
    item.upload = upload;
    item.stopWaiting = () => reject(new CancelledError());

    // Resume an earlier, interrupted upload of the same file when the browser
    // remembers one (a reload, a closed tab); tus-js-client falls back to a
    // fresh upload (with our new metadata) if the server no longer knows it.
    upload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) {
          previous.sort((a, b) => new Date(b.creationTime) - new Date(a.creationTime));
          upload.resumeFromPreviousUpload(previous[0]);
        }
      })
      .catch(() => {})
      .finally(() => {
        if (!item.cancelled) upload.start();
      });
  });
}

/** Attaches the uploaded slide to the case, with its label; waits out lost connections. */
async function attachToCase(item) {
  for (;;) {
    const label = item.labelValue();
    const body = { slide_id: item.slideId };
    if (label) body.label = label;
    try {
      await api(`/api/v1/cases/${encodeURIComponent(targetCase)}/slides`, { method: "POST", json: body });
      item.attached = true;
      item.sentLabel = label;
      // Typed while the request was on its way: saved on its own.
      if (item.labelValue() !== label) await item.saveLabel();
      return;
    } catch (err) {
      if (item.cancelled) throw new CancelledError();
      if (!isNetworkError(err)) throw new AttachError(err);
      await item.waitForConnection();
      item.setPhase("attaching");
    }
  }
}

/** Statuses after which trying again (and resuming) by hand makes sense. */
function isRetryableStatus(status) {
  // 0: no answer at all; 401/403: log in again, then resume; 409/423: busy.
  return status === 0 || status >= 500 || [401, 403, 409, 423].includes(status);
}

/**
 * Drops the browser's resume record for an upload the server has refused for
 * good, so picking the file again starts cleanly instead of probing a dead URL.
 */
async function forgetUpload(upload) {
  const storage = upload && upload.options.urlStorage;
  if (!storage || !upload.url) return;
  try {
    const previous = await upload.findPreviousUploads();
    await Promise.all(previous.filter((p) => p.uploadUrl === upload.url).map((p) => storage.removeUpload(p.urlStorageKey)));
  } catch {
    // Only housekeeping; a stale record costs one extra request later.
  }
}

async function runItem(item) {
  try {
    // A retry after a failed attach finds the slide already on the server.
    if (!item.slideId) {
      item.setPhase("hashing");
      item.setProgress(0);
      // Always hash, even when resuming: if the server has expired the earlier
      // upload, the new one must be created with the checksum again.
      const sha256 = item.series && !item.series.packed ? await zipSeries(item) : await hashFile(item);
      if (item.cancelled) throw new CancelledError();
      item.setPhase("uploading");
      item.setProgress(0);
      const slideId = await sendFile(item, sha256);
      item.slideId = slideId || null;
    }
    if (targetCase && item.slideId && !item.attached) {
      item.setPhase("attaching");
      item.setProgress(item.file.size);
      await attachToCase(item);
    }
    item.setPhase("done");
    item.setProgress(item.file.size);
  } catch (err) {
    if (item.cancelled || err instanceof CancelledError) return;
    if (err instanceof AttachError) {
      const status = err.cause instanceof ApiError ? err.cause.status : 0;
      item.fail(t("upload.error.attach", { reason: errorText(err.cause) }), status >= 500);
      return;
    }
    const status = err && err.originalResponse ? err.originalResponse.getStatus() : 0;
    const retryable = isRetryableStatus(status);
    if (!retryable) await forgetUpload(item.upload);
    item.fail(describeUploadError(err), retryable);
  }
}

/** Starts queued files while fewer than MAX_PARALLEL are in flight. */
function pump() {
  while (running < MAX_PARALLEL && waiting.length > 0) {
    const item = waiting.shift();
    if (item.cancelled) continue;
    running += 1;
    runItem(item).finally(() => {
      running -= 1;
      pump();
    });
  }
}

/** Puts a row at the top of the list; `queued` rows wait for their turn to upload. */
function show(item, queued = true) {
  items.push(item);
  listEl.prepend(item.row);
  if (queued) waiting.push(item);
}

/** The refusal of a series whose whole-slide instances use transfer syntaxes the server cannot decode. */
function syntaxRefusal(refused, total) {
  const syntax = refused
    .map(({ uid, name }) => {
      const shown = name || t("upload.dicom.unknown_syntax");
      return uid ? `${shown} (${uid})` : shown;
    })
    .join(", ");
  const count = refused.reduce((sum, entry) => sum + entry.count, 0);
  return t("upload.dicom.syntax_refused", { syntax, count, total });
}

/** One DICOM series: refused in its row when the server could not read it, else queued as one zip. */
function addSeries(group) {
  const count = group.instances.length;
  if (count === 1) {
    // The server refuses a lone instance too, but only once it has all its bytes.
    const item = new UploadItem(group.instances[0].file);
    show(item, false);
    item.refuse(t("upload.dicom.lone", { name: item.file.name }));
    return;
  }
  const plan = planZip(
    group.instances.map((instance) => instance.file),
    zipName(group),
  );
  const item = new UploadItem({ name: plan.name, size: plan.size }, { plan, count, packed: false });
  const refused = unreadableSyntaxes(group);
  show(item, refused.length === 0);
  if (refused.length) item.refuse(syntaxRefusal(refused, count));
}

async function addFiles(files) {
  const list = Array.from(files);
  if (list.length === 0) return;
  showError("");
  const session = await sessionReady;
  if (!session) return;
  // Reads the start of each file: DICOM ones are grouped by series, the rest go up alone.
  const { others, groups } = await groupDicom(list);
  for (const file of others) show(new UploadItem(file));
  for (const group of groups) addSeries(group);
  pump();
}

input.addEventListener("change", () => {
  addFiles(input.files);
  // Clearing lets the same file be picked again, e.g. after a failure.
  input.value = "";
});

// The browser says the network is back: every waiting row tries again now.
window.addEventListener("online", () => {
  for (const item of items) {
    if (item.resumeNow) item.resumeNow();
  }
});

// ---- Drag and drop -----------------------------------------------------

// dragenter/dragleave fire for every child element; count them so the
// highlight does not flicker while moving over the zone's text.
let dragDepth = 0;

dropzone.addEventListener("dragenter", (event) => {
  event.preventDefault();
  dragDepth += 1;
  dropzone.classList.add("dragover");
});

dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});

dropzone.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) dropzone.classList.remove("dragover");
});

dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  dropzone.classList.remove("dragover");
  const transfer = event.dataTransfer;
  let files = [];
  if (transfer.items) {
    // Folders show up as pseudo-files; skip them rather than fail on upload.
    for (const entry of Array.from(transfer.items)) {
      if (entry.kind !== "file") continue;
      const fsEntry = entry.webkitGetAsEntry ? entry.webkitGetAsEntry() : null;
      if (fsEntry && fsEntry.isDirectory) continue;
      const file = entry.getAsFile();
      if (file) files.push(file);
    }
  } else {
    files = Array.from(transfer.files);
  }
  if (files.length === 0) {
    showError(t("upload.error.folders"));
    return;
  }
  addFiles(files);
});

// A file dropped just outside the zone would otherwise make the browser
// navigate away to open it, abandoning running uploads.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (!dropzone.contains(event.target)) event.preventDefault();
  });
}

window.addEventListener("beforeunload", (event) => {
  if (items.some((item) => ACTIVE_PHASES.has(item.phase))) {
    event.preventDefault();
    // Older browsers want a returnValue to show the prompt.
    event.returnValue = "";
  }
});
