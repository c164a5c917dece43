// Login page: posts the credentials as JSON and goes on to `?next=` or `/`. An account with a
// second factor is asked for its one-time code once the password is right (the same form sends
// all three); an account that must have one and has none goes to /security to set it up.
import { ApiError, api, fetchSession, initI18n, lang, showError, t, useLanguage } from "/static/app.js";

/** Where a user who must set up a second factor before anything else is sent. */
const SECURITY_PAGE = "/security";

/**
 * Only same-site paths are accepted as `next`, so a crafted login link cannot
 * send the user to another site after they sign in.
 */
function nextTarget() {
  const next = new URLSearchParams(window.location.search).get("next");
  if (next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")) {
    return next;
  }
  return "/";
}

const form = document.getElementById("login-form");
const button = document.getElementById("login-button");
const username = document.getElementById("username");
const password = document.getElementById("password");
const languages = document.getElementById("lang-select");
const codeRow = document.getElementById("code-row");
const code = document.getElementById("code");

/** Shows the one-time code field (the server asked for it) and puts the cursor there. */
function askForCode() {
  codeRow.hidden = false;
  code.value = "";
  code.focus();
}

/** Where to go once signed in: the security page first when a second factor must be set up. */
function afterSignIn(session) {
  return session && session.second_factor_enrolment_required ? SECURITY_PAGE : nextTarget();
}

// Before anyone signs in, the choice lives in this browser; once signed in, the nav's switch
// saves it with the user.
languages.addEventListener("change", () => {
  showError("");
  useLanguage(languages.value);
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  if (!username.value.trim() || !password.value) {
    showError(t("login.missing"));
    (username.value.trim() ? password : username).focus();
    return;
  }
  const asking = !codeRow.hidden;
  // Spaces are how apps group the digits on screen; the server wants the code alone.
  const typedCode = code.value.replace(/\s+/g, "");
  if (asking && !typedCode) {
    showError(t("login.code_missing"));
    code.focus();
    return;
  }
  button.disabled = true;
  button.textContent = t("login.submitting");
  const credentials = { username: username.value.trim(), password: password.value };
  if (asking) credentials.code = typedCode;
  try {
    const session = await api("/api/v1/session", { method: "POST", json: credentials });
    window.location.assign(afterSignIn(session));
  } catch (err) {
    button.disabled = false;
    button.textContent = t("login.submit");
    const answer = err instanceof ApiError ? err.code : "";
    if (answer === "second_factor_required") {
      // The password was right: it stays for the second send, with the code.
      askForCode();
      return;
    }
    showError(err);
    if (answer === "invalid_second_factor") {
      askForCode();
      return;
    }
    // Anything else starts over from the password (another user may be at the keyboard).
    codeRow.hidden = true;
    code.value = "";
    password.value = "";
    password.focus();
  }
});

await initI18n(["login"]);
languages.value = lang();

// Someone already logged in has nothing to do here.
fetchSession()
  .then((session) => {
    if (session) window.location.replace(afterSignIn(session));
  })
  .catch(() => {
    // The form still works; a real failure shows up when they submit.
  });
