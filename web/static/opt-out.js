// Records a patient's opt-out from research use for the user's own hospital
// (submitters and admins). The server removes the patient's research data in
// the background; this page says what was recorded and when.
import { api, formatDate, requireSession, showError } from "/static/app.js";

const form = document.getElementById("opt-out-form");
const patient = document.getElementById("oo-patient");
const submit = document.getElementById("oo-submit");
const result = document.getElementById("opt-out-result");

function say(text) {
  result.textContent = text;
  result.hidden = !text;
}

async function record(event) {
  event.preventDefault();
  showError("");
  say("");
  const id = patient.value.trim();
  if (!id) {
    showError("Enter the patient id used at your hospital.");
    return;
  }
  submit.disabled = true;
  try {
    const recorded = await api("/api/v1/opt-outs", { method: "POST", json: { patient_id: id } });
    say(
      recorded.newly_recorded
        ? `Opt-out recorded for ${id} (${formatDate(recorded.recorded_at)}). Their research data is being deleted.`
        : `${id} has been opted out since ${formatDate(recorded.recorded_at)}. Any research data left is being deleted again.`,
    );
    form.reset();
  } catch (err) {
    showError(err.message);
  } finally {
    submit.disabled = false;
  }
}

const session = await requireSession({ active: "opt-out" });
if (session) {
  if (["submitter", "admin"].includes(session.user.role)) {
    form.hidden = false;
    form.addEventListener("submit", record);
    patient.focus();
  } else {
    showError("Only your hospital's submitters and admins record opt-outs.");
  }
}
