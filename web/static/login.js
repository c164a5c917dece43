// Login page: posts the credentials as JSON and goes on to `?next=` or `/`.
import { api, fetchSession, initI18n, lang, showError, t, useLanguage } from "/static/app.js";

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
  button.disabled = true;
  button.textContent = t("login.submitting");
  try {
    await api("/api/v1/session", {
      method: "POST",
      json: { username: username.value.trim(), password: password.value },
    });
    window.location.assign(nextTarget());
  } catch (err) {
    showError(err);
    password.value = "";
    password.focus();
    button.disabled = false;
    button.textContent = t("login.submit");
  }
});

await initI18n(["login"]);
languages.value = lang();

// Someone already logged in has nothing to do here.
fetchSession()
  .then((session) => {
    if (session) window.location.replace(nextTarget());
  })
  .catch(() => {
    // The form still works; a real failure shows up when they submit.
  });
