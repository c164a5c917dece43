//! Audit review for admins: `GET /api/v1/admin/audit` (search), `…/audit.csv` (the same as a
//! spreadsheet), `POST …/audit/patient` (who accessed one patient's cases and slides) and
//! `…/audit/verify` (the chain check).
//!
//! A patient's id never travels in a URL, which proxies and server logs keep: a search or
//! export by patient is a POST with the filters as a JSON body (`POST …/audit/search`,
//! `POST …/audit.csv`), and a GET naming `patient_id` is refused (400 `patient_id_in_url`).
//! The other filters work either way.
//!
//! A hospital admin reviews their hospital's part of the log: rows by its people, and rows on
//! the hospital, its users, its slides and the cases it referred or reads (so a spoke sees the
//! hub pathologist who opened its patient's slide). A platform admin reviews everything, or one
//! hospital's part with `hospital=`. Everyone else gets 403. Filters combine with AND. A patient
//! is found by the id the hospital types, matched through the same keyed hash the cases store
//! (never kept or logged in clear); ids are a hospital's own, so they are looked up under the
//! admin's hospital, or the one `hospital=` names. Times are unix seconds (UTC); pages run
//! newest first by sequence number (`before`). Each use of these endpoints is itself audited.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_consult::patient::PatientIds;
use pathfed_core::accounts::{self, Principal};
use pathfed_core::audit::{self, AuditEvent, AuditRecord, Order, Search, Subjects};
use pathfed_core::audit_checkpoint::iso_time;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, get, post};
use serde::{Deserialize, Serialize};

use super::AppState;

/// The audit review routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/admin/audit", get(search))
        .route("/api/v1/admin/audit/search", post(search_by_body))
        .route("/api/v1/admin/audit.csv", get(export).post(export_by_body))
        .route("/api/v1/admin/audit/patient", post(patient_report))
        .route("/api/v1/admin/audit/verify", get(verify))
}

/// The audit review routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(search, search_by_body, export, export_by_body, patient_report, verify),
    tags((name = "audit", description = "Audit review for hospital and platform admins: search, \
        CSV export, per-patient access report, chain check"))
)]
pub struct Api;

/// What the review endpoints' own audit rows name as their target.
const LOG_TARGET: &str = "audit_log";
/// Rows a search page holds unless `limit` says otherwise, and at most.
const PAGE: (i64, i64) = (100, 500);
/// Rows a CSV export holds unless `limit` says otherwise, and at most.
const EXPORT: (i64, i64) = (100_000, 100_000);
/// Rows an access report lists at most.
const REPORT_ROWS: usize = 10_000;

/// The search filters as the query string carries them (all optional; empty means unset).
#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    patient_id: Option<String>,
    slide: Option<String>,
    case: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    hospital: Option<String>,
}

/// The search filters as a JSON body carries them (all optional; empty strings mean unset).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AuditFilters {
    /// User name (exact), `anonymous`, or `cli:…`.
    actor: Option<String>,
    /// A patient's id as the hospital types it: rows on the patient's cases and slides
    /// (looked up under the admin's hospital, or `hospital`).
    patient_id: Option<String>,
    /// Slide id: rows on the slide, also within a case.
    slide: Option<String>,
    /// Case id: rows on the case, its slides, reports and annotations.
    case: Option<String>,
    /// Action (exact), or a prefix ending in `*` such as `case.*`.
    action: Option<String>,
    /// `ok`, `denied`, `refused` or `failed`.
    outcome: Option<String>,
    /// Rows at or after this time (unix seconds, UTC).
    from: Option<i64>,
    /// Rows before this time (unix seconds, UTC).
    to: Option<i64>,
    /// Rows with a smaller sequence number (the previous page's `next_before`).
    before: Option<i64>,
    /// Rows per page (search: default 100, at most 500; CSV: default and at most 100,000).
    limit: Option<i64>,
    /// Platform admins: one hospital's part of the log (id or name); hospital admins: their
    /// own only.
    hospital: Option<String>,
}

impl From<AuditFilters> for AuditQuery {
    fn from(f: AuditFilters) -> Self {
        let text = |n: Option<i64>| n.map(|n| n.to_string());
        Self {
            actor: f.actor,
            patient_id: f.patient_id,
            slide: f.slide,
            case: f.case,
            action: f.action,
            outcome: f.outcome,
            from: text(f.from),
            to: text(f.to),
            before: text(f.before),
            limit: text(f.limit),
            hospital: f.hospital,
        }
    }
}

/// The patient report's request body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatientRequest {
    /// The patient's id as the hospital types it (required).
    patient_id: Option<String>,
    /// The patient's hospital (id or name; platform admins only, default: the admin's own).
    hospital: Option<String>,
}

/// One audit row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Row {
    /// Position in the chain, from 1.
    seq: i64,
    /// Unix seconds (UTC).
    at: i64,
    /// User name, `anonymous`, or `cli:ACCOUNT (uid N)` for commands on the server host.
    actor: String,
    /// The actor's hospital id (empty when unknown).
    hospital_id: String,
    /// What was attempted, e.g. `slide.view`.
    action: String,
    /// What it was done to, e.g. `slide:ID`, `case:ID/slide:ID`.
    target: String,
    /// `ok`, `denied`, `refused` or `failed`.
    outcome: String,
    /// Free-form detail.
    detail: String,
    /// The client's address (empty for commands and older rows).
    address: String,
}

impl From<AuditRecord> for Row {
    fn from(r: AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at: r.at,
            actor: r.event.actor,
            hospital_id: r.event.hospital_id,
            action: r.event.action,
            target: r.event.target,
            outcome: r.event.outcome,
            detail: r.event.detail,
            address: r.address,
        }
    }
}

/// A page of rows, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SearchBody {
    /// Matching rows, by sequence number descending.
    rows: Vec<Row>,
    /// Pass as `before` for the next page; null when this page is the last.
    next_before: Option<i64>,
}

/// Who accessed one patient's cases and slides.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PatientReport {
    /// The id as typed.
    patient_id: String,
    /// The hospital whose patient it is.
    hospital_id: String,
    /// The patient's slides (those in the patient's cases).
    slides: Vec<String>,
    /// The patient's cases.
    cases: Vec<String>,
    /// Every recorded action on them, oldest first: who, when, from where, what, how it ended.
    accesses: Vec<Row>,
    /// True when there were more than the 10,000 rows listed (narrow with the search).
    truncated: bool,
}

/// The first problem the chain check found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Problem {
    /// The row concerned (the first that does not fit, or the first missing).
    seq: i64,
    /// What is wrong.
    reason: String,
}

/// The chain check's result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct VerifyBody {
    /// True when every row links and matches its keyed hash and every checkpoint matches.
    intact: bool,
    /// Rows checked.
    rows: u64,
    /// Signed checkpoints found in the object store.
    checkpoints: u64,
    /// The first problem, or null.
    problem: Option<Problem>,
}

/// The filters once checked and resolved, with what the review's own audit row says of them.
struct Prepared {
    search: Search,
    before: Option<i64>,
    limit: Option<i64>,
    /// The filters for the audit row: the patient as a hash prefix, never the typed id.
    description: String,
}

/// Records a refusal of `action` and returns the error to answer with.
async fn refused(
    state: &AppState,
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
    let _ = state
        .platform
        .audit(AuditEvent::by(user, action, target, outcome).detail(error.message.clone()))
        .await;
    error
}

/// Admins only: the hospital whose part of the log `user` reviews (`None`: all of it).
async fn scope(
    state: &AppState,
    user: &Principal,
    requested: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if !user.role.is_hospital_admin() {
        return Err(ApiError::forbidden(
            "audit review is for hospital and platform admins",
        ));
    }
    let Some(requested) = requested else {
        return Ok((!user.role.is_platform_admin()).then(|| user.hospital.id.clone()));
    };
    let hospital = accounts::find_hospital(&state.platform.db, requested)
        .await?
        .ok_or_else(|| ApiError::not_found("hospital"))?;
    if hospital.id != user.hospital.id && !user.role.is_platform_admin() {
        return Err(ApiError::forbidden(
            "a hospital admin reviews their own hospital's audit log only",
        ));
    }
    Ok(Some(hospital.id))
}

/// `None` for an absent or empty parameter.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn number(name: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    given(value)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "bad_query",
                    format!("{name} must be a whole number, not {v:?}"),
                )
            })
        })
        .transpose()
}

/// A slide or case id: letters, digits, `-` and `_`, as ids are made.
fn id(name: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = given(value) else {
        return Ok(None);
    };
    let fine = v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !fine {
        return Err(ApiError::bad_request(
            "bad_query",
            format!("{name} must be an id (letters, digits, - and _), not {v:?}"),
        ));
    }
    Ok(Some(v.to_string()))
}

fn limit(value: Option<i64>, (default, most): (i64, i64)) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if n < 1 => Err(ApiError::bad_request(
            "bad_query",
            format!("limit must be at least 1 (at most {most})"),
        )),
        Some(n) => Ok(n.min(most)),
    }
}

/// The cases and slides of the patient `raw` of `hospital_id`, and the prefix of the
/// patient's keyed hash that stands for the patient in audit rows.
async fn patient(
    state: &AppState,
    hospital_id: &str,
    raw: &str,
) -> Result<(Subjects, String), ApiError> {
    let db = &state.platform.db;
    let id = PatientIds::normalise(db, hospital_id, raw)
        .await
        .map_err(ApiError::from)?;
    let hash = state.consult.patients.hash(hospital_id, &id);
    let subjects = audit::patient_subjects(db, hospital_id, &hash).await?;
    let tag = hash.get(..16).unwrap_or(&hash).to_string();
    Ok((subjects, tag))
}

/// The filters of a GET's query string.
fn from_url(query: Result<Query<AuditQuery>, QueryRejection>) -> Result<Filters, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    Ok(Filters {
        query: q,
        in_url: true,
    })
}

/// The filters of a POST's JSON body.
fn from_body(body: Result<Json<AuditFilters>, JsonRejection>) -> Result<Filters, ApiError> {
    let Json(f) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_query",
            format!("send the filters as a JSON object: {}", e.body_text()),
        )
    })?;
    Ok(Filters {
        query: f.into(),
        in_url: false,
    })
}

/// Filters as received, and whether they came in the URL.
struct Filters {
    query: AuditQuery,
    in_url: bool,
}

async fn prepare(
    state: &AppState,
    user: &Principal,
    filters: Result<Filters, ApiError>,
) -> Result<Prepared, ApiError> {
    // The role first: whoever is not an admin learns nothing, whatever they asked.
    if !user.role.is_hospital_admin() {
        return Err(ApiError::forbidden(
            "audit review is for hospital and platform admins",
        ));
    }
    let Filters { query: q, in_url } = filters?;
    if in_url && given(&q.patient_id).is_some() {
        // Too late for this request's URL, but no client is left relying on it.
        return Err(ApiError::bad_request(
            "patient_id_in_url",
            "a patient's id does not go in a URL, which proxies and server logs keep: send the \
             filters as a JSON body to POST /api/v1/admin/audit/search (or POST \
             /api/v1/admin/audit.csv)",
        ));
    }
    let hospital = scope(state, user, given(&q.hospital)).await?;
    let mut description = Vec::new();
    let mut search = Search {
        hospital: hospital.clone(),
        ..Search::default()
    };
    if let Some(h) = &hospital {
        description.push(format!("hospital={h}"));
    }
    if let Some(actor) = given(&q.actor) {
        if actor.chars().count() > 200 {
            return Err(ApiError::bad_request("bad_query", "actor is too long"));
        }
        search.actor = Some(actor.to_string());
        description.push(format!("actor={actor}"));
    }
    if let Some(action) = given(&q.action) {
        let body = action.strip_suffix('*').unwrap_or(action);
        let fine = action.len() <= 100
            && body
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if !fine {
            return Err(ApiError::bad_request(
                "bad_query",
                format!(
                    "action must be an action name such as slide.view, or a prefix ending in * \
                     such as case.*, not {action:?}"
                ),
            ));
        }
        search.action = Some(action.to_string());
        description.push(format!("action={action}"));
    }
    if let Some(outcome) = given(&q.outcome) {
        if !matches!(outcome, "ok" | "denied" | "refused" | "failed") {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("outcome must be ok, denied, refused or failed, not {outcome:?}"),
            ));
        }
        search.outcome = Some(outcome.to_string());
        description.push(format!("outcome={outcome}"));
    }
    search.from = number("from", &q.from)?;
    search.to = number("to", &q.to)?;
    if let (Some(from), Some(to)) = (search.from, search.to)
        && from >= to
    {
        return Err(ApiError::bad_request(
            "bad_query",
            "from must be before to (unix seconds; from is included, to is not)",
        ));
    }
    for (name, value) in [("from", search.from), ("to", search.to)] {
        if let Some(v) = value {
            description.push(format!("{name}={v}"));
        }
    }
    if let Some(slide) = id("slide", &q.slide)? {
        description.push(format!("slide={slide}"));
        search.subjects.push(Subjects {
            cases: Vec::new(),
            slides: vec![slide],
        });
    }
    if let Some(case) = id("case", &q.case)? {
        description.push(format!("case={case}"));
        search.subjects.push(Subjects {
            cases: vec![case],
            slides: Vec::new(),
        });
    }
    if let Some(raw) = given(&q.patient_id) {
        let patient_hospital = hospital.clone().unwrap_or_else(|| user.hospital.id.clone());
        let (subjects, tag) = patient(state, &patient_hospital, raw).await?;
        description.push(format!("patient={tag}"));
        search.subjects.push(subjects);
    }
    let before = number("before", &q.before)?;
    Ok(Prepared {
        search,
        before,
        limit: number("limit", &q.limit)?,
        description: description.join(" "),
    })
}

/// Search the audit log (admins; newest first)
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    tag = "audit",
    params(
        ("actor" = Option<String>, Query, description = "user name (exact), `anonymous`, or `cli:…`"),
        ("slide" = Option<String>, Query, description = "slide id: rows on the slide, also within a case"),
        ("case" = Option<String>, Query, description = "case id: rows on the case, its slides, reports and annotations"),
        ("action" = Option<String>, Query, description = "action (exact), or a prefix ending in `*` such as `case.*`"),
        ("outcome" = Option<String>, Query, description = "ok, denied, refused or failed"),
        ("from" = Option<i64>, Query, description = "rows at or after this time (unix seconds, UTC)"),
        ("to" = Option<i64>, Query, description = "rows before this time (unix seconds, UTC)"),
        ("before" = Option<i64>, Query, description = "rows with a smaller sequence number (the previous page's `next_before`)"),
        ("limit" = Option<i64>, Query, description = "rows per page (default 100, at most 500)"),
        ("hospital" = Option<String>, Query, description = "platform admins: one hospital's part of the log (id or name); hospital admins: their own only"),
    ),
    responses(
        (status = 200, description = "a page of rows", body = SearchBody),
        (status = 400, description = "a filter is not what it should be (`bad_query`), or a `patient_id` in the URL (`patient_id_in_url`: search by patient with `POST /api/v1/admin/audit/search`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, or a hospital admin asking for another hospital", body = ErrorBody),
        (status = 404, description = "no such hospital", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    run_search(state, user, from_url(query)).await
}

/// Search the audit log, filters in the body: by patient too (admins; newest first)
#[utoipa::path(
    post,
    path = "/api/v1/admin/audit/search",
    tag = "audit",
    request_body = AuditFilters,
    responses(
        (status = 200, description = "a page of rows", body = SearchBody),
        (status = 400, description = "a filter is not what it should be, or the body is not the filters' JSON object (`bad_query`), or the patient id is not acceptable (`invalid`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, a hospital admin asking for another hospital, or a signed-in page without its CSRF token", body = ErrorBody),
        (status = 404, description = "no such hospital", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_by_body(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    body: Result<Json<AuditFilters>, JsonRejection>,
) -> Result<Response, ApiError> {
    run_search(state, user, from_body(body)).await
}

/// The rows the filters match, newest first, at most the filters' limit (its default and most
/// in `bounds`), and that limit; the use is audited as `action`, a refused filter too.
async fn matching_rows(
    state: &AppState,
    user: &Principal,
    action: &str,
    filters: Result<Filters, ApiError>,
    bounds: (i64, i64),
) -> Result<(Vec<AuditRecord>, i64), ApiError> {
    let prepared = match prepare(state, user, filters).await {
        Ok(p) => p,
        Err(e) => return Err(refused(state, user, action, LOG_TARGET, e).await),
    };
    let limit = match limit(prepared.limit, bounds) {
        Ok(n) => n,
        Err(e) => return Err(refused(state, user, action, LOG_TARGET, e).await),
    };
    let order = Order::NewestFirst {
        before: prepared.before,
    };
    let rows = audit::search(&state.platform.db, &prepared.search, order, limit).await?;
    let _ = state
        .platform
        .audit(
            AuditEvent::by(user, action, LOG_TARGET, "ok").detail(format!(
                "{} ({} rows)",
                prepared.description,
                rows.len()
            )),
        )
        .await;
    Ok((rows, limit))
}

/// A search, however its filters came.
async fn run_search(
    state: AppState,
    user: Principal,
    filters: Result<Filters, ApiError>,
) -> Result<Response, ApiError> {
    let (rows, limit) = matching_rows(&state, &user, "audit.search", filters, PAGE).await?;
    let next_before = if rows.len() as i64 == limit {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(axum::Json(SearchBody {
        rows: rows.into_iter().map(Row::from).collect(),
        next_before,
    })
    .into_response())
}

/// One CSV field (RFC 4180). A value that a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, tab or carriage return, or the full-width `＝`, `＋`, `－`, `＠`
/// that a Japanese spreadsheet may read alike) gets a leading `'` so it shows as text.
fn csv_field(value: &str) -> String {
    const FORMULA_STARTS: [char; 10] = [
        '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
    ];
    let value = if value.starts_with(FORMULA_STARTS) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// The rows as CSV: UTF-8 with a byte-order mark (so Excel reads Japanese right), a header
/// row, CRLF line ends, times as ISO 8601 UTC.
fn csv(rows: &[AuditRecord]) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str("seq,time_utc,actor,hospital_id,action,target,outcome,detail,address\r\n");
    for r in rows {
        let fields = [
            r.seq.to_string(),
            iso_time(r.at),
            r.event.actor.clone(),
            r.event.hospital_id.clone(),
            r.event.action.clone(),
            r.event.target.clone(),
            r.event.outcome.clone(),
            r.event.detail.clone(),
            r.address.clone(),
        ];
        let line: Vec<String> = fields.iter().map(String::as_str).map(csv_field).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Export the audit log search as CSV (admins; newest first)
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit.csv",
    tag = "audit",
    params(
        ("actor" = Option<String>, Query, description = "user name (exact), `anonymous`, or `cli:…`"),
        ("slide" = Option<String>, Query, description = "slide id"),
        ("case" = Option<String>, Query, description = "case id"),
        ("action" = Option<String>, Query, description = "action (exact), or a prefix ending in `*`"),
        ("outcome" = Option<String>, Query, description = "ok, denied, refused or failed"),
        ("from" = Option<i64>, Query, description = "rows at or after this time (unix seconds, UTC)"),
        ("to" = Option<i64>, Query, description = "rows before this time (unix seconds, UTC)"),
        ("before" = Option<i64>, Query, description = "rows with a smaller sequence number"),
        ("limit" = Option<i64>, Query, description = "rows (default and at most 100,000; `X-Next-Before` says where to go on)"),
        ("hospital" = Option<String>, Query, description = "platform admins: one hospital's part of the log"),
    ),
    responses(
        (status = 200, description = "CSV (UTF-8 with BOM, header row, times ISO 8601 UTC) as an attachment", content_type = "text/csv", body = String,
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"audit-….csv\""),
                ("X-Next-Before" = String, description = "present when more rows match: the `before` of the next export"),
            )),
        (status = 400, description = "a filter is not what it should be (`bad_query`), or a `patient_id` in the URL (`patient_id_in_url`: export by patient with `POST /api/v1/admin/audit.csv`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, or a hospital admin asking for another hospital", body = ErrorBody),
        (status = 404, description = "no such hospital", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn export(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    run_export(state, user, from_url(query)).await
}

/// Export an audit log search as CSV, filters in the body: by patient too (admins)
#[utoipa::path(
    post,
    path = "/api/v1/admin/audit.csv",
    tag = "audit",
    request_body = AuditFilters,
    responses(
        (status = 200, description = "CSV (UTF-8 with BOM, header row, times ISO 8601 UTC) as an attachment", content_type = "text/csv", body = String,
            headers(
                ("Content-Disposition" = String, description = "attachment; filename=\"audit-….csv\""),
                ("X-Next-Before" = String, description = "present when more rows match: the `before` of the next export"),
            )),
        (status = 400, description = "a filter is not what it should be, or the body is not the filters' JSON object (`bad_query`), or the patient id is not acceptable (`invalid`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, a hospital admin asking for another hospital, or a signed-in page without its CSRF token", body = ErrorBody),
        (status = 404, description = "no such hospital", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn export_by_body(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    body: Result<Json<AuditFilters>, JsonRejection>,
) -> Result<Response, ApiError> {
    run_export(state, user, from_body(body)).await
}

/// An export, however its filters came.
async fn run_export(
    state: AppState,
    user: Principal,
    filters: Result<Filters, ApiError>,
) -> Result<Response, ApiError> {
    let (rows, limit) = matching_rows(&state, &user, "audit.export", filters, EXPORT).await?;
    let stamp: String = iso_time(pathfed_core::clock::now())
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let disposition = format!("attachment; filename=\"audit-{stamp}.csv\"");
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        csv(&rows),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    if rows.len() as i64 == limit
        && let Some(last) = rows.last()
    {
        headers.insert(
            "x-next-before",
            HeaderValue::from_str(&last.seq.to_string()).map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// Who accessed one patient's cases and slides, oldest first (admins)
#[utoipa::path(
    post,
    path = "/api/v1/admin/audit/patient",
    tag = "audit",
    request_body = PatientRequest,
    responses(
        (status = 200, description = "the patient's cases and slides and every recorded action on them", body = PatientReport),
        (status = 400, description = "no patient id, or one that is not acceptable, or the body is not the JSON object `{patient_id, hospital?}` (`bad_query`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin, a hospital admin asking for another hospital, or a signed-in page without its CSRF token", body = ErrorBody),
        (status = 404, description = "no such hospital", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn patient_report(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    body: Result<Json<PatientRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    const ACTION: &str = "audit.patient_report";
    let resolved: Result<(String, String, Subjects, String), ApiError> = async {
        if !user.role.is_hospital_admin() {
            return Err(ApiError::forbidden(
                "audit review is for hospital and platform admins",
            ));
        }
        let Json(q) = body.map_err(|e| {
            ApiError::bad_request(
                "bad_query",
                format!("send JSON {{patient_id, hospital?}}: {}", e.body_text()),
            )
        })?;
        let hospital = scope(&state, &user, given(&q.hospital))
            .await?
            .unwrap_or_else(|| user.hospital.id.clone());
        let Some(raw) = given(&q.patient_id).map(str::to_string) else {
            return Err(ApiError::bad_request(
                "bad_query",
                "patient_id is required: the patient's id as the hospital types it",
            ));
        };
        let (subjects, tag) = patient(&state, &hospital, &raw).await?;
        Ok((hospital, raw, subjects, tag))
    }
    .await;
    let (hospital, raw, subjects, tag) = match resolved {
        Ok(r) => r,
        Err(e) => return Err(refused(&state, &user, ACTION, LOG_TARGET, e).await),
    };
    let search = Search {
        subjects: vec![subjects.clone()],
        ..Search::default()
    };
    let mut accesses = Vec::new();
    let mut after = None;
    let mut truncated = false;
    if !subjects.is_empty() {
        loop {
            let page = audit::search(
                &state.platform.db,
                &search,
                Order::OldestFirst { after },
                1000,
            )
            .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.seq);
            accesses.extend(page.into_iter().map(Row::from));
            if accesses.len() > REPORT_ROWS {
                accesses.truncate(REPORT_ROWS);
                truncated = true;
                break;
            }
        }
    }
    let _ = state
        .platform
        .audit(
            AuditEvent::by(&user, ACTION, &format!("patient:{tag}"), "ok").detail(format!(
                "hospital {hospital}: {} case(s), {} slide(s), {} row(s)",
                subjects.cases.len(),
                subjects.slides.len(),
                accesses.len()
            )),
        )
        .await;
    Ok(axum::Json(PatientReport {
        patient_id: raw,
        hospital_id: hospital,
        slides: subjects.slides,
        cases: subjects.cases,
        accesses,
        truncated,
    })
    .into_response())
}

/// Check the audit chain and its signed checkpoints (admins)
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "the result: intact, or the first problem (edited, removed, reordered or recomputed rows, the newest rows removed, a forged checkpoint)", body = VerifyBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn verify(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    const ACTION: &str = "audit.verify";
    if !user.role.is_hospital_admin() {
        let e = ApiError::forbidden("audit review is for hospital and platform admins");
        return Err(refused(&state, &user, ACTION, LOG_TARGET, e).await);
    }
    let result = state.platform.verify_audit().await?;
    let detail = match &result.problem {
        None => format!(
            "intact: {} rows, {} checkpoint(s)",
            result.rows, result.checkpoints
        ),
        Some(problem) => problem.to_string(),
    };
    let _ = state
        .platform
        .audit(AuditEvent::by(&user, ACTION, LOG_TARGET, "ok").detail(detail))
        .await;
    Ok(axum::Json(VerifyBody {
        intact: result.intact(),
        rows: result.rows,
        checkpoints: result.checkpoints,
        problem: result.problem.map(|p| Problem {
            seq: p.seq,
            reason: p.reason,
        }),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@cmd"), "'@cmd");
        assert_eq!(csv_field("病理医"), "病理医");
        // Full-width signs, which a spreadsheet set up for Japanese may take as a formula, and
        // a leading tab or carriage return.
        assert_eq!(csv_field("＝1+1"), "'＝1+1");
        assert_eq!(csv_field("＋81"), "'＋81");
        assert_eq!(csv_field("－5"), "'－5");
        assert_eq!(csv_field("＠SUM(A1)"), "'＠SUM(A1)");
        assert_eq!(csv_field("\t=1"), "'\t=1");
        assert_eq!(csv_field("\r=1"), "\"'\r=1\"");
        // Only at the start.
        assert_eq!(csv_field("a＝b"), "a＝b");
    }
}
