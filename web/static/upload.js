// Upload page: hash each file locally (SHA-256, so the server can verify the
// assembled file), then send it with the tus resumable protocol. Uses the
// globals `hashwasm` and `tus` from the vendor scripts loaded by upload.html.
import {
  api,
  el,
  fetchSession,
  formatBytes,
  getCsrfToken,
  messageFromErrorBody,
  redirectToLogin,
  requireSession,
  showError,
  viewerUrl,
} from "/static/app.js";

const TUS_ENDPOINT = "/api/v1/uploads";
const MAX_PARALLEL = 2;
// Large enough that per-request overhead is small, small enough that a lost
// connection only costs a few seconds of resending.
const CHUNK_SIZE = 8 * 1024 * 1024;
// Hashing reads this much of the file into memory at a time.
const HASH_SLICE = 16 * 1024 * 1024;
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000];

// Phases in which leaving the page would lose work.
const ACTIVE_PHASES = new Set(["queued", "hashing", "uploading", "processing"]);
const PHASE_LABELS = {
  queued: "Queued",
  hashing: "Hashing",
  uploading: "Uploading",
  processing: "Processing",
  done: "Done",
  error: "Error",
  cancelled: "Cancelled",
};

const listEl = document.getElementById("upload-list");
const input = document.getElementById("file-input");
const dropzone = document.getElementById("dropzone");

const items = [];
const waiting = [];
let running = 0;

// Files picked before the session check finishes wait for it: every tus
// request needs the CSRF token that comes with the session.
const sessionReady = requireSession({ active: "upload" });

// Opened from a draft case ("Upload slides into this case"): each finished
// upload is attached to that case.
const targetCase = new URLSearchParams(window.location.search).get("case");
if (targetCase) {
  const heading = document.querySelector("h1");
  if (heading) {
    heading.replaceChildren(
      "Upload slides into case ",
      el("a", { href: `/case?id=${encodeURIComponent(targetCase)}`, id: "back-to-case", text: targetCase.slice(0, 8) }),
    );
  }
}

async function attachToCase(slideId) {
  await api(`/api/v1/cases/${encodeURIComponent(targetCase)}/slides`, { method: "POST", json: { slide_id: slideId } });
}

class CancelledError extends Error {
  constructor() {
    super("Cancelled");
    this.name = "CancelledError";
  }
}

/** One file's row in the list and its state. */
class UploadItem {
  constructor(file) {
    this.file = file;
    this.phase = "queued";
    this.cancelled = false;
    this.upload = null;
    this.slideId = null;

    this.phaseEl = el("span", { class: "upload-phase", "aria-live": "polite" });
    this.progressEl = el("progress", { max: "100", value: "0", "aria-label": `Progress of ${file.name}` });
    this.percentEl = el("span", { class: "upload-percent", text: "0%" });
    this.bytesEl = el("span", { class: "upload-bytes" });
    this.errorEl = el("p", { class: "upload-error", role: "alert" });
    this.actionsEl = el("div", { class: "upload-actions" });
    this.row = el(
      "li",
      { class: "upload-row" },
      el("span", { class: "upload-name", text: file.name }),
      this.phaseEl,
      el("div", { class: "upload-progress" }, this.progressEl, this.percentEl),
      this.bytesEl,
      this.actionsEl,
      this.errorEl,
    );
    this.lastDone = 0;
    this.setPhase("queued");
    this.setProgress(0);
  }

  setPhase(phase) {
    this.phase = phase;
    this.row.dataset.phase = phase;
    this.phaseEl.textContent = PHASE_LABELS[phase] || phase;
    this.renderActions();
  }

  /** `done` bytes of the current phase; null shows an indeterminate bar. */
  setProgress(done) {
    const total = this.file.size;
    if (done === null) {
      this.progressEl.removeAttribute("value");
      this.percentEl.textContent = "";
      this.bytesEl.textContent = "Processing on the server…";
      return;
    }
    this.lastDone = done;
    const fraction = total > 0 ? done / total : 1;
    const percent = Math.floor(fraction * 100);
    this.progressEl.value = percent;
    this.percentEl.textContent = `${percent}%`;
    const verb = this.phase === "hashing" ? "hashed" : this.phase === "queued" ? "waiting" : "sent";
    this.bytesEl.textContent = `${formatBytes(done)} / ${formatBytes(total)} ${verb}`;
  }

  renderActions() {
    const buttons = [];
    if (this.phase === "queued" || this.phase === "hashing" || this.phase === "uploading") {
      buttons.push(el("button", { type: "button", class: "button button-quiet button-small", onclick: () => this.cancel(), text: "Cancel" }));
    }
    if (this.phase === "error" && this.retryable) {
      buttons.push(el("button", { type: "button", class: "button button-quiet button-small", onclick: () => this.retry(), text: "Retry" }));
    }
    if (this.phase === "done") {
      buttons.push(
        this.slideId
          ? el("a", { class: "button button-small open-viewer", href: viewerUrl(this.slideId), text: "Open in viewer" })
          : el("a", { class: "button button-quiet button-small", href: "/", text: "Go to slides" }),
      );
    }
    this.actionsEl.replaceChildren(...buttons);
  }

  fail(message, retryable) {
    this.retryable = retryable;
    this.errorEl.textContent = message;
    this.setPhase("error");
    // Replace the indeterminate "processing" bar with how far it got.
    this.setProgress(this.lastDone);
  }

  async cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    const index = waiting.indexOf(this);
    if (index >= 0) waiting.splice(index, 1);
    this.errorEl.textContent = "";
    this.setPhase("cancelled");
    // tus-js-client calls neither onSuccess nor onError after abort(), so
    // settle the waiting promise here to free the parallel slot.
    if (this.stopWaiting) this.stopWaiting();
    if (this.upload) {
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
      this.errorEl.textContent = err.message;
      return;
    }
    if (!session) {
      // The stored resume URL survives the login round trip.
      redirectToLogin();
      return;
    }
    this.cancelled = false;
    this.upload = null;
    this.errorEl.textContent = "";
    this.setPhase("queued");
    this.setProgress(0);
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

/** 4xx answers are final (bad file, no permission) except tus's "busy" ones. */
function shouldRetry(err) {
  const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
  if (status >= 400 && status < 500 && status !== 409 && status !== 423) return false;
  return navigator.onLine !== false;
}

function describeUploadError(err) {
  const response = err && err.originalResponse;
  if (response) {
    const status = response.getStatus();
    return messageFromErrorBody(response.getBody(), `The server refused the upload (HTTP ${status}).`);
  }
  if (err && err.originalRequest) {
    return "The connection to the server was lost. Retry to resume where the upload stopped.";
  }
  return (err && err.message) || "The upload failed.";
}

/** Runs the tus upload; resolves with the new slide's id (or null). */
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
      onError: reject,
    });
    item.upload = upload;
    item.stopWaiting = () => reject(new CancelledError());

    // Resume an earlier, interrupted upload of the same file when the browser
    // remembers one; tus-js-client falls back to a fresh upload (with our new
    // metadata) if the server no longer knows it.
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

/** Statuses after which trying again (and resuming) makes sense. */
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
    item.setPhase("hashing");
    item.setProgress(0);
    // Always hash, even when resuming: if the server has expired the earlier
    // upload, the new one must be created with the checksum again.
    const sha256 = await hashFile(item);
    if (item.cancelled) throw new CancelledError();
    item.setPhase("uploading");
    item.setProgress(0);
    const slideId = await sendFile(item, sha256);
    item.slideId = slideId || null;
    if (targetCase && slideId) await attachToCase(slideId);
    item.setPhase("done");
    item.setProgress(item.file.size);
  } catch (err) {
    if (item.cancelled || err instanceof CancelledError) return;
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

async function addFiles(files) {
  const list = Array.from(files);
  if (list.length === 0) return;
  showError("");
  const session = await sessionReady;
  if (!session) return;
  for (const file of list) {
    const item = new UploadItem(file);
    items.push(item);
    waiting.push(item);
    listEl.prepend(item.row);
  }
  pump();
}

input.addEventListener("change", () => {
  addFiles(input.files);
  // Clearing lets the same file be picked again, e.g. after a failure.
  input.value = "";
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
    showError("Drop files, not folders.");
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
