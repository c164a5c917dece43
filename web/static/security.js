// Account security, for every signed-in user: the second factor (an authenticator app, RFC 6238
// TOTP: set up with a QR code and a confirming code, which shows the one-time recovery codes
// once; turned off with a code where no policy requires it) and the password. A user who must
// have a second factor and has none lands here right after signing in: the server answers
// nothing else until they confirm one, and the page then leads on to pathfed.
import { ApiError, api, el, errorText, requireSession, showError, t } from "/static/app.js";

const SECOND_FACTOR_URL = "/api/v1/session/second-factor";
const PASSWORD_URL = "/api/v1/session/password";
const SVG_NS = "http://www.w3.org/2000/svg";

const byId = (id) => document.getElementById(id);
const enrolRequired = byId("enrol-required");
const totpSection = byId("totp-section");
const status = byId("totp-status");
const start = byId("totp-start");
const enrolForm = byId("totp-enrol");
const qr = byId("totp-qr");
const secretText = byId("totp-secret");
const code = byId("totp-code");
const confirm = byId("totp-confirm");
const done = byId("totp-done");
const recoveryList = byId("recovery-codes");
const disableForm = byId("totp-disable-form");
const disableCode = byId("totp-disable-code");
const disableButton = byId("totp-disable");
const requiredNote = byId("totp-required-note");
const passwordSection = byId("password-section");
const passwordForm = byId("password-form");
const currentPassword = byId("current-password");
const newPassword = byId("new-password");
const passwordSave = byId("password-save");
const passwordMessage = byId("password-message");
const passwordDetail = byId("password-detail");

/** The code as the server wants it: apps show the digits in groups ("123 456"). */
const typed = (input) => input.value.replace(/\s+/g, "");

/** A base32 secret in groups of four, as people copy it into an app by hand. */
const grouped = (secret) => (secret.match(/.{1,4}/g) || []).join(" ");

/** What the server answered with, as an error code ("" for anything else). */
const codeOf = (err) => (err instanceof ApiError ? err.code : "");

/**
 * The QR code's SVG as a node of this page. The server draws it from a fixed template, but
 * markup from a response is still parsed as an SVG document (never as HTML) and anything that
 * could run or fetch is dropped before it joins the page.
 */
function svgNode(markup) {
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml");
  const svg = parsed.documentElement;
  if (parsed.getElementsByTagName("parsererror").length || svg.namespaceURI !== SVG_NS || svg.localName !== "svg") {
    return null;
  }
  for (const node of [...svg.querySelectorAll("script, foreignObject, image, use")]) node.remove();
  for (const node of [svg, ...svg.querySelectorAll("*")]) {
    for (const attr of [...node.attributes]) {
      if (/^on/i.test(attr.name) || /href$/i.test(attr.name)) node.removeAttribute(attr.name);
    }
  }
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  return document.adoptNode(svg);
}

/** Draws the second-factor part for `enrolled`; `required` says a policy keeps it on. */
function showSecondFactor({ enrolled, required }) {
  totpSection.hidden = false;
  status.textContent = t(enrolled ? "security.totp.on" : "security.totp.off");
  status.classList.toggle("on", enrolled);
  // Starting again would replace the secret in force before a new one is confirmed, so an
  // enrolled user turns the factor off first (or an admin resets it).
  start.hidden = enrolled;
  disableForm.hidden = !enrolled || required;
  requiredNote.hidden = !(enrolled && required);
}

async function beginEnrolment() {
  showError("");
  start.disabled = true;
  try {
    const enrolment = await api(SECOND_FACTOR_URL, { method: "POST" });
    const svg = svgNode(enrolment.qr_svg || "");
    qr.replaceChildren(...(svg ? [svg] : []));
    qr.hidden = !svg;
    secretText.textContent = grouped(enrolment.secret || "");
    start.hidden = true;
    enrolForm.hidden = false;
    code.value = "";
    code.focus();
  } catch (err) {
    showError(err);
  } finally {
    start.disabled = false;
  }
}

async function confirmEnrolment(event) {
  event.preventDefault();
  showError("");
  const answer = typed(code);
  if (!answer) {
    showError(t("security.totp.code_missing"));
    code.focus();
    return;
  }
  confirm.disabled = true;
  try {
    const confirmed = await api(`${SECOND_FACTOR_URL}/confirm`, { method: "POST", json: { code: answer } });
    // The secret has done its work; it should not stay on screen.
    enrolForm.hidden = true;
    qr.replaceChildren();
    secretText.textContent = "";
    code.value = "";
    recoveryList.replaceChildren(...(confirmed.recovery_codes || []).map((c) => el("li", {}, el("code", { text: c }))));
    showSecondFactor({ enrolled: true, required: false });
    // Turning it off is offered on the next visit; now is for the recovery codes.
    disableForm.hidden = true;
    enrolRequired.hidden = true;
    done.hidden = false;
    byId("totp-continue").focus();
  } catch (err) {
    showError(err);
    code.value = "";
    code.focus();
  } finally {
    confirm.disabled = false;
  }
}

async function turnOff(event) {
  event.preventDefault();
  showError("");
  const answer = typed(disableCode);
  if (!answer) {
    showError(t("security.totp.code_missing"));
    disableCode.focus();
    return;
  }
  disableButton.disabled = true;
  try {
    await api(SECOND_FACTOR_URL, { method: "DELETE", json: { code: answer } });
    disableCode.value = "";
    showSecondFactor({ enrolled: false, required: false });
    status.textContent = t("security.totp.disabled");
  } catch (err) {
    showError(err);
    disableCode.value = "";
    if (codeOf(err) === "second_factor_required_by_policy") {
      showSecondFactor({ enrolled: true, required: true });
    } else {
      disableCode.focus();
    }
  } finally {
    disableButton.disabled = false;
  }
}

/** Shows the outcome of a password change under the form: `ok` as a notice, else an alert. */
function passwordOutcome(text, ok, detail = "") {
  passwordMessage.textContent = text;
  passwordMessage.className = ok ? "notice" : "alert";
  passwordMessage.hidden = !text;
  // The server names the rule a refused password breaks, in its own words.
  passwordDetail.textContent = detail;
  passwordDetail.hidden = !detail;
}

async function changePassword(event) {
  event.preventDefault();
  passwordOutcome("", false);
  if (!currentPassword.value || !newPassword.value) {
    passwordOutcome(t("security.password.missing"), false);
    (currentPassword.value ? newPassword : currentPassword).focus();
    return;
  }
  passwordSave.disabled = true;
  try {
    await api(PASSWORD_URL, {
      method: "PUT",
      json: { current_password: currentPassword.value, new_password: newPassword.value },
    });
    passwordForm.reset();
    passwordOutcome(t("security.password.changed"), true);
  } catch (err) {
    const weak = codeOf(err) === "weak_password";
    passwordOutcome(errorText(err), false, weak && err.message ? err.message : "");
    if (codeOf(err) === "invalid_credentials") {
      currentPassword.value = "";
      currentPassword.focus();
    } else {
      newPassword.select();
      newPassword.focus();
    }
  } finally {
    passwordSave.disabled = false;
  }
}

const session = await requireSession({ active: "security", areas: ["security"] });
if (session) {
  const enrolling = Boolean(session.second_factor_enrolment_required);
  enrolRequired.hidden = !enrolling;
  showSecondFactor({
    enrolled: Boolean(session.user.second_factor),
    required: enrolling || session.second_factor_required === true,
  });
  passwordSection.hidden = false;
  start.addEventListener("click", beginEnrolment);
  enrolForm.addEventListener("submit", confirmEnrolment);
  disableForm.addEventListener("submit", turnOff);
  passwordForm.addEventListener("submit", changePassword);
  byId("recovery-print").addEventListener("click", () => window.print());
  if (enrolling) start.focus();
}
