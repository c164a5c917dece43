//! The second factor (TOTP) through the API, as a browser and an authenticator app use it:
//! enrolment with a QR code and recovery codes; sign-in that then needs a code, each code
//! good once, wrong codes counted toward the lockout; admins (and everyone in a hospital whose
//! policy says so) kept to the enrolment until they have one, signed out when the policy or an
//! admin's reset concerns them; a hospital asking for a fresh code to sign a case out or amend
//! its report; and an API token that cannot act on another user's session cookie.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::people::{read, staff};
use crate::support::totp::{Authenticator, Browser, enrol};
use crate::support::{
    As, BACKENDS, Backend, TestServer, client, password, submit_case, synth_slide,
};

const SESSION: &str = "/api/v1/session";
const SECOND_FACTOR: &str = "/api/v1/session/second-factor";

/// The audit rows, as "action target outcome detail".
async fn audit_rows(server: &TestServer) -> Vec<String> {
    let db = server.db().await;
    pathfed_core::audit::recent(&db, 500)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.event.action, r.event.target, r.event.outcome, r.event.detail
            )
        })
        .collect()
}

fn has_row(rows: &[String], prefix: &str) -> bool {
    rows.iter().any(|r| r.starts_with(prefix))
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn enrolment_then_every_sign_in_needs_a_fresh_code() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        server.user("Hub S", "hub", "tfa_path", "pathologist");
        let pw = password("tfa_path");

        // Without a second factor the password signs in, fully.
        let mut browser = Browser::new(&server);
        let (status, body) = browser.sign_in("tfa_path", &pw, None).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["second_factor_enrolment_required"], false, "{body}");
        assert_eq!(body["user"]["second_factor"], false, "{body}");

        // Enrolment shows the secret, its otpauth URI and a QR code of it.
        let (status, started) = browser.call(Method::POST, SECOND_FACTOR, None).await;
        assert_eq!(status, 200, "{backend:?}: {started}");
        let secret = started["secret"].as_str().unwrap();
        assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");
        let uri = started["otpauth_uri"].as_str().unwrap();
        assert!(
            uri.starts_with("otpauth://totp/pathfed:tfa_path?")
                && uri.contains(&format!("secret={secret}"))
                && uri.contains("issuer=pathfed"),
            "{uri}"
        );
        assert!(started["qr_svg"].as_str().unwrap().contains("<svg"));
        let app = Authenticator::new(secret);

        // Not in force until confirmed: a wrong code does not confirm it.
        let (status, body) = browser
            .call(
                Method::POST,
                &format!("{SECOND_FACTOR}/confirm"),
                Some(json!({"code": app.wrong_code(&server)})),
            )
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (400, "invalid_second_factor"),
            "{body}"
        );
        let (status, body) = Browser::new(&server).sign_in("tfa_path", &pw, None).await;
        assert_eq!(
            status, 200,
            "{backend:?}: unconfirmed, not in force: {body}"
        );

        let (status, confirmed) = browser
            .call(
                Method::POST,
                &format!("{SECOND_FACTOR}/confirm"),
                Some(json!({"code": app.next_code(&server)})),
            )
            .await;
        assert_eq!(status, 200, "{backend:?}: {confirmed}");
        let recovery: Vec<String> = confirmed["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(recovery.len(), 10, "{confirmed}");
        for code in &recovery {
            assert!(
                code.len() == 14
                    && code.split('-').count() == 3
                    && code.split('-').all(|part| part.len() == 4),
                "{code}"
            );
        }
        let (_, me) = browser.call(Method::GET, SESSION, None).await;
        assert_eq!(me["user"]["second_factor"], true, "{me}");
        // A second factor in force is not replaced by starting again.
        let (status, body) = browser.call(Method::POST, SECOND_FACTOR, None).await;
        assert_eq!(status, 409, "{backend:?}: {body}");

        // Now the password alone is not enough: the page is told to ask for the code.
        let mut other = Browser::new(&server);
        let (status, body) = other.sign_in("tfa_path", &pw, None).await;
        assert_eq!(
            (status, code_of(&body)),
            (401, "second_factor_required"),
            "{backend:?}: {body}"
        );
        let (status, body) = other
            .sign_in("tfa_path", &pw, Some(&app.wrong_code(&server)))
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (401, "invalid_second_factor"),
            "{body}"
        );
        // A right code with a wrong password is a wrong password.
        let code = app.next_code(&server);
        let (status, body) = other
            .sign_in("tfa_path", "wrong-password-1", Some(&code))
            .await;
        assert_eq!((status, code_of(&body)), (401, "invalid_credentials"));
        let (status, body) = other.sign_in("tfa_path", &pw, Some(&code)).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["second_factor_enrolment_required"], false);
        assert_eq!(other.call(Method::GET, SESSION, None).await.0, 200);

        // The same code again (a code seen over a shoulder) is refused.
        let (status, body) = Browser::new(&server)
            .sign_in("tfa_path", &pw, Some(&code))
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (401, "invalid_second_factor"),
            "{backend:?}: replayed: {body}"
        );

        // A recovery code works once, typed in capitals and without hyphens too.
        let typed = recovery[0].replace('-', "").to_uppercase();
        let (status, body) = Browser::new(&server)
            .sign_in("tfa_path", &pw, Some(&typed))
            .await;
        assert_eq!(status, 200, "{backend:?}: recovery code: {body}");
        let (status, _) = Browser::new(&server)
            .sign_in("tfa_path", &pw, Some(&recovery[0]))
            .await;
        assert_eq!(status, 401, "{backend:?}: a recovery code works once");
        let (status, _) = Browser::new(&server)
            .sign_in("tfa_path", &pw, Some(&recovery[1]))
            .await;
        assert_eq!(status, 200, "{backend:?}: the others still work");

        // The secret is stored sealed, never in clear.
        let db = server.db().await;
        let stored: String =
            sqlx::query_scalar("SELECT totp_secret FROM users WHERE username = $1")
                .bind("tfa_path")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert!(
            !stored.contains(secret),
            "{backend:?}: the secret is in clear"
        );

        let rows = audit_rows(&server).await;
        for expected in [
            "second_factor.begin user:tfa_path ok",
            "second_factor.confirm user:tfa_path refused",
            "second_factor.confirm user:tfa_path ok",
            "login user:tfa_path refused second factor required",
            "login user:tfa_path denied wrong second factor",
            "login user:tfa_path ok with a second factor",
        ] {
            assert!(
                has_row(&rows, expected),
                "{backend:?}: no audit row {expected:?} in {rows:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_codes_count_toward_the_lockout() {
    let server = TestServer::start_with(
        Backend::Local,
        &[
            ("PATHFED_AUTH_MAX_FAILURES_PER_ACCOUNT", "3"),
            ("PATHFED_AUTH_LOCKOUT_MINUTES", "15"),
        ],
    );
    server.user("Hub L", "hub", "tfa_lock", "pathologist");
    let pw = password("tfa_lock");
    let mut browser = Browser::new(&server);
    assert_eq!(browser.sign_in("tfa_lock", &pw, None).await.0, 200);
    let (app, _) = enrol(&browser).await;

    // A missing code is not a failure; wrong codes are, like wrong passwords.
    for _ in 0..5 {
        let (status, _) = Browser::new(&server).sign_in("tfa_lock", &pw, None).await;
        assert_eq!(status, 401);
    }
    for n in 1..=3 {
        let (status, body) = Browser::new(&server)
            .sign_in("tfa_lock", &pw, Some(&app.wrong_code(&server)))
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (401, "invalid_second_factor"),
            "attempt {n}"
        );
    }
    let right = app.next_code(&server);
    let (status, body) = Browser::new(&server)
        .sign_in("tfa_lock", &pw, Some(&right))
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (429, "too_many_attempts"),
        "locked by wrong codes: {body}"
    );

    server.cli_ok(&["admin", "user", "unlock", "tfa_lock"]);
    let (status, body) = Browser::new(&server)
        .sign_in("tfa_lock", &pw, Some(&right))
        .await;
    assert_eq!(status, 200, "unlocked, the unused code works: {body}");
    let rows = audit_rows(&server).await;
    assert!(has_row(&rows, "login.lock user:tfa_lock ok"), "{rows:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_must_set_up_a_second_factor_before_anything_else() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Hub A", "hub", "tfa_admin", "admin");
        let pw = password("tfa_admin");
        let mut browser = Browser::new(&server);
        let (status, body) = browser.sign_in("tfa_admin", &pw, None).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        assert_eq!(body["second_factor_enrolment_required"], true, "{body}");

        // Only the session's own routes answer until the second factor is set up.
        let (status, body) = browser.call(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(
            (status, code_of(&body)),
            (403, "second_factor_enrolment_required"),
            "{backend:?}: {body}"
        );
        let (status, body) = browser.call(Method::GET, "/api/v1/slides", None).await;
        assert_eq!(status, 403, "{backend:?}: {body}");
        let (status, body) = browser.call(Method::GET, SESSION, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["second_factor_enrolment_required"], true, "{body}");
        let (status, _) = browser
            .call(
                Method::PUT,
                "/api/v1/session/language",
                Some(json!({"language": "ja"})),
            )
            .await;
        assert_eq!(status, 200);
        // The admin's API token (made on the server host) is not a browser session.
        let api = As {
            server: &server,
            token: token.clone(),
        };
        api.ok(Method::GET, "/api/v1/cases", None).await;

        let (app, _) = enrol(&browser).await;
        let (status, body) = browser.call(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(
            status, 200,
            "{backend:?}: enrolled, the same session: {body}"
        );
        let (_, body) = browser.call(Method::GET, SESSION, None).await;
        assert_eq!(body["second_factor_enrolment_required"], false, "{body}");

        // An admin may not drop it.
        let (status, body) = browser
            .call(
                Method::DELETE,
                SECOND_FACTOR,
                Some(json!({"code": app.next_code(&server)})),
            )
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (403, "second_factor_required_by_policy"),
            "{backend:?}: {body}"
        );
        // And signs in with it from now on.
        let mut again = Browser::new(&server);
        assert_eq!(again.sign_in("tfa_admin", &pw, None).await.0, 401);
        let (status, body) = again
            .sign_in("tfa_admin", &pw, Some(&app.next_code(&server)))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["second_factor_enrolment_required"], false);

        let rows = audit_rows(&server).await;
        for expected in [
            "auth.second_factor /api/v1/cases denied",
            "second_factor.remove user:tfa_admin denied",
        ] {
            assert!(
                has_row(&rows, expected),
                "{backend:?}: no audit row {expected:?} in {rows:#?}"
            );
        }
    }

    // The platform can turn the admins' rule off (a trial without phones).
    let server = TestServer::start_with(
        Backend::Local,
        &[("PATHFED_AUTH_SECOND_FACTOR_FOR_ADMINS", "false")],
    );
    server.user("Hub A", "hub", "trial_admin", "admin");
    let mut browser = Browser::new(&server);
    let (status, body) = browser
        .sign_in("trial_admin", &password("trial_admin"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["second_factor_enrolment_required"], false, "{body}");
    assert_eq!(
        browser.call(Method::GET, "/api/v1/cases", None).await.0,
        200
    );
}

/// Sets a hospital's second-factor policy with the admin command, and checks what it reports.
fn set_policy(server: &TestServer, hospital: &str, require: bool, signout: bool) {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let out = server.cli_ok(&[
        "admin",
        "hospital",
        "second-factor",
        hospital,
        "--require",
        on_off(require),
        "--sign-out",
        on_off(signout),
    ]);
    assert!(
        out.contains(&format!("every user: {}", on_off(require)))
            && out.contains(&format!("sign out a case: {}", on_off(signout))),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hospital_can_require_it_of_everyone() {
    let server = TestServer::start(Backend::Local);
    server.user("Hub Strict", "hub", "strict_path", "pathologist");
    server.user("Hub Easy", "hub", "easy_path", "pathologist");
    set_policy(&server, "Hub Strict", true, false);

    let mut easy = Browser::new(&server);
    let (status, body) = easy
        .sign_in("easy_path", &password("easy_path"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["second_factor_enrolment_required"], false, "{body}");

    let mut strict = Browser::new(&server);
    let pw = password("strict_path");
    let (status, body) = strict.sign_in("strict_path", &pw, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["second_factor_enrolment_required"], true, "{body}");
    assert_eq!(
        strict.call(Method::GET, "/api/v1/cases", None).await.0,
        403,
        "the hospital's pathologist must enrol first"
    );
    let (app, _) = enrol(&strict).await;
    assert_eq!(strict.call(Method::GET, "/api/v1/cases", None).await.0, 200);
    let (status, body) = strict
        .call(
            Method::DELETE,
            SECOND_FACTOR,
            Some(json!({"code": app.next_code(&server)})),
        )
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "second_factor_required_by_policy"),
        "{body}"
    );
    let (status, body) = Browser::new(&server)
        .sign_in("strict_path", &pw, None)
        .await;
    assert_eq!((status, code_of(&body)), (401, "second_factor_required"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_second_factor_is_reset_by_an_admin_or_removed_by_its_owner() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        server.user("Hub R", "hub", "lost_phone", "pathologist");
        let pw = password("lost_phone");
        let mut browser = Browser::new(&server);
        assert_eq!(browser.sign_in("lost_phone", &pw, None).await.0, 200);
        enrol(&browser).await;
        assert_eq!(
            Browser::new(&server)
                .sign_in("lost_phone", &pw, None)
                .await
                .0,
            401
        );

        let said = server.cli_ok(&["admin", "user", "reset-second-factor", "lost_phone"]);
        assert!(
            said.contains("reset the second factor of lost_phone"),
            "{said}"
        );
        let mut after = Browser::new(&server);
        let (status, body) = after.sign_in("lost_phone", &pw, None).await;
        assert_eq!(status, 200, "{backend:?}: the password alone again: {body}");
        assert_eq!(body["user"]["second_factor"], false, "{body}");
        let db = server.db().await;
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes r JOIN users u ON u.id = r.user_id \
             WHERE u.username = $1",
        )
        .bind("lost_phone")
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(left, 0, "{backend:?}: the recovery codes are gone too");
        let rows = audit_rows(&server).await;
        assert!(
            has_row(&rows, "admin.user.reset_second_factor user:lost_phone ok"),
            "{backend:?}: {rows:#?}"
        );

        // The owner removes it with a current code, not with a wrong one.
        let (app, _) = enrol(&after).await;
        let (status, body) = after
            .call(
                Method::DELETE,
                SECOND_FACTOR,
                Some(json!({"code": app.wrong_code(&server)})),
            )
            .await;
        assert_eq!(
            (status, code_of(&body)),
            (400, "invalid_second_factor"),
            "{body}"
        );
        let (status, body) = after
            .call(
                Method::DELETE,
                SECOND_FACTOR,
                Some(json!({"code": app.next_code(&server)})),
            )
            .await;
        assert_eq!(status, 204, "{backend:?}: {body}");
        let (status, _) = Browser::new(&server).sign_in("lost_phone", &pw, None).await;
        assert_eq!(status, 200, "{backend:?}: removed");
    }
}

/// Brings a new case to `ready_for_sign_out`: submitted by the spoke, read by `first`,
/// concordantly double-checked by `second`. Returns the case path.
async fn ready_case(
    server: &TestServer,
    spoke: &As<'_>,
    first: &As<'_>,
    second: &As<'_>,
    seed: u32,
) -> String {
    let file = synth_slide(
        server.dir.path(),
        &format!("fresh-{seed}.svs"),
        1200,
        900,
        seed,
    );
    let (case, slide) = submit_case(server, &spoke.token, &file, &format!("MRN-FRESH-{seed}"));
    let path = format!("/api/v1/cases/{case}");
    let code = "GAS-G3";
    first.ok(Method::POST, &format!("{path}/claim"), None).await;
    first
        .ok(
            Method::PUT,
            &format!("{path}/reads/primary"),
            Some(read(code, &slide)),
        )
        .await;
    second
        .ok(Method::POST, &format!("{path}/double-check"), None)
        .await;
    second
        .ok(
            Method::PUT,
            &format!("{path}/reads/second"),
            Some(read(code, &slide)),
        )
        .await;
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hospital_can_ask_for_a_fresh_code_to_sign_a_case_out() {
    let server = TestServer::start(Backend::Local);
    let people = staff(&server);
    let by_token = ready_case(&server, &people.spoke, &people.first, &people.second, 41).await;
    let by_session = ready_case(&server, &people.spoke, &people.first, &people.second, 42).await;
    set_policy(&server, "Hub H", false, true);

    // No second factor yet: the signer is told to set one up.
    let (status, body) = people
        .first
        .call(Method::POST, &format!("{by_token}/sign-out"), None)
        .await;
    assert_eq!(status.as_u16(), 403, "{body}");
    assert_eq!(code_of(&body), "fresh_second_factor_required", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("set up"),
        "{body}"
    );

    let pw = password("path1");
    let mut browser = Browser::new(&server);
    assert_eq!(browser.sign_in("path1", &pw, None).await.0, 200);
    let (app, _) = enrol(&browser).await;

    // Minutes later the enrolment's code is no longer fresh: a code must come along.
    server.advance_clock(6 * 60);
    let (status, body) = browser
        .call(Method::POST, &format!("{by_session}/sign-out"), None)
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "fresh_second_factor_required"),
        "{body}"
    );
    let (status, body) = browser
        .call(
            Method::POST,
            &format!("{by_session}/sign-out"),
            Some(json!({"second_factor_code": app.wrong_code(&server)})),
        )
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "fresh_second_factor_required"),
        "{body}"
    );

    // With a current code an API client signs out.
    let (status, body) = people
        .first
        .call(
            Method::POST,
            &format!("{by_token}/sign-out"),
            Some(json!({"second_factor_code": app.next_code(&server)})),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");

    // A session signed in with a code just now is fresh: no code needed within the window.
    let mut fresh = Browser::new(&server);
    let (status, body) = fresh
        .sign_in("path1", &pw, Some(&app.next_code(&server)))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fresh
        .call(Method::POST, &format!("{by_session}/sign-out"), None)
        .await;
    assert_eq!(status, 200, "{body}");

    let rows = audit_rows(&server).await;
    let case_id = by_session.rsplit('/').next().unwrap();
    assert!(
        has_row(&rows, &format!("case.sign_out case:{case_id} denied")),
        "{rows:#?}"
    );
    assert!(
        has_row(&rows, &format!("case.sign_out case:{case_id} ok")),
        "{rows:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_amendment_asks_for_the_same_fresh_code_as_a_sign_out() {
    let server = TestServer::start(Backend::Local);
    let people = staff(&server);
    let case = ready_case(&server, &people.spoke, &people.first, &people.second, 43).await;
    // Signed out before the hospital asked for codes.
    people
        .first
        .ok(Method::POST, &format!("{case}/sign-out"), None)
        .await;
    set_policy(&server, "Hub H", false, true);
    let amendments = format!("{case}/amendments");
    let amendment = |code: Option<String>| {
        let mut body = json!({
            "code": "GAS-G5",
            "findings": "Adenocarcinoma, moderately differentiated",
            "reason": "Grade corrected after deeper levels",
        });
        if let Some(code) = code {
            body["second_factor_code"] = json!(code);
        }
        body
    };

    // An amendment is a signature too: without a second factor, none is issued.
    let (status, body) = people
        .first
        .call(Method::POST, &amendments, Some(amendment(None)))
        .await;
    assert_eq!(
        (status.as_u16(), code_of(&body)),
        (403, "fresh_second_factor_required"),
        "{body}"
    );

    let mut browser = Browser::new(&server);
    assert_eq!(
        browser.sign_in("path1", &password("path1"), None).await.0,
        200
    );
    let (app, _) = enrol(&browser).await;
    server.advance_clock(6 * 60);
    let (status, body) = browser
        .call(Method::POST, &amendments, Some(amendment(None)))
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "fresh_second_factor_required"),
        "no code, none fresh: {body}"
    );
    let (status, body) = browser
        .call(
            Method::POST,
            &amendments,
            Some(amendment(Some(app.wrong_code(&server)))),
        )
        .await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "fresh_second_factor_required"),
        "a wrong code: {body}"
    );
    let versions = people
        .spoke
        .ok(Method::GET, &format!("{case}/reports"), None)
        .await;
    assert_eq!(
        versions["reports"].as_array().unwrap().len(),
        1,
        "nothing issued: {versions}"
    );

    // With a current code it is issued; the code keeps the session fresh for a while.
    let (status, body) = browser
        .call(
            Method::POST,
            &amendments,
            Some(amendment(Some(app.next_code(&server)))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    let (status, body) = browser
        .call(Method::POST, &amendments, Some(amendment(None)))
        .await;
    assert_eq!(status, 200, "fresh within the window: {body}");
    assert_eq!(body["version"], 3, "{body}");

    let rows = audit_rows(&server).await;
    let case_id = case.rsplit('/').next().unwrap();
    for expected in [
        format!("case.amend case:{case_id} denied"),
        format!("case.amend case:{case_id} ok"),
    ] {
        assert!(has_row(&rows, &expected), "no {expected:?} in {rows:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requiring_it_or_resetting_it_ends_the_sessions_it_concerns() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        server.user("Hub Now", "hub", "now_plain", "pathologist");
        server.user("Hub Now", "hub", "now_enrolled", "pathologist");
        server.user("Hub Later", "hub", "later_plain", "pathologist");
        let mut plain = Browser::new(&server);
        let mut enrolled = Browser::new(&server);
        let mut elsewhere = Browser::new(&server);
        for (browser, name) in [
            (&mut plain, "now_plain"),
            (&mut enrolled, "now_enrolled"),
            (&mut elsewhere, "later_plain"),
        ] {
            let (status, body) = browser.sign_in(name, &password(name), None).await;
            assert_eq!(status, 200, "{backend:?}: {name}: {body}");
        }
        enrol(&enrolled).await;
        let cases = |browser: &Browser<'_>| {
            let request = browser.client.get(format!("{}/api/v1/cases", server.url));
            async move { request.send().await.unwrap().status().as_u16() }
        };

        // The hospital now requires a second factor: whoever has none is signed out at once,
        // not when their session ends by itself.
        set_policy(&server, "Hub Now", true, false);
        assert_eq!(
            cases(&plain).await,
            401,
            "{backend:?}: the session without a second factor goes on"
        );
        assert_eq!(cases(&enrolled).await, 200, "{backend:?}: enrolled");
        assert_eq!(
            cases(&elsewhere).await,
            200,
            "{backend:?}: another hospital"
        );
        let (status, body) = plain
            .sign_in("now_plain", &password("now_plain"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["second_factor_enrolment_required"], true, "{body}");
        assert_eq!(cases(&plain).await, 403, "{backend:?}: enrolment first");
        // Changing another setting while it is on ends nothing more.
        set_policy(&server, "Hub Now", true, true);
        assert_eq!(plain.call(Method::GET, SESSION, None).await.0, 200);

        // An admin's reset (a lost phone) signs the user out everywhere.
        server.cli_ok(&["admin", "user", "reset-second-factor", "now_enrolled"]);
        assert_eq!(
            cases(&enrolled).await,
            401,
            "{backend:?}: the session opened with the old factor goes on"
        );
        assert_eq!(cases(&elsewhere).await, 200, "{backend:?}");
        let (status, body) = enrolled
            .sign_in("now_enrolled", &password("now_enrolled"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["second_factor_enrolment_required"], true, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_token_cannot_act_on_another_users_session() {
    let server = TestServer::start(Backend::Local);
    // An admin who must set up a second factor: the session reaches only the enrolment.
    server.user("Hub M", "hub", "mix_admin", "admin");
    let token = server.user("Hub M", "hub", "mix_path", "pathologist");
    let response = client()
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": "mix_admin", "password": password("mix_admin")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let admin_cases = || {
        let request = client()
            .get(format!("{}/api/v1/cases", server.url))
            .header("cookie", cookie.clone());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(admin_cases().await, 403);

    // Another user's token, sent along with the admin's cookie, sets up its own second factor.
    let both = |method: Method, path: &str| {
        client()
            .request(method, format!("{}{path}", server.url))
            .bearer_auth(&token)
            .header("cookie", cookie.clone())
    };
    let started: Value = both(Method::POST, SECOND_FACTOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app = Authenticator::new(started["secret"].as_str().unwrap());
    let response = both(Method::POST, &format!("{SECOND_FACTOR}/confirm"))
        .json(&json!({"code": app.next_code(&server)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The admin's session is still kept to the enrolment: the token's code was not its.
    assert_eq!(
        admin_cases().await,
        403,
        "another user's code promoted the session"
    );
    // Nor does the token learn the session's CSRF token.
    let me: Value = both(Method::GET, SESSION)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], "mix_path", "{me}");
    assert_eq!(me["csrf_token"], "", "{me}");
}
