//! The administration console's API under `/api/v1/admin/`: hospitals and their settings,
//! users (add, role, disable, password, second factor, unlock), API tokens and failed jobs.
//!
//! Two reaches: a hospital's admin administers that hospital only, and the platform admin
//! every hospital. What lies outside an admin's reach answers 404, as if it did not exist, so
//! ids cannot be probed; everyone else gets 403. Roles that reach beyond one hospital
//! (researcher, platform admin) are granted, and their accounts administered, by the platform
//! admin only: a hospital's admin who could reset a researcher's password could read the
//! research tier of every hospital. Nobody changes their own role, disables themselves or
//! resets their own password or second factor here (the account security page does the
//! latter two, with the current password). Every change and every refusal is audited with the
//! action names the command line uses (`admin.user.create`, `admin.token.revoke`, …).
//!
//! Failed jobs: a job records who asked for it (`created_by`); a hospital's admin sees the
//! jobs its users asked for, and the platform admin every job, including the work the platform
//! started by itself (curation, automatic AI runs), which belongs to no hospital. A retry
//! queues the job again with its attempts afresh; a failed training run is resumed from the
//! training page instead, from its checkpoints.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pathfed_core::accounts::{self, Hospital, HospitalKind, Principal, Role, User};
use pathfed_core::audit::AuditEvent;
use pathfed_core::hospital_settings::{self, SharedWithHub};
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, JsonBody};
use pathfed_core::jobs::kinds::{JobKind as _, Train};
use pathfed_core::jobs::{Job, JobStatus, Jobs};
use pathfed_core::locale::{self, Lang};
use pathfed_core::routes::{Routes, delete, get, post, put};
use pathfed_core::second_factor::{self, Policy};
use pathfed_core::{CoreError, Db, Platform, quota, throttle};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;

/// Most jobs one listing returns.
const JOB_LIST_LIMIT: i64 = 200;

/// The administration routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/admin/hospitals", get(list_hospitals))
        .route("/api/v1/admin/hospitals/{id}", put(update_hospital))
        .route("/api/v1/admin/users", get(list_users).post(create_user))
        .route("/api/v1/admin/users/{username}", put(update_user))
        .route(
            "/api/v1/admin/users/{username}/password",
            post(reset_password),
        )
        .route(
            "/api/v1/admin/users/{username}/reset-second-factor",
            post(reset_second_factor),
        )
        .route("/api/v1/admin/users/{username}/unlock", post(unlock_user))
        .route("/api/v1/admin/tokens", get(list_tokens))
        .route("/api/v1/admin/tokens/{id}", delete(revoke_token))
        .route("/api/v1/admin/jobs", get(list_jobs))
        .route("/api/v1/admin/jobs/{id}/retry", post(retry_job))
}

/// The administration routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_hospitals,
        update_hospital,
        list_users,
        create_user,
        update_user,
        reset_password,
        reset_second_factor,
        unlock_user,
        list_tokens,
        revoke_token,
        list_jobs,
        retry_job,
    ),
    tags((name = "admin", description = "Administration for hospital admins (their hospital) \
        and the platform admin (every hospital): hospitals, users, API tokens, failed jobs"))
)]
pub struct Api;

// ---- Reach and refusals --------------------------------------------------------------------

/// How far an admin's powers go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// The platform admin: every hospital.
    Platform,
    /// A hospital's admin: that hospital (its id) only.
    Hospital(String),
}

impl Reach {
    /// Whether the hospital `hospital_id` is within reach.
    fn covers(&self, hospital_id: &str) -> bool {
        match self {
            Reach::Platform => true,
            Reach::Hospital(own) => own == hospital_id,
        }
    }

    /// The one hospital within reach, if the reach is one hospital.
    fn hospital(&self) -> Option<&str> {
        match self {
            Reach::Platform => None,
            Reach::Hospital(own) => Some(own.as_str()),
        }
    }
}

/// Writes `error` to the audit log as the outcome of `action` on `target`, and returns it.
async fn refuse(
    platform: &Platform,
    user: &Principal,
    action: &str,
    target: &str,
    error: ApiError,
) -> ApiError {
    let outcome = match error.status {
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => "denied",
        s if s.is_server_error() => "failed",
        _ => "refused",
    };
    let _ = platform
        .audit(AuditEvent::by(user, action, target, outcome).detail(error.message.clone()))
        .await;
    error
}

/// Audits a failure of `result` as the outcome of `action` on `target`.
async fn checked<T>(
    platform: &Platform,
    user: &Principal,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    match result {
        Ok(value) => Ok(value),
        Err(e) => Err(refuse(platform, user, action, target, e).await),
    }
}

/// Records that `action` on `target` was done.
async fn done(platform: &Platform, user: &Principal, action: &str, target: &str, detail: String) {
    let _ = platform
        .audit(AuditEvent::by(user, action, target, "ok").detail(detail))
        .await;
}

/// The reach of `user`; everyone but admins is refused (and audited under `action`).
async fn reach(
    platform: &Platform,
    user: &Principal,
    action: &str,
    target: &str,
) -> Result<Reach, ApiError> {
    if user.role.is_platform_admin() {
        Ok(Reach::Platform)
    } else if user.role.is_hospital_admin() {
        Ok(Reach::Hospital(user.hospital.id.clone()))
    } else {
        let error =
            ApiError::forbidden("the administration console is for hospital and platform admins");
        Err(refuse(platform, user, action, target, error).await)
    }
}

/// The user named `username` if within `reach`; otherwise 404, the same as for no such user.
async fn subject(
    platform: &Platform,
    user: &Principal,
    reach: &Reach,
    username: &str,
    action: &str,
) -> Result<User, ApiError> {
    let target = format!("user:{username}");
    let found = match accounts::user_by_name(&platform.db, username).await {
        Ok(found) => Some(found),
        Err(CoreError::NotFound(_)) => None,
        Err(e) => return Err(refuse(platform, user, action, &target, e.into()).await),
    };
    match found {
        Some(found) if reach.covers(&found.hospital.id) => Ok(found),
        _ => {
            let error = ApiError::not_found(&format!("user {username:?}"));
            Err(refuse(platform, user, action, &target, error).await)
        }
    }
}

/// The hospital with this id if within `reach`; otherwise 404.
async fn hospital_in_reach(
    platform: &Platform,
    user: &Principal,
    reach: &Reach,
    id: &str,
    action: &str,
) -> Result<Hospital, ApiError> {
    let target = format!("hospital:{id}");
    let found = accounts::find_hospital(&platform.db, id).await;
    let found = checked(
        platform,
        user,
        action,
        &target,
        found.map_err(ApiError::from),
    )
    .await?;
    match found {
        Some(h) if h.id == id && reach.covers(&h.id) => Ok(h),
        _ => {
            let error = ApiError::not_found(&format!("hospital {id:?}"));
            Err(refuse(platform, user, action, &target, error).await)
        }
    }
}

/// True for roles that reach beyond one hospital: the research tier (every hospital's
/// de-identified data) and the platform itself.
fn beyond_hospital(role: Role) -> bool {
    // Spelled out so that a new role must be placed on one side or the other.
    match role {
        Role::Researcher | Role::PlatformAdmin => true,
        Role::Submitter | Role::Pathologist | Role::Admin => false,
    }
}

/// Refuses a hospital's admin giving a role that reaches beyond the hospital.
fn may_grant(actor: &Principal, role: Role) -> Result<(), ApiError> {
    if beyond_hospital(role) && !actor.role.is_platform_admin() {
        return Err(ApiError::forbidden(format!(
            "only the platform admin gives the {} role: it reaches beyond one hospital",
            role.as_str()
        )));
    }
    Ok(())
}

/// Refuses a hospital's admin acting on an account whose role reaches beyond the hospital.
fn may_administer(actor: &Principal, subject: &User) -> Result<(), ApiError> {
    if beyond_hospital(subject.role) && !actor.role.is_platform_admin() {
        return Err(ApiError::forbidden(format!(
            "{} is a {}: only the platform admin administers accounts whose role reaches \
             beyond one hospital",
            subject.username,
            subject.role.as_str()
        )));
    }
    Ok(())
}

/// Refuses an admin acting on their own account, with `message` saying what instead.
fn not_own(actor: &Principal, subject: &User, message: &str) -> Result<(), ApiError> {
    if actor.id == subject.id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "own_account",
            message.to_string(),
        ));
    }
    Ok(())
}

/// Reads a field that may be sent as null (to clear it) apart from one not sent at all.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

// ---- Hospitals -----------------------------------------------------------------------------

/// A hospital with its settings, as an admin sees them.
#[derive(Debug, Serialize, ToSchema)]
struct AdminHospital {
    /// Id.
    id: String,
    /// Name.
    name: String,
    /// Spoke (sends cases) or hub (reads them).
    kind: HospitalKind,
    /// IANA time zone its people read times in.
    time_zone: String,
    /// The language of its reports, e-mails and (unless a user chooses) pages.
    language: Lang,
    /// The hub its cases go to when a submitter names none.
    default_hub_id: Option<String>,
    /// Hubs only: pathologists see AI results only after entering their own read.
    ai_after_first_read: bool,
    /// The hub reading its cases sees the slide labels.
    share_label_with_hub: bool,
    /// The hub reading its cases sees the patients' ids.
    share_patient_id_with_hub: bool,
    /// Its people get their notices by e-mail as well as in the app.
    email_notifications: bool,
    /// Every user of the hospital needs a second factor to sign in.
    require_second_factor: bool,
    /// Signing out a case asks for a fresh second-factor code.
    signout_second_factor: bool,
    /// Admins need a second factor whatever the hospital's policy (`auth.second_factor_for_admins`).
    admins_need_second_factor: bool,
    /// Upload quota in bytes; null for none.
    upload_quota_bytes: Option<i64>,
    /// Bytes used: stored slides and unfinished uploads.
    upload_used_bytes: i64,
}

/// A hub a spoke's cases may go to.
#[derive(Debug, Serialize, ToSchema)]
struct AdminHub {
    /// Hospital id.
    id: String,
    /// Hospital name.
    name: String,
}

/// The answer of `GET /api/v1/admin/hospitals`.
#[derive(Debug, Serialize, ToSchema)]
struct AdminHospitalList {
    /// The hospitals within the admin's reach, by name.
    hospitals: Vec<AdminHospital>,
    /// Every hub, for the choice of a default hub.
    hubs: Vec<AdminHub>,
}

async fn hospital_view(platform: &Platform, h: &Hospital) -> Result<AdminHospital, CoreError> {
    let db = &platform.db;
    let sharing = hospital_settings::hub_sharing(db, &h.id).await?;
    let policy = second_factor::policy(db, &h.id).await?;
    Ok(AdminHospital {
        id: h.id.clone(),
        name: h.name.clone(),
        kind: h.kind,
        time_zone: h.time_zone.clone(),
        language: h.language,
        default_hub_id: accounts::default_hub(db, &h.id).await?,
        ai_after_first_read: accounts::hides_ai_until_read(db, &h.id).await?,
        share_label_with_hub: sharing.label,
        share_patient_id_with_hub: sharing.patient_id,
        email_notifications: accounts::sends_email(db, &h.id).await?,
        require_second_factor: policy.require_second_factor,
        signout_second_factor: policy.signout_second_factor,
        admins_need_second_factor: platform.config.auth.second_factor_for_admins,
        upload_quota_bytes: quota::limit(db, &h.id).await?,
        upload_used_bytes: quota::usage(db, &h.id).await?,
    })
}

/// Hospitals within reach, with their settings, upload quota and usage
#[utoipa::path(
    get,
    path = "/api/v1/admin/hospitals",
    tag = "admin",
    responses(
        (status = 200, description = "the admin's hospital (every hospital for the platform admin), and every hub", body = AdminHospitalList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_hospitals(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let reach = reach(&platform, &user, "admin.hospital.list", "hospitals").await?;
    let all = accounts::list_hospitals(&platform.db).await?;
    let mut hospitals = Vec::new();
    for h in all.iter().filter(|h| reach.covers(&h.id)) {
        hospitals.push(hospital_view(&platform, h).await?);
    }
    let hubs = all
        .iter()
        .filter(|h| h.kind == HospitalKind::Hub)
        .map(|h| AdminHub {
            id: h.id.clone(),
            name: h.name.clone(),
        })
        .collect();
    Ok(axum::Json(AdminHospitalList { hospitals, hubs }).into_response())
}

/// A change of a hospital's settings: what is sent changes, what is left out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminHospitalChange {
    /// The default hub's id; null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    default_hub_id: Option<Option<String>>,
    /// Hubs only: AI results after the pathologist's own read.
    ai_after_first_read: Option<bool>,
    /// Show the slide labels to the hub reading the hospital's cases.
    share_label_with_hub: Option<bool>,
    /// Show the patients' ids to the hub reading the hospital's cases.
    share_patient_id_with_hub: Option<bool>,
    /// An IANA time zone, e.g. `Asia/Tokyo`.
    time_zone: Option<String>,
    /// `ja` or `en`.
    language: Option<String>,
    /// Notices by e-mail as well as in the app.
    email_notifications: Option<bool>,
    /// Every user needs a second factor.
    require_second_factor: Option<bool>,
    /// Signing out a case asks for a fresh second-factor code.
    signout_second_factor: Option<bool>,
    /// Platform admin only: the upload quota in bytes; null for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    upload_quota_bytes: Option<Option<i64>>,
}

/// Change a hospital's settings (each change audited as the command line's `admin.hospital.*`)
#[utoipa::path(
    put,
    path = "/api/v1/admin/hospitals/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "hospital id")),
    request_body = AdminHospitalChange,
    responses(
        (status = 200, description = "the hospital as it now stands", body = AdminHospital),
        (status = 400, description = "a value is not acceptable (unknown time zone or language, AI setting on a spoke, a default hub that is not a hub, a negative quota)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, or a hospital admin setting a quota", body = ErrorBody),
        (status = 404, description = "no such hospital within the admin's reach", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn update_hospital(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<AdminHospitalChange>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let target = format!("hospital:{id}");
    let action = "admin.hospital.update";
    let reach = reach(&platform, &user, action, &target).await?;
    let hospital = hospital_in_reach(&platform, &user, &reach, &id, action).await?;

    // Everything is checked before anything changes, so a refusal leaves the hospital as it was.
    let language = match change.language.as_deref() {
        None => None,
        Some(code) => match Lang::ALL.into_iter().find(|l| l.as_str() == code) {
            Some(lang) => Some(lang),
            None => {
                let error = ApiError::bad_request(
                    "invalid",
                    format!("unknown language {code:?} (ja or en)"),
                );
                return Err(
                    refuse(&platform, &user, "admin.hospital.locale", &target, error).await,
                );
            }
        },
    };
    let time_zone = change.time_zone.as_deref().map(str::trim);
    if let Some(zone) = time_zone
        && let Err(e) = locale::check_time_zone(zone)
    {
        return Err(refuse(&platform, &user, "admin.hospital.locale", &target, e.into()).await);
    }
    if change.ai_after_first_read.is_some() && hospital.kind != HospitalKind::Hub {
        let error = ApiError::bad_request(
            "invalid",
            format!(
                "{} is a spoke: only hubs read cases, so only a hub shows AI results after the \
                 first read",
                hospital.name
            ),
        );
        let action = "admin.hospital.ai_after_first_read";
        return Err(refuse(&platform, &user, action, &target, error).await);
    }
    if let Some(wanted) = change.upload_quota_bytes {
        let refusal = if !user.role.is_platform_admin() {
            Some(ApiError::forbidden(
                "only the platform admin sets upload quotas",
            ))
        } else if wanted.is_some_and(|bytes| bytes < 0) {
            Some(ApiError::bad_request(
                "invalid",
                "an upload quota is a number of bytes, 0 or more (null for none)",
            ))
        } else {
            None
        };
        if let Some(error) = refusal {
            return Err(refuse(&platform, &user, "admin.hospital.quota", &target, error).await);
        }
    }

    // The default hub first: consultation checks the hub, and may refuse it.
    if let Some(hub) = &change.default_hub_id {
        let action = "admin.hospital.default_hub";
        let set = pathfed_consult::cases::set_default_hub(db, &hospital.id, hub.as_deref()).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        let shown = hub.clone().unwrap_or_else(|| "(none)".into());
        done(&platform, &user, action, &target, shown).await;
    }
    if let Some(on) = change.ai_after_first_read {
        let action = "admin.hospital.ai_after_first_read";
        let set = pathfed_consult::ai::set_hidden_until_read(db, &hospital.id, on).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        done(&platform, &user, action, &target, on_off(on).into()).await;
    }
    for (what, setting) in [
        (SharedWithHub::Label, change.share_label_with_hub),
        (SharedWithHub::PatientId, change.share_patient_id_with_hub),
    ] {
        let Some(on) = setting else { continue };
        let action = "admin.hospital.share_with_hub";
        let set = hospital_settings::set_shared_with_hub(db, &hospital.id, what, on).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        let detail = format!("{} {}", what.as_str(), on_off(on));
        done(&platform, &user, action, &target, detail).await;
    }
    if time_zone.is_some() || language.is_some() {
        let action = "admin.hospital.locale";
        let set = accounts::set_hospital_locale(db, &hospital.id, time_zone, language).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        let mut changed = Vec::new();
        changed.extend(time_zone.map(|z| format!("time_zone={z}")));
        changed.extend(language.map(|l| format!("language={l}")));
        done(&platform, &user, action, &target, changed.join(" ")).await;
    }
    if let Some(on) = change.email_notifications {
        let action = "admin.hospital.email";
        let set = accounts::set_sends_email(db, &hospital.id, on).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        done(&platform, &user, action, &target, on_off(on).into()).await;
    }
    if change.require_second_factor.is_some() || change.signout_second_factor.is_some() {
        let action = "admin.hospital.second_factor";
        let current = second_factor::policy(db, &hospital.id).await;
        let current = checked(
            &platform,
            &user,
            action,
            &target,
            current.map_err(ApiError::from),
        )
        .await?;
        let policy = Policy {
            require_second_factor: change
                .require_second_factor
                .unwrap_or(current.require_second_factor),
            signout_second_factor: change
                .signout_second_factor
                .unwrap_or(current.signout_second_factor),
        };
        let detail = format!(
            "required {}, at sign-out {}",
            on_off(policy.require_second_factor),
            on_off(policy.signout_second_factor)
        );
        let set = second_factor::set_policy(db, &hospital.id, policy).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        done(&platform, &user, action, &target, detail).await;
    }
    if let Some(bytes) = change.upload_quota_bytes {
        let action = "admin.hospital.quota";
        let set = quota::set_limit(db, &hospital.id, bytes).await;
        checked(
            &platform,
            &user,
            action,
            &target,
            set.map_err(ApiError::from),
        )
        .await?;
        let detail = bytes.map_or_else(|| "none".to_string(), |b| format!("{b} bytes"));
        done(&platform, &user, action, &target, detail).await;
    }
    let hospital = accounts::find_hospital(db, &hospital.id)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("hospital {id:?}")))?;
    Ok(axum::Json(hospital_view(&platform, &hospital).await?).into_response())
}

// ---- Users ---------------------------------------------------------------------------------

/// A user as an admin sees them.
#[derive(Debug, Serialize, ToSchema)]
struct AdminUser {
    /// Sign-in name.
    username: String,
    /// Full name, if set.
    display_name: Option<String>,
    /// Role.
    role: Role,
    /// The user's hospital (id).
    hospital_id: String,
    /// The user's hospital (name).
    hospital_name: String,
    /// Cannot sign in; sessions ended, tokens stopped.
    disabled: bool,
    /// Has a second factor (TOTP) set up.
    second_factor: bool,
    /// Seconds until the lock that failed sign-ins put on the name ends; null when not locked.
    locked_for_s: Option<i64>,
}

/// The answer of `GET /api/v1/admin/users`.
#[derive(Debug, Serialize, ToSchema)]
struct AdminUserList {
    /// Users within reach, by hospital and name.
    users: Vec<AdminUser>,
}

async fn user_view(db: &Db, u: &User, now: i64) -> Result<AdminUser, CoreError> {
    let key = throttle::account_key(&u.username);
    Ok(AdminUser {
        username: u.username.clone(),
        display_name: u.display_name.clone(),
        role: u.role,
        hospital_id: u.hospital.id.clone(),
        hospital_name: u.hospital.name.clone(),
        disabled: u.disabled,
        second_factor: u.second_factor,
        locked_for_s: throttle::retry_after(db, &[key], now).await?,
    })
}

/// The users within `reach` (of `hospital` only, when given and within reach).
async fn users_in_reach(
    db: &Db,
    reach: &Reach,
    hospital: Option<&str>,
) -> Result<Vec<User>, CoreError> {
    match hospital.or(reach.hospital()) {
        Some(h) => accounts::users_of(db, h).await,
        None => accounts::list_users(db).await,
    }
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    hospital: Option<String>,
}

/// Users within reach, with role, state, second factor and sign-in lock
#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    tag = "admin",
    params(("hospital" = Option<String>, Query, description = "only this hospital's users (its id)")),
    responses(
        (status = 200, description = "the users of the admin's hospital (every user, or one hospital's, for the platform admin)", body = AdminUserList),
        (status = 400, description = "a bad query string", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such hospital within the admin's reach", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_users(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    query: Result<Query<UserQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let reach = reach(&platform, &user, "admin.user.list", "users").await?;
    let wanted = query.hospital.filter(|h| !h.trim().is_empty());
    if let Some(h) = &wanted {
        hospital_in_reach(&platform, &user, &reach, h, "admin.user.list").await?;
    }
    let users = users_in_reach(&platform.db, &reach, wanted.as_deref()).await?;
    let now = pathfed_core::clock::now();
    let mut shown = Vec::with_capacity(users.len());
    for u in &users {
        shown.push(user_view(&platform.db, u, now).await?);
    }
    Ok(axum::Json(AdminUserList { users: shown }).into_response())
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminNewUser {
    /// Sign-in name.
    username: String,
    /// submitter, pathologist, admin; researcher and platform-admin by the platform admin only.
    role: String,
    /// The first password (the password policy applies); the user changes it later.
    password: String,
    /// The hospital (id); the admin's own when left out. Other hospitals: platform admin only.
    hospital_id: Option<String>,
}

/// Add a user with a role and a first password (audited `admin.user.create`)
#[utoipa::path(
    post,
    path = "/api/v1/admin/users",
    tag = "admin",
    request_body = AdminNewUser,
    responses(
        (status = 201, description = "created", body = AdminUser),
        (status = 400, description = "an unknown role, a bad user name, or a password the policy refuses (`weak_password`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, or a hospital admin giving a role beyond the hospital", body = ErrorBody),
        (status = 404, description = "no such hospital within the admin's reach", body = ErrorBody),
        (status = 409, description = "the user name is taken", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn create_user(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    JsonBody(new): JsonBody<AdminNewUser>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let action = "admin.user.create";
    let target = format!("user:{}", new.username);
    let reach = reach(&platform, &user, action, &target).await?;
    let role = new.role.parse::<Role>().map_err(ApiError::from);
    let role = checked(&platform, &user, action, &target, role).await?;
    checked(&platform, &user, action, &target, may_grant(&user, role)).await?;
    let hospital_id = new
        .hospital_id
        .clone()
        .unwrap_or_else(|| user.hospital.id.clone());
    let hospital = hospital_in_reach(&platform, &user, &reach, &hospital_id, action).await?;
    // The password policy applies inside (a refusal answers `weak_password`).
    let created = accounts::create_user(db, &hospital, &new.username, role, &new.password)
        .await
        .map_err(ApiError::from);
    let created = checked(&platform, &user, action, &target, created).await?;
    let detail = format!("{} in {}", role.as_str(), hospital.name);
    done(&platform, &user, action, &target, detail).await;
    let view = user_view(db, &created, pathfed_core::clock::now()).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// A change of a user: what is sent changes, what is left out stays.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminUserChange {
    /// The new role.
    role: Option<String>,
    /// True disables the account (ends its sessions, stops its tokens); false enables it.
    disabled: Option<bool>,
}

/// Change a user's role (their sessions and API tokens end), or disable or enable the account (audited `admin.user.role`, `admin.user.disable`, `admin.user.enable`)
#[utoipa::path(
    put,
    path = "/api/v1/admin/users/{username}",
    tag = "admin",
    params(("username" = String, Path, description = "the user's sign-in name")),
    request_body = AdminUserChange,
    responses(
        (status = 200, description = "the user as they now stand", body = AdminUser),
        (status = 400, description = "an unknown role", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin; a hospital admin giving or touching a role beyond the hospital; or the admin's own role or account (`own_account`)", body = ErrorBody),
        (status = 404, description = "no such user within the admin's reach", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn update_user(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
    JsonBody(change): JsonBody<AdminUserChange>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let target = format!("user:{username}");
    let disable_action = |disabled: bool| {
        if disabled {
            "admin.user.disable"
        } else {
            "admin.user.enable"
        }
    };
    let action = match (&change.role, change.disabled) {
        (Some(_), _) => "admin.user.role",
        (None, Some(disabled)) => disable_action(disabled),
        (None, None) => "admin.user.update",
    };
    let reach = reach(&platform, &user, action, &target).await?;
    let subject = subject(&platform, &user, &reach, &username, action).await?;
    checked(
        &platform,
        &user,
        action,
        &target,
        may_administer(&user, &subject),
    )
    .await?;

    // Everything is checked before anything changes.
    let role = match &change.role {
        None => None,
        Some(name) => {
            let action = "admin.user.role";
            let role = checked(
                &platform,
                &user,
                action,
                &target,
                name.parse::<Role>().map_err(ApiError::from),
            )
            .await?;
            if role != subject.role {
                let own = not_own(
                    &user,
                    &subject,
                    "you cannot change your own role: ask another administrator",
                );
                checked(&platform, &user, action, &target, own).await?;
                checked(&platform, &user, action, &target, may_grant(&user, role)).await?;
                Some(role)
            } else {
                None
            }
        }
    };
    let disabled = change.disabled.filter(|d| *d != subject.disabled);
    if disabled == Some(true) {
        let own = not_own(
            &user,
            &subject,
            "you cannot disable your own account: ask another administrator",
        );
        checked(&platform, &user, "admin.user.disable", &target, own).await?;
    }

    if let Some(role) = role {
        let action = "admin.user.role";
        let set = accounts::set_role(db, &subject.username, role)
            .await
            .map_err(ApiError::from);
        checked(&platform, &user, action, &target, set).await?;
        let detail = format!("{} → {}", subject.role.as_str(), role.as_str());
        done(&platform, &user, action, &target, detail).await;
    }
    if let Some(disabled) = disabled {
        let action = disable_action(disabled);
        let set = accounts::set_disabled(db, &subject.username, disabled)
            .await
            .map_err(ApiError::from);
        checked(&platform, &user, action, &target, set).await?;
        done(&platform, &user, action, &target, String::new()).await;
    }
    let now_stands = accounts::user_by_name(db, &subject.username).await?;
    Ok(axum::Json(user_view(db, &now_stands, pathfed_core::clock::now()).await?).into_response())
}

/// A password an admin sets for a user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminPasswordReset {
    /// The new password (the password policy applies).
    password: String,
}

/// What a password reset ended.
#[derive(Debug, Serialize, ToSchema)]
struct AdminPasswordResetDone {
    /// The user's sessions signed out.
    sessions_ended: u64,
    /// The user's API tokens revoked.
    tokens_revoked: u64,
}

/// Set a new password for a user; every session and API token of theirs ends (audited `admin.user.password`)
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{username}/password",
    tag = "admin",
    params(("username" = String, Path, description = "the user's sign-in name")),
    request_body = AdminPasswordReset,
    responses(
        (status = 200, description = "set; what it ended", body = AdminPasswordResetDone),
        (status = 400, description = "the password policy refuses the password (`weak_password`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin; a hospital admin and an account beyond the hospital; or the admin's own password (`own_account`: the account security page changes it)", body = ErrorBody),
        (status = 404, description = "no such user within the admin's reach", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn reset_password(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
    JsonBody(reset): JsonBody<AdminPasswordReset>,
) -> Result<Response, ApiError> {
    let action = "admin.user.password";
    let target = format!("user:{username}");
    let reach = reach(&platform, &user, action, &target).await?;
    let subject = subject(&platform, &user, &reach, &username, action).await?;
    checked(
        &platform,
        &user,
        action,
        &target,
        may_administer(&user, &subject),
    )
    .await?;
    let own = not_own(
        &user,
        &subject,
        "you cannot reset your own password here: change it on the account security page, \
         with your current password",
    );
    checked(&platform, &user, action, &target, own).await?;
    // The password policy applies inside, with the shorter minimum for a user who has a second
    // factor (a refusal answers `weak_password`).
    let ended = accounts::set_password(&platform.db, &subject.username, &reset.password)
        .await
        .map_err(ApiError::from);
    let ended = checked(&platform, &user, action, &target, ended).await?;
    let detail = format!(
        "ended {} session(s) and revoked {} API token(s)",
        ended.sessions, ended.tokens
    );
    done(&platform, &user, action, &target, detail).await;
    Ok(axum::Json(AdminPasswordResetDone {
        sessions_ended: ended.sessions,
        tokens_revoked: ended.tokens,
    })
    .into_response())
}

/// Forget a user's second factor and recovery codes, so they set one up again; their sessions end (audited `admin.user.reset_second_factor`)
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{username}/reset-second-factor",
    tag = "admin",
    params(("username" = String, Path, description = "the user's sign-in name")),
    responses(
        (status = 200, description = "reset; the user as they now stand", body = AdminUser),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin; a hospital admin and an account beyond the hospital; or the admin's own (`own_account`: the account security page manages it)", body = ErrorBody),
        (status = 404, description = "no such user within the admin's reach", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn reset_second_factor(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let action = "admin.user.reset_second_factor";
    let target = format!("user:{username}");
    let reach = reach(&platform, &user, action, &target).await?;
    let subject = subject(&platform, &user, &reach, &username, action).await?;
    checked(
        &platform,
        &user,
        action,
        &target,
        may_administer(&user, &subject),
    )
    .await?;
    let own = not_own(
        &user,
        &subject,
        "you cannot reset your own second factor here: manage it on the account security page",
    );
    checked(&platform, &user, action, &target, own).await?;
    let reset = second_factor::reset(db, &subject.id)
        .await
        .map_err(ApiError::from);
    checked(&platform, &user, action, &target, reset).await?;
    let detail = if subject.second_factor {
        "second factor and recovery codes forgotten; sessions ended"
    } else {
        "had no second factor; sessions ended"
    };
    done(&platform, &user, action, &target, detail.to_string()).await;
    let now_stands = accounts::user_by_name(db, &subject.username).await?;
    Ok(axum::Json(user_view(db, &now_stands, pathfed_core::clock::now()).await?).into_response())
}

/// What an unlock found.
#[derive(Debug, Serialize, ToSchema)]
struct AdminUnlocked {
    /// The name was locked (its count of failed sign-ins is cleared either way).
    was_locked: bool,
}

/// Lift the lock that failed sign-ins put on a user name (audited `admin.user.unlock`)
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{username}/unlock",
    tag = "admin",
    params(("username" = String, Path, description = "the user's sign-in name")),
    responses(
        (status = 200, description = "unlocked; whether it was locked", body = AdminUnlocked),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin; or a hospital admin and an account beyond the hospital", body = ErrorBody),
        (status = 404, description = "no such user within the admin's reach", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn unlock_user(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    let action = "admin.user.unlock";
    let target = format!("user:{username}");
    let reach = reach(&platform, &user, action, &target).await?;
    let subject = subject(&platform, &user, &reach, &username, action).await?;
    // An unlock lets guessing go on: a hospital's admin may not give it to an account that
    // reaches beyond the hospital (the platform admin's, a researcher's).
    checked(
        &platform,
        &user,
        action,
        &target,
        may_administer(&user, &subject),
    )
    .await?;
    let key = throttle::account_key(&subject.username);
    let cleared = throttle::clear(&platform.db, &key, pathfed_core::clock::now())
        .await
        .map_err(ApiError::from);
    let was_locked = checked(&platform, &user, action, &target, cleared).await?;
    let detail = if was_locked {
        "was locked"
    } else {
        "was not locked"
    };
    done(&platform, &user, action, &target, detail.to_string()).await;
    Ok(axum::Json(AdminUnlocked { was_locked }).into_response())
}

// ---- API tokens ----------------------------------------------------------------------------

/// An API token as an admin sees it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
struct AdminToken {
    /// Id (used to revoke it).
    id: String,
    /// Owner's sign-in name.
    username: String,
    /// Owner's hospital (name).
    hospital_name: String,
    /// What it is for.
    name: String,
    /// Created (unix seconds).
    created_at: i64,
    /// When it stops working by itself; null for tokens made before tokens expired.
    expires_at: Option<i64>,
    /// When it was revoked, if it was.
    revoked_at: Option<i64>,
    /// `active`, `expired` or `revoked`.
    state: String,
}

/// The answer of `GET /api/v1/admin/tokens`.
#[derive(Debug, Serialize, ToSchema)]
struct AdminTokenList {
    /// Tokens of users within reach, newest first.
    tokens: Vec<AdminToken>,
}

/// API tokens of the users within reach, revoked and expired ones too
#[utoipa::path(
    get,
    path = "/api/v1/admin/tokens",
    tag = "admin",
    responses(
        (status = 200, description = "tokens, newest first", body = AdminTokenList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_tokens(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let reach = reach(&platform, &user, "admin.token.list", "tokens").await?;
    let owners: HashMap<String, User> = users_in_reach(&platform.db, &reach, None)
        .await?
        .into_iter()
        .map(|u| (u.username.clone(), u))
        .collect();
    let now = pathfed_core::clock::now();
    let tokens = accounts::list_tokens(&platform.db)
        .await?
        .into_iter()
        .filter_map(|t| {
            let owner = owners.get(&t.username)?;
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|at| at <= now) {
                "expired"
            } else {
                "active"
            };
            Some(AdminToken {
                hospital_name: owner.hospital.name.clone(),
                state: state.to_string(),
                id: t.id,
                username: t.username,
                name: t.name,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
        })
        .collect();
    Ok(axum::Json(AdminTokenList { tokens }).into_response())
}

/// Revoke an API token; it stops working at once (audited `admin.token.revoke`)
#[utoipa::path(
    delete,
    path = "/api/v1/admin/tokens/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, or a hospital admin and a token of an account beyond the hospital", body = ErrorBody),
        (status = 404, description = "no such active token of a user within the admin's reach", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn revoke_token(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let action = "admin.token.revoke";
    let target = format!("token:{id}");
    let reach = reach(&platform, &user, action, &target).await?;
    let listed = accounts::list_tokens(db).await.map_err(ApiError::from);
    let token = checked(&platform, &user, action, &target, listed)
        .await?
        .into_iter()
        .find(|t| t.id == id);
    let owner = match &token {
        Some(t) => match accounts::user_by_name(db, &t.username).await {
            Ok(owner) => Some(owner),
            Err(CoreError::NotFound(_)) => None,
            Err(e) => return Err(refuse(&platform, &user, action, &target, e.into()).await),
        },
        None => None,
    };
    let Some(owner) = owner.filter(|o| reach.covers(&o.hospital.id)) else {
        let error = ApiError::not_found(&format!("token {id:?}"));
        return Err(refuse(&platform, &user, action, &target, error).await);
    };
    checked(
        &platform,
        &user,
        action,
        &target,
        may_administer(&user, &owner),
    )
    .await?;
    let revoked = accounts::revoke_token(db, &id)
        .await
        .map_err(ApiError::from);
    checked(&platform, &user, action, &target, revoked).await?;
    done(&platform, &user, action, &target, owner.username.clone()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- Jobs ----------------------------------------------------------------------------------

/// A background job as an admin sees it.
#[derive(Debug, Serialize, ToSchema)]
struct AdminJob {
    /// Id.
    id: String,
    /// What kind of work (`curate`, `extract`, `train`, `infer`, `notify-email`, …).
    kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    status: String,
    /// Attempts started.
    attempts: i64,
    /// Attempts allowed.
    max_attempts: i64,
    /// Why the last attempt failed.
    last_error: Option<String>,
    /// Who asked for it (sign-in name); null for work the platform started by itself.
    created_by: Option<String>,
    /// Created (unix seconds).
    created_at: i64,
    /// Finished (unix seconds).
    finished_at: Option<i64>,
    /// The work's parameters (ids, never patient data).
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

/// The answer of `GET /api/v1/admin/jobs`.
#[derive(Debug, Serialize, ToSchema)]
struct AdminJobList {
    /// Jobs within reach, the most recently changed first.
    jobs: Vec<AdminJob>,
}

fn job_view(job: Job, names: &HashMap<String, String>) -> AdminJob {
    AdminJob {
        created_by: job
            .created_by
            .as_ref()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())),
        status: job.status.as_str().to_string(),
        id: job.id,
        kind: job.kind,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        last_error: job.last_error,
        created_at: job.created_at,
        finished_at: job.finished_at,
        payload: job.payload,
    }
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    state: Option<String>,
}

/// Background jobs within reach in one state, failed by default (a hospital admin: the jobs its users asked for)
#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs",
    tag = "admin",
    params(("state" = Option<String>, Query, description = "`failed` (the default), `queued`, `running`, `succeeded` or `cancelled`")),
    responses(
        (status = 200, description = "jobs, the most recently changed first (at most 200)", body = AdminJobList),
        (status = 400, description = "an unknown state", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_jobs(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    query: Result<Query<JobQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let reach = reach(&platform, &user, "admin.job.list", "jobs").await?;
    let state = query
        .state
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let status = JobStatus::parse(state.unwrap_or("failed")).map_err(|_| {
        ApiError::bad_request(
            "bad_query",
            "state is one of queued, running, succeeded, failed, cancelled",
        )
    })?;
    let jobs = Jobs::new(platform.db.clone())
        .list_by_status(status, reach.hospital(), JOB_LIST_LIMIT)
        .await?;
    let creators: Vec<String> = jobs.iter().filter_map(|j| j.created_by.clone()).collect();
    let names = accounts::user_names(&platform.db, &creators).await?;
    let jobs = jobs.into_iter().map(|j| job_view(j, &names)).collect();
    Ok(axum::Json(AdminJobList { jobs }).into_response())
}

/// Queue a failed job again with its attempts afresh (audited `admin.job.retry`)
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/retry",
    tag = "admin",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "queued again; the job as it now stands", body = AdminJob),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "no such job within the admin's reach", body = ErrorBody),
        (status = 409, description = "the job has not failed, or is a training run (resumed from the training page)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn retry_job(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let db = &platform.db;
    let action = "admin.job.retry";
    let target = format!("job:{id}");
    let reach = reach(&platform, &user, action, &target).await?;
    let jobs = Jobs::new(db.clone());
    let job = match jobs.get(&id).await {
        Ok(job) => Some(job),
        Err(CoreError::NotFound(_)) => None,
        Err(e) => return Err(refuse(&platform, &user, action, &target, e.into()).await),
    };
    // A hospital's admin reaches the jobs its own users asked for.
    let creator_hospital = match job.as_ref().and_then(|j| j.created_by.clone()) {
        Some(creator) => accounts::users_by_id(db, std::slice::from_ref(&creator))
            .await?
            .remove(&creator)
            .map(|u| u.hospital.id),
        None => None,
    };
    let in_reach = match &reach {
        Reach::Platform => true,
        Reach::Hospital(own) => creator_hospital.as_deref() == Some(own.as_str()),
    };
    let Some(job) = job.filter(|_| in_reach) else {
        let error = ApiError::not_found(&format!("job {id:?}"));
        return Err(refuse(&platform, &user, action, &target, error).await);
    };
    let training = job.kind == Train::NAME || job.kind.starts_with(&format!("{}-", Train::NAME));
    let refusal = if job.status != JobStatus::Failed {
        Some(format!(
            "job {id} is {}: only a failed job can be retried",
            job.status.as_str()
        ))
    } else if training {
        Some(
            "a failed training run is resumed from the Training page, from its checkpoints"
                .to_string(),
        )
    } else {
        None
    };
    if let Some(message) = refusal {
        let error = ApiError::new(StatusCode::CONFLICT, "not_retryable", message);
        return Err(refuse(&platform, &user, action, &target, error).await);
    }
    let retried = jobs.retry(&id).await.map_err(|e| match e {
        // Another admin retried it, or it changed, in the meantime.
        CoreError::Invalid(message) => {
            ApiError::new(StatusCode::CONFLICT, "not_retryable", message)
        }
        other => other.into(),
    });
    let retried = checked(&platform, &user, action, &target, retried).await?;
    let detail = format!(
        "{} after {} attempt(s): {}",
        job.kind,
        job.attempts,
        job.last_error.as_deref().unwrap_or("no error recorded")
    );
    done(&platform, &user, action, &target, detail).await;
    let creators: Vec<String> = retried.created_by.iter().cloned().collect();
    let names = accounts::user_names(db, &creators).await?;
    Ok(axum::Json(job_view(retried, &names)).into_response())
}
