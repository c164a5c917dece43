// End-to-end browser test of the administration console (/admin), in Japanese.
//
// Run from the repository root:   node web/tests/browser-admin.mjs
//
// The platform admin (made by `pathfed admin init`) signs in with a browser that speaks ja-JP,
// is sent to set up a second factor first, and then opens the console from the nav bar's
// 管理 link. The console speaks Japanese on every tab. The admin adds a pathologist through
// the form and sees them listed, then disables them; a token of theirs made on the command line
// is listed and revoked in the page; the audit log search finds the row of the user's creation
// (also within today's dates on the hospital's clock, and not before them), its CSV download
// holds it too, and the tamper check says the log is intact.
//
// Environment: see web/tests/harness.mjs.

import { readFile } from "node:fs/promises";

import {
  T,
  check,
  checkLanguage,
  enrolSecondFactor,
  makeDataDir,
  navLinks,
  page,
  passwordFile,
  run,
  runTest,
  screenshot,
  setLang,
  signIn,
  startServerAndBrowser,
  step,
  textPattern,
  TIME_ZONE,
  waitForText,
  waitInPage,
} from "./harness.mjs";

const LOCALE = "ja-JP";
const ADMIN = "admin";
const NEW_USER = "path1";
/** A first password the policy accepts: long, and nothing a dictionary guesses. */
const NEW_PASSWORD = "Violet-Harbor-Compass-2718";
const TOKEN_NAME = "scanner-7";

/** The calendar date on the hospitals' clock, `daysAgo` days back, as a date input takes it. */
function hospitalDate(daysAgo = 0) {
  // en-CA writes dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { timeZone: TIME_ZONE }).format(new Date(Date.now() - daysAgo * 86_400_000));
}

/** Waits until the text of `selector` (inside the page) is `want`. */
async function waitForCell(description, selector, want) {
  await waitInPage(
    description,
    ({ selector: s, want: w }) => (document.querySelector(s)?.textContent || "").trim() === w,
    { selector, want },
    10_000,
  );
}

/** Waits until the audit results shown answer a search with (or without) a start and an end
 * date, as `dates` says ({ from: true, to: true }). */
async function waitForSearch(description, dates) {
  await waitInPage(
    description,
    ({ from, to }) => {
      const query = new URLSearchParams(document.getElementById("audit-results")?.dataset.query || "");
      return query.has("from") === from && query.has("to") === to && query.has("actor");
    },
    dates,
    10_000,
  );
}

async function main() {
  setLang("ja");
  const env = await makeDataDir();
  const [password, file] = await passwordFile(ADMIN);
  await run(["admin", "init", "--hospital", "Test Hub", "--kind", "hub", "--user", ADMIN, "--password-file", file], env);
  const base = await startServerAndBrowser(env);

  // -- An admin sets up a second factor before anything else.
  await signIn(base, ADMIN, password, { locale: LOCALE, enrol: true });
  await enrolSecondFactor();

  // -- The console, from the nav bar.
  await page.goto(`${base}/`);
  const links = await navLinks();
  check(links.includes(T("common.nav.admin")), `the platform admin's navigation has no ${T("common.nav.admin")}: ${links}`);
  await Promise.all([page.waitForURL(/\/admin(#\w*)?$/, { timeout: 15_000 }), page.click('#app-nav a[href="/admin"]')]);
  await page.locator("#admin-console").waitFor({ state: "visible", timeout: 10_000 });
  await page.locator(".hospital-form").first().waitFor({ timeout: 10_000 });
  await checkLanguage("admin (hospitals)");
  check(((await page.textContent("h1")) || "").trim() === T("admin.title"), "the console's heading");
  const usage = ((await page.textContent(".hospital-usage")) || "").trim();
  check(textPattern("admin.hospitals.usage_unlimited", {}, { whole: true }).test(usage), `the hospital's upload usage reads "${usage}"`);
  await screenshot("admin-hospitals");

  // -- A pathologist added through the form, listed, then disabled.
  await page.click("#tab-users");
  await page.locator(`#users-table tr[data-username="${ADMIN}"]`).waitFor({ timeout: 10_000 });
  await page.fill("#new-username", NEW_USER);
  await page.selectOption("#new-role", "pathologist");
  await page.fill("#new-password", NEW_PASSWORD);
  await page.click("#user-create");
  const row = `#users-table tr[data-username="${NEW_USER}"]`;
  await page.locator(row).waitFor({ timeout: 10_000 });
  await waitForText("the confirmation of the new user", "admin-status", textPattern("admin.users.created", { user: NEW_USER }));
  check((await page.inputValue(`${row} select.user-role`)) === "pathologist", "the new user is not listed as a pathologist");
  check(((await page.textContent(`${row} .user-state`)) || "").trim() === T("admin.users.state.active"), "the new user is not listed as active");
  await checkLanguage("admin (users)");
  // The admin's own row offers no way to disable or demote themselves.
  check(await page.isDisabled(`#users-table tr[data-username="${ADMIN}"] .user-disable`), "the admin could disable themselves");
  step(`  ${NEW_USER} added and listed`);

  await page.click(`${row} .user-disable`); // the confirmation dialog is accepted by the harness
  await waitForCell("the user to be listed as disabled", `${row} .user-state`, T("admin.users.state.disabled"));
  await page.locator(`${row} .user-enable`).waitFor({ timeout: 10_000 });
  await screenshot("admin-users");
  step(`  ${NEW_USER} disabled`);

  // -- A token made on the command line, revoked in the page.
  await run(["admin", "token", "create", "--user", NEW_USER, "--name", TOKEN_NAME], env);
  await page.click("#tab-tokens");
  const tokenRow = page.locator("#tokens-table tr", { has: page.locator(".token-name", { hasText: TOKEN_NAME }) });
  await tokenRow.waitFor({ timeout: 10_000 });
  check(((await tokenRow.locator(".token-state").textContent()) || "").trim() === T("admin.tokens.state.active"), "the new token is not listed as active");
  await checkLanguage("admin (tokens)");
  await tokenRow.locator(".token-revoke").click();
  await waitForText("the confirmation of the revocation", "admin-status", textPattern("admin.tokens.revoked", { name: TOKEN_NAME, user: NEW_USER }));
  check(((await tokenRow.locator(".token-state").textContent()) || "").trim() === T("admin.tokens.state.revoked"), "the token is not listed as revoked");
  check((await tokenRow.locator(".token-revoke").count()) === 0, "a revoked token still offers to be revoked");
  step(`  the token ${TOKEN_NAME} of ${NEW_USER} revoked`);

  // -- The failed jobs tab: nothing has failed.
  await page.click("#tab-jobs");
  await page.locator("#no-jobs").waitFor({ timeout: 10_000 });
  check(((await page.textContent("#no-jobs")) || "").trim() === T("admin.jobs.empty"), "the empty list of failed jobs");

  // -- The audit log: the row of the user's creation, by user and action, and by date.
  await page.click("#tab-audit");
  await page.fill("#audit-actor", ADMIN);
  await page.fill("#audit-action", "admin.user.create");
  await page.click("#audit-search");
  const created = page.locator("#audit-table tr", { has: page.locator(".audit-target", { hasText: `user:${NEW_USER}` }) });
  await created.first().waitFor({ timeout: 10_000 });
  check(((await created.first().locator(".audit-outcome").textContent()) || "").trim() === T("admin.outcome.ok"), "the creation's outcome");
  const when = ((await created.first().locator("td").first().textContent()) || "").trim();
  check(/^\d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2} JST$/.test(when), `the creation's time reads "${when}"`);
  await checkLanguage("admin (audit)");

  // The CSV comes by POST (the filters stay out of the URL) and downloads as a file.
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: 15_000 }), page.click("#audit-csv")]);
  const csvName = download.suggestedFilename();
  check(/^audit-.*\.csv$/.test(csvName), `the CSV download is named "${csvName}"`);
  const csvText = await readFile(await download.path(), "utf8");
  const csvLines = csvText.split("\r\n").filter((line) => line.includes(`user:${NEW_USER}`));
  check(csvLines.length > 0, `the CSV does not hold the creation: ${csvText.slice(0, 300)}`);
  check(csvLines.every((line) => line.includes("admin.user.create")), `the CSV does not carry the search's filters: ${csvLines.join(" | ")}`);
  step("  the search and its CSV find the creation");

  const today = hospitalDate();
  await page.fill("#audit-from", today);
  await page.fill("#audit-to", today);
  await page.click("#audit-search");
  await waitForSearch("today's search", { from: true, to: true });
  await waitForText("today's search", "audit-count", textPattern("admin.audit.count", { n: /[1-9]\d*/ }, { whole: true }));
  await created.first().waitFor({ timeout: 10_000 });
  await page.fill("#audit-from", "");
  await page.fill("#audit-to", hospitalDate(1));
  await page.click("#audit-search");
  await waitForSearch("the search up to yesterday", { from: false, to: true });
  await waitForText("the search up to yesterday", "audit-count", textPattern("admin.audit.count", { n: 0 }, { whole: true }));
  check((await created.count()) === 0, "a search up to yesterday still finds today's creation");
  step(`  by date on the hospital's clock: found on ${today}, not up to the day before`);

  // -- The tamper check.
  await page.click("#audit-verify");
  await page.locator('#audit-verify-result[data-intact="true"]').waitFor({ timeout: 15_000 });
  const verdict = ((await page.textContent("#audit-verify-result")) || "").trim();
  check(textPattern("admin.audit.verify_intact", {}, { whole: true }).test(verdict), `the tamper check reads "${verdict}"`);
  await checkLanguage("admin (audit)");
  await screenshot("admin-audit");
  step("the console: users, tokens, failed jobs and the audit log in Japanese");
}

await runTest("admin", main);
