//! The administration console's API (`/api/v1/admin/…`) on both backends, as the people using
//! it would notice:
//! - a hospital's admin sees and touches only its own hospital's users, tokens and jobs (the
//!   rest answers 404, as if it did not exist); the platform admin reaches every hospital;
//!   everyone else is refused with 403;
//! - a hospital's admin cannot give a role beyond the hospital (platform admin, researcher) nor
//!   act on such an account (unlocking it included), nor change their own role or disable
//!   themselves; a role change ends the user's API tokens; no user may be named as the audit
//!   log names other actors (`anonymous`, `cli:…`);
//! - a password the policy refuses is refused with `weak_password`; a reset ends the user's
//!   tokens; disabling stops a user's token and enabling restores it; an unlock lifts the lock of
//!   failed sign-ins; the upload quota and its usage are shown, and set by the platform admin;
//! - a failed job (an AI run of a model that does not exist, failed by the server's own worker)
//!   is listed and retried: it runs again; jobs that have not failed are not retried;
//! - every change and every refusal is in the audit log under the command line's action names.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::time::Duration;

use pathfed_core::clock::Clock;
use pathfed_core::jobs::kinds::{Infer, InferPayload};
use pathfed_core::jobs::{Job, JobStatus, Jobs, NewJob};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::people::wait_for;
use crate::support::{As, BACKENDS, Backend, TestServer, client, password};

const USERS: &str = "/api/v1/admin/users";
const HOSPITALS: &str = "/api/v1/admin/hospitals";
const TOKENS: &str = "/api/v1/admin/tokens";
const JOBS: &str = "/api/v1/admin/jobs";

/// A strong first password for a user made through the console.
const NEW_PASSWORD: &str = "Kestrel-Maple-Orbit-4711";
/// The password an admin resets to.
const RESET_PASSWORD: &str = "Lantern-Quartz-Harbor-0815";

/// The status code of `GET /api/v1/session` with `token`: whether the token works.
async fn token_status(server: &TestServer, token: &str) -> u16 {
    client()
        .get(format!("{}/api/v1/session", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A browser sign-in: the status and the answer.
async fn sign_in(server: &TestServer, username: &str, password: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}/api/v1/session", server.url))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Refused with `status` and `code`.
async fn refused_with(
    user: &As<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &str,
) {
    let (got, value) = user.call(method.clone(), path, body).await;
    assert_eq!(got.as_u16(), status, "{method} {path}: {value}");
    assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
}

/// The usernames of a user listing.
fn usernames(list: &Value) -> Vec<String> {
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

/// The listed user named `name`.
fn listed<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

/// The id of `username`'s active token named `name`, from the platform admin's listing.
async fn token_id(root: &As<'_>, username: &str, name: &str) -> String {
    let tokens = root.ok(Method::GET, TOKENS, None).await;
    tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["username"] == username && t["name"] == name && t["state"] == "active")
        .unwrap_or_else(|| panic!("no active token {name:?} of {username}: {tokens}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A new named token of `username`, through the command line; (id, secret).
async fn cli_token(
    server: &TestServer,
    root: &As<'_>,
    username: &str,
    name: &str,
) -> (String, String) {
    let secret = server.cli_ok(&[
        "admin", "token", "create", "--user", username, "--name", name,
    ]);
    (token_id(root, username, name).await, secret)
}

/// Waits until the job has failed, then returns it.
async fn failed(jobs: &Jobs, id: &str, after: Option<i64>) -> Job {
    wait_for("the job to fail", Duration::from_secs(180), || async {
        let job = jobs.get(id).await.unwrap();
        let again = after.is_none_or(|t| job.finished_at.is_some_and(|f| f >= t));
        (job.status == JobStatus::Failed && again).then_some(job)
    })
    .await
}

/// An AI run of a model that does not exist, asked for by `username`: the server's inference
/// worker fails it at once with the reason.
async fn ghost_run(
    server: &TestServer,
    jobs: &Jobs,
    username: Option<&str>,
    slide: &str,
) -> String {
    let mut job = NewJob::of::<Infer>(&InferPayload {
        slide_id: slide.into(),
        model: "ghost".into(),
        version: 1,
    });
    if let Some(username) = username {
        let db = server.db().await;
        let user = pathfed_core::accounts::user_by_name(&db, username)
            .await
            .unwrap();
        job = job.by(&user.id);
    }
    jobs.enqueue(job).await.unwrap().id
}

fn job_ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_administer_their_own_hospital_and_every_change_is_audited() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let root = As {
            token: server.user("Hub A", "hub", "root_admin", "platform-admin"),
            server: &server,
        };
        let a_admin = As {
            token: server.user("Hub A", "hub", "a_admin", "admin"),
            server: &server,
        };
        let a_path_token = server.user("Hub A", "hub", "a_path", "pathologist");
        let a_path = As {
            token: a_path_token.clone(),
            server: &server,
        };
        server.user("Hub A", "hub", "a_res", "researcher");
        let b_admin = As {
            token: server.user("Spoke B", "spoke", "b_admin", "admin"),
            server: &server,
        };
        let b_sub_token = server.user("Spoke B", "spoke", "b_sub", "submitter");

        // Only admins get in.
        refused_with(&a_path, Method::GET, USERS, None, 403, "forbidden").await;
        refused_with(&a_path, Method::GET, HOSPITALS, None, 403, "forbidden").await;

        // Each admin sees their own hospital's people; the platform admin sees everyone.
        let seen = usernames(&a_admin.ok(Method::GET, USERS, None).await);
        for name in ["a_admin", "a_path", "a_res", "root_admin"] {
            assert!(
                seen.contains(&name.to_string()),
                "{backend:?}: {name} not in {seen:?}"
            );
        }
        assert!(
            !seen.iter().any(|n| n.starts_with("b_")),
            "{backend:?}: {seen:?}"
        );
        let seen = usernames(&b_admin.ok(Method::GET, USERS, None).await);
        assert_eq!(seen.len(), 2, "{backend:?}: {seen:?}");
        let everyone = usernames(&root.ok(Method::GET, USERS, None).await);
        assert!(
            everyone.contains(&"b_sub".to_string()) && everyone.contains(&"a_path".to_string())
        );

        // Hospitals: one for a hospital's admin, with the upload quota and its usage.
        let mine = a_admin.ok(Method::GET, HOSPITALS, None).await;
        let hospitals = mine["hospitals"].as_array().unwrap();
        assert_eq!(hospitals.len(), 1, "{backend:?}: {mine}");
        let hub_a = hospitals[0]["id"].as_str().unwrap().to_string();
        assert_eq!(hospitals[0]["name"], "Hub A");
        assert_eq!(hospitals[0]["kind"], "hub");
        assert!(hospitals[0]["upload_quota_bytes"].is_null(), "{mine}");
        assert_eq!(hospitals[0]["upload_used_bytes"], 0, "{mine}");
        let all = root.ok(Method::GET, HOSPITALS, None).await;
        let spoke_b = all["hospitals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "Spoke B")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let spoke_path = format!("{HOSPITALS}/{spoke_b}");
        let hub_path = format!("{HOSPITALS}/{hub_a}");
        // Quotas are the platform's to set; another hospital is not there for a hospital admin.
        refused_with(
            &a_admin,
            Method::PUT,
            &hub_path,
            Some(json!({"upload_quota_bytes": 1})),
            403,
            "forbidden",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &spoke_path,
            Some(json!({"email_notifications": true})),
            404,
            "not_found",
        )
        .await;
        let set = root
            .ok(
                Method::PUT,
                &spoke_path,
                Some(json!({"upload_quota_bytes": 5_000_000})),
            )
            .await;
        assert_eq!(set["upload_quota_bytes"], 5_000_000, "{set}");
        assert_eq!(set["upload_used_bytes"], 0, "{set}");
        let seen = b_admin.ok(Method::GET, HOSPITALS, None).await;
        assert_eq!(
            seen["hospitals"][0]["upload_quota_bytes"], 5_000_000,
            "{seen}"
        );
        // Settings within the hospital; values that make no sense are refused.
        let set = a_admin
            .ok(
                Method::PUT,
                &hub_path,
                Some(json!({"signout_second_factor": true, "language": "en", "time_zone": "Asia/Tokyo"})),
            )
            .await;
        assert_eq!(
            (
                set["signout_second_factor"].as_bool(),
                set["language"].as_str()
            ),
            (Some(true), Some("en")),
            "{set}"
        );
        assert_eq!(set["require_second_factor"], false, "{set}");
        refused_with(
            &a_admin,
            Method::PUT,
            &hub_path,
            Some(json!({"time_zone": "Mars/Olympus"})),
            400,
            "invalid",
        )
        .await;
        refused_with(
            &b_admin,
            Method::PUT,
            &spoke_path,
            Some(json!({"ai_after_first_read": true})),
            400,
            "invalid",
        )
        .await;

        // Adding a user: the policy refuses weak passwords; roles beyond the hospital and other
        // hospitals are not a hospital admin's to give.
        let new_user = |name: &str, role: &str, password: &str| json!({"username": name, "role": role, "password": password});
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(new_user("a_new", "pathologist", "short")),
            400,
            "weak_password",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(new_user("a_new", "pathologist", "aaaaaaaaaaaaaaaaaaaa")),
            400,
            "weak_password",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(new_user("a_boss", "platform-admin", NEW_PASSWORD)),
            403,
            "forbidden",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(new_user("a_res2", "researcher", NEW_PASSWORD)),
            403,
            "forbidden",
        )
        .await;
        let mut elsewhere = new_user("a_new", "submitter", NEW_PASSWORD);
        elsewhere["hospital_id"] = json!(spoke_b);
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(elsewhere),
            404,
            "not_found",
        )
        .await;
        let created = a_admin
            .ok(
                Method::POST,
                USERS,
                Some(new_user("a_new", "pathologist", NEW_PASSWORD)),
            )
            .await;
        assert_eq!(
            (created["role"].as_str(), created["hospital_id"].as_str()),
            (Some("pathologist"), Some(hub_a.as_str())),
            "{created}"
        );
        assert_eq!(created["disabled"], false);
        refused_with(
            &a_admin,
            Method::POST,
            USERS,
            Some(new_user("a_new", "pathologist", NEW_PASSWORD)),
            409,
            "conflict",
        )
        .await;
        let (status, session) = sign_in(&server, "a_new", NEW_PASSWORD).await;
        assert_eq!(status, 200, "{backend:?}: the new user signs in: {session}");
        // The platform admin gives any role in any hospital.
        let mut b_new = new_user("b_new", "submitter", NEW_PASSWORD);
        b_new["hospital_id"] = json!(spoke_b);
        let created = root.ok(Method::POST, USERS, Some(b_new)).await;
        assert_eq!(created["hospital_name"], "Spoke B", "{created}");

        // Roles: within the hospital only, never one's own.
        let a_new = format!("{USERS}/a_new");
        refused_with(
            &a_admin,
            Method::PUT,
            &a_new,
            Some(json!({"role": "platform-admin"})),
            403,
            "forbidden",
        )
        .await;
        let changed = a_admin
            .ok(Method::PUT, &a_new, Some(json!({"role": "submitter"})))
            .await;
        assert_eq!(changed["role"], "submitter", "{changed}");
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/a_admin"),
            Some(json!({"role": "pathologist"})),
            403,
            "own_account",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/a_admin"),
            Some(json!({"disabled": true})),
            403,
            "own_account",
        )
        .await;
        refused_with(
            &root,
            Method::PUT,
            &format!("{USERS}/root_admin"),
            Some(json!({"role": "admin"})),
            403,
            "own_account",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/root_admin"),
            Some(json!({"disabled": true})),
            403,
            "forbidden",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/a_res"),
            Some(json!({"disabled": true})),
            403,
            "forbidden",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/b_sub"),
            Some(json!({"disabled": true})),
            404,
            "not_found",
        )
        .await;
        refused_with(
            &a_admin,
            Method::PUT,
            &format!("{USERS}/nobody"),
            Some(json!({"disabled": true})),
            404,
            "not_found",
        )
        .await;
        assert_eq!(
            token_status(&server, &b_sub_token).await,
            200,
            "{backend:?}: B's user untouched"
        );

        // Disabling stops the user's token; enabling gives it back.
        let a_path_user = format!("{USERS}/a_path");
        let disabled = a_admin
            .ok(Method::PUT, &a_path_user, Some(json!({"disabled": true})))
            .await;
        assert_eq!(disabled["disabled"], true, "{disabled}");
        assert_eq!(
            token_status(&server, &a_path_token).await,
            401,
            "{backend:?}: disabled"
        );
        a_admin
            .ok(Method::PUT, &a_path_user, Some(json!({"disabled": false})))
            .await;
        assert_eq!(
            token_status(&server, &a_path_token).await,
            200,
            "{backend:?}: enabled again"
        );

        // A password reset: the policy applies, and the user's tokens end.
        let reset = format!("{a_path_user}/password");
        refused_with(
            &a_admin,
            Method::POST,
            &reset,
            Some(json!({"password": "abc"})),
            400,
            "weak_password",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{USERS}/a_admin/password"),
            Some(json!({"password": RESET_PASSWORD})),
            403,
            "own_account",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{USERS}/b_sub/password"),
            Some(json!({"password": RESET_PASSWORD})),
            404,
            "not_found",
        )
        .await;
        let ended = a_admin
            .ok(
                Method::POST,
                &reset,
                Some(json!({"password": RESET_PASSWORD})),
            )
            .await;
        assert!(ended["tokens_revoked"].as_u64().unwrap() >= 1, "{ended}");
        assert_eq!(
            token_status(&server, &a_path_token).await,
            401,
            "{backend:?}: the reset ended the token"
        );
        assert_eq!(
            sign_in(&server, "a_path", RESET_PASSWORD).await.0,
            200,
            "{backend:?}: the new password"
        );

        // The second factor is forgotten on request.
        let forgotten = a_admin
            .ok(
                Method::POST,
                &format!("{a_path_user}/reset-second-factor"),
                None,
            )
            .await;
        assert_eq!(forgotten["second_factor"], false, "{forgotten}");
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{USERS}/b_sub/reset-second-factor"),
            None,
            404,
            "not_found",
        )
        .await;

        // Failed sign-ins lock the name; the admin sees it and lifts the lock.
        for _ in 0..5 {
            assert_eq!(sign_in(&server, "a_new", "not-the-password").await.0, 401);
        }
        assert_eq!(
            sign_in(&server, "a_new", NEW_PASSWORD).await.0,
            429,
            "{backend:?}: locked"
        );
        let locked = a_admin.ok(Method::GET, USERS, None).await;
        assert!(
            listed(&locked, "a_new")["locked_for_s"].as_i64().unwrap() > 0,
            "{locked}"
        );
        let unlocked = a_admin
            .ok(Method::POST, &format!("{a_new}/unlock"), None)
            .await;
        assert_eq!(unlocked["was_locked"], true, "{unlocked}");
        assert!(
            listed(&a_admin.ok(Method::GET, USERS, None).await, "a_new")["locked_for_s"].is_null()
        );
        assert_eq!(
            sign_in(&server, "a_new", NEW_PASSWORD).await.0,
            200,
            "{backend:?}: unlocked"
        );
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{USERS}/b_sub/unlock"),
            None,
            404,
            "not_found",
        )
        .await;

        // Tokens: the hospital's own only; a revoked token stops working.
        let (a_new_token_id, a_new_token) = cli_token(&server, &root, "a_new", "scanner").await;
        let (b_token_id, b_token) = cli_token(&server, &root, "b_new", "uploader").await;
        let mine = a_admin.ok(Method::GET, TOKENS, None).await;
        let owners: Vec<&str> = mine["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["username"].as_str().unwrap())
            .collect();
        assert!(owners.contains(&"a_new"), "{mine}");
        assert!(
            !owners.iter().any(|o| o.starts_with("b_")),
            "{backend:?}: {owners:?}"
        );
        refused_with(
            &a_admin,
            Method::DELETE,
            &format!("{TOKENS}/{b_token_id}"),
            None,
            404,
            "not_found",
        )
        .await;
        assert_eq!(
            token_status(&server, &b_token).await,
            200,
            "{backend:?}: B's token untouched"
        );
        assert_eq!(token_status(&server, &a_new_token).await, 200);
        let (status, _) = a_admin
            .call(Method::DELETE, &format!("{TOKENS}/{a_new_token_id}"), None)
            .await;
        assert_eq!(status.as_u16(), 204);
        assert_eq!(
            token_status(&server, &a_new_token).await,
            401,
            "{backend:?}: revoked"
        );
        let mine = a_admin.ok(Method::GET, TOKENS, None).await;
        let revoked = mine["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == a_new_token_id.as_str())
            .unwrap();
        assert_eq!(revoked["state"], "revoked", "{revoked}");

        // Failed jobs: each hospital's admin sees those its users asked for, the platform admin
        // all of them, the platform's own work included.
        let jobs = Jobs::new(server.db().await);
        let job_a = ghost_run(&server, &jobs, Some("a_new"), "slide-a").await;
        let job_b = ghost_run(&server, &jobs, Some("b_sub"), "slide-b").await;
        let job_platform = ghost_run(&server, &jobs, None, "slide-p").await;
        let first = failed(&jobs, &job_a, None).await;
        assert!(
            first.last_error.as_deref().unwrap().contains("ghost@1"),
            "{first:?}"
        );
        failed(&jobs, &job_b, None).await;
        failed(&jobs, &job_platform, None).await;
        let seen = job_ids(
            &a_admin
                .ok(Method::GET, &format!("{JOBS}?state=failed"), None)
                .await,
        );
        assert_eq!(seen, std::slice::from_ref(&job_a), "{backend:?}");
        let seen = job_ids(&b_admin.ok(Method::GET, JOBS, None).await);
        assert_eq!(seen, std::slice::from_ref(&job_b), "{backend:?}");
        let seen = job_ids(&root.ok(Method::GET, JOBS, None).await);
        for id in [&job_a, &job_b, &job_platform] {
            assert!(seen.contains(id), "{backend:?}: {id} not in {seen:?}");
        }
        refused_with(
            &a_admin,
            Method::GET,
            &format!("{JOBS}?state=sideways"),
            None,
            400,
            "bad_query",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{JOBS}/{job_b}/retry"),
            None,
            404,
            "not_found",
        )
        .await;
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{JOBS}/{job_platform}/retry"),
            None,
            404,
            "not_found",
        )
        .await;
        // A job that has not failed is not retried (this one waits far in the future).
        let later = Jobs::new(server.db().await)
            .with_clock(Clock::manual(pathfed_core::clock::now() + 86_400));
        let waiting = ghost_run(&server, &later, Some("a_new"), "slide-w").await;
        refused_with(
            &a_admin,
            Method::POST,
            &format!("{JOBS}/{waiting}/retry"),
            None,
            409,
            "not_retryable",
        )
        .await;
        jobs.cancel(&waiting).await.unwrap();
        // The retry runs the job again: it fails again, later (the clock moved on meanwhile).
        server.advance_clock(600);
        let retried = a_admin
            .ok(Method::POST, &format!("{JOBS}/{job_a}/retry"), None)
            .await;
        assert_eq!(retried["id"], job_a.as_str(), "{retried}");
        assert_eq!(retried["created_by"], "a_new", "{retried}");
        let again = failed(&jobs, &job_a, Some(first.finished_at.unwrap() + 600)).await;
        assert_eq!(again.attempts, 1, "{backend:?}: {again:?}");

        // Everything above is in the audit log, refusals included.
        let db = server.db().await;
        let rows: Vec<String> = pathfed_core::audit::recent(&db, 1000)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.event.actor, r.event.action, r.event.target, r.event.outcome
                )
            })
            .collect();
        for expected in [
            "a_path admin.user.list users denied".to_string(),
            format!("a_admin admin.hospital.quota hospital:{hub_a} denied"),
            format!("root_admin admin.hospital.quota hospital:{spoke_b} ok"),
            format!("a_admin admin.hospital.second_factor hospital:{hub_a} ok"),
            format!("a_admin admin.hospital.locale hospital:{hub_a} ok"),
            "a_admin admin.user.create user:a_new refused".to_string(),
            "a_admin admin.user.create user:a_boss denied".to_string(),
            "a_admin admin.user.create user:a_new ok".to_string(),
            "root_admin admin.user.create user:b_new ok".to_string(),
            "a_admin admin.user.role user:a_new ok".to_string(),
            "a_admin admin.user.role user:a_admin denied".to_string(),
            "a_admin admin.user.disable user:a_admin denied".to_string(),
            "a_admin admin.user.disable user:b_sub denied".to_string(),
            "a_admin admin.user.disable user:a_path ok".to_string(),
            "a_admin admin.user.enable user:a_path ok".to_string(),
            "a_admin admin.user.password user:a_path refused".to_string(),
            "a_admin admin.user.password user:a_path ok".to_string(),
            "a_admin admin.user.reset_second_factor user:a_path ok".to_string(),
            "a_admin admin.user.unlock user:a_new ok".to_string(),
            format!("a_admin admin.token.revoke token:{b_token_id} denied"),
            format!("a_admin admin.token.revoke token:{a_new_token_id} ok"),
            format!("a_admin admin.job.retry job:{job_b} denied"),
            format!("a_admin admin.job.retry job:{waiting} refused"),
            format!("a_admin admin.job.retry job:{job_a} ok"),
        ] {
            assert!(
                rows.contains(&expected),
                "{backend:?}: no audit row {expected:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn role_changes_end_tokens_and_locks_beyond_the_hospital_stay_for_its_admin() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let root = As {
            token: server.user("Hub U", "hub", "u_root", "platform-admin"),
            server: &server,
        };
        let admin = As {
            token: server.user("Hub U", "hub", "u_admin", "admin"),
            server: &server,
        };
        let path_token = server.user("Hub U", "hub", "u_path", "pathologist");
        server.user("Hub U", "hub", "u_res", "researcher");

        // A token made for a pathologist does not go on as an admin's.
        assert_eq!(token_status(&server, &path_token).await, 200);
        let changed = admin
            .ok(
                Method::PUT,
                &format!("{USERS}/u_path"),
                Some(json!({"role": "admin"})),
            )
            .await;
        assert_eq!(changed["role"], "admin", "{changed}");
        assert_eq!(
            token_status(&server, &path_token).await,
            401,
            "{backend:?}: the token survived the role change"
        );
        let tokens = root.ok(Method::GET, TOKENS, None).await;
        assert!(
            tokens["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["username"] == "u_path")
                .all(|t| t["state"] == "revoked"),
            "{backend:?}: {tokens}"
        );

        // Failed sign-ins lock three names of the hospital.
        for name in ["u_root", "u_res", "u_path"] {
            for _ in 0..5 {
                assert_eq!(sign_in(&server, name, "not-the-password").await.0, 401);
            }
            assert_eq!(
                sign_in(&server, name, &password(name)).await.0,
                429,
                "{backend:?}: {name} locked"
            );
        }
        // The hospital's admin may not let guessing go on at the platform admin's or a
        // researcher's account; only at their own hospital's people.
        for name in ["u_root", "u_res"] {
            refused_with(
                &admin,
                Method::POST,
                &format!("{USERS}/{name}/unlock"),
                None,
                403,
                "forbidden",
            )
            .await;
            assert_eq!(
                sign_in(&server, name, &password(name)).await.0,
                429,
                "{backend:?}: {name} still locked"
            );
        }
        let unlocked = admin
            .ok(Method::POST, &format!("{USERS}/u_path/unlock"), None)
            .await;
        assert_eq!(unlocked["was_locked"], true, "{unlocked}");
        assert_eq!(sign_in(&server, "u_path", &password("u_path")).await.0, 200);
        // The platform admin lifts any lock.
        let unlocked = root
            .ok(Method::POST, &format!("{USERS}/u_res/unlock"), None)
            .await;
        assert_eq!(unlocked["was_locked"], true, "{unlocked}");
        assert_eq!(sign_in(&server, "u_res", &password("u_res")).await.0, 200);

        // No user may take a name the audit log gives other actors.
        for name in ["anonymous", "Anonymous", "cli:root", "u:path"] {
            let message = root
                .refused(
                    Method::POST,
                    USERS,
                    Some(
                        json!({"username": name, "role": "pathologist", "password": NEW_PASSWORD}),
                    ),
                    400,
                )
                .await;
            assert!(
                message.contains("reserved") || message.contains("\":\""),
                "{backend:?}: {name}: {message}"
            );
        }

        let db = server.db().await;
        let rows: Vec<String> = pathfed_core::audit::recent(&db, 500)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.event.actor, r.event.action, r.event.target, r.event.outcome
                )
            })
            .collect();
        for expected in [
            "u_admin admin.user.role user:u_path ok",
            "u_admin admin.user.unlock user:u_root denied",
            "u_admin admin.user.unlock user:u_res denied",
            "u_admin admin.user.unlock user:u_path ok",
            "u_root admin.user.unlock user:u_res ok",
            "u_root admin.user.create user:anonymous refused",
        ] {
            assert!(
                rows.iter().any(|r| r == expected),
                "{backend:?}: no audit row {expected:?}"
            );
        }
    }

    // The server host's command refuses such names too.
    let server = TestServer::start(Backend::Local);
    server.cli_ok(&["admin", "hospital", "add", "Spoke N", "--kind", "spoke"]);
    let pw = server.dir.path().join("anonymous.pw");
    std::fs::write(&pw, NEW_PASSWORD).unwrap();
    for name in ["anonymous", "cli:someone"] {
        let out = server.cli(&[
            "admin",
            "user",
            "add",
            name,
            "--hospital",
            "Spoke N",
            "--role",
            "submitter",
            "--password-file",
            pw.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{name} accepted");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("user name"), "{name}: {said}");
    }
}
