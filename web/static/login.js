// Login page: posts the credentials as JSON and goes on to `?next=` or `/`.
import { api, fetchSession, showError } from "/static/app.js";

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

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  if (!username.value.trim() || !password.value) {
    showError("Enter your username and password.");
    (username.value.trim() ? password : username).focus();
    return;
  }
  button.disabled = true;
  button.textContent = "Logging in…";
  try {
    await api("/api/v1/session", {
      method: "POST",
      json: { username: username.value.trim(), password: password.value },
    });
    window.location.assign(nextTarget());
  } catch (err) {
    showError(err.message);
    password.value = "";
    password.focus();
    button.disabled = false;
    button.textContent = "Log in";
  }
});

// Someone already logged in has nothing to do here.
fetchSession()
  .then((session) => {
    if (session) window.location.replace(nextTarget());
  })
  .catch(() => {
    // The form still works; a real failure shows up when they submit.
  });
