//! The consultation API under `/api/v1/cases`, `/api/v1/taxonomies`, `/api/v1/organs`,
//! `/api/v1/hubs` and `/api/v1/stats`.
//!
//! Every handler starts from [`open_case`], which answers "not found" for cases the user may
//! not see, and every outcome (done, denied, refused) is written to the audit log with the
//! case as target.

use axum::body::Bytes;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::accounts::{self, HospitalKind, Principal, Role};
use pathfed_core::hospital_settings;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, JsonBody, audited};
use pathfed_core::routes::{Routes, delete, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::Consult;
use crate::access::{self, Relation};
use crate::annotations::{self, Annotation, AnnotationForm};
use crate::cases::{self, Case, CaseForm, ListFilter, Status};
use crate::error::{ConsultError, ConsultResult};
use crate::organs::{self, OrganList};
use crate::reads::{self, FinalForm, ReadForm};
use crate::report::{self, AmendForm, ReportVersion};
use crate::research::{self, OptOut, OptOutList};
use crate::stats;
use crate::taxonomy::Taxonomies;

/// Largest GeoJSON import accepted.
pub const MAX_GEOJSON_BYTES: usize = 16 << 20;

/// The consultation routes.
pub fn router<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Consult: FromRef<S>,
    Platform: FromRef<S>,
{
    Routes::new()
        .route("/api/v1/taxonomies", get(taxonomies))
        .route("/api/v1/organs", get(list_organs))
        .route("/api/v1/hubs", get(list_hubs))
        .route("/api/v1/stats/concordance", get(concordance))
        .route("/api/v1/cases", get(list).post(create))
        .route("/api/v1/opt-outs", get(list_opt_outs).post(opt_out))
        .merge(crate::notifications::routes())
        .route("/api/v1/cases/{id}", get(show).put(update))
        .route("/api/v1/cases/{id}/slides", post(attach))
        .route(
            "/api/v1/cases/{id}/slides/{slide}",
            delete(detach).put(label_slide),
        )
        .route("/api/v1/cases/{id}/submit", post(submit))
        .route("/api/v1/cases/{id}/cancel", post(cancel))
        .route("/api/v1/cases/{id}/claim", post(claim))
        .route("/api/v1/cases/{id}/assign", post(assign))
        .route("/api/v1/cases/{id}/reads/primary", put(primary_read))
        .route("/api/v1/cases/{id}/double-check", post(double_check))
        .route("/api/v1/cases/{id}/reads/second", put(second_read))
        .route("/api/v1/cases/{id}/adjudication", post(adjudicate))
        .route("/api/v1/cases/{id}/report/preview", get(report_preview))
        .route("/api/v1/cases/{id}/sign-out", post(sign_out))
        .route("/api/v1/cases/{id}/amendments", post(amend))
        .route("/api/v1/cases/{id}/reports", get(report_versions))
        .route("/api/v1/cases/{id}/reports/{version}", get(report_version))
        .route(
            "/api/v1/cases/{id}/reports/{version}/{file}",
            get(report_file),
        )
        .route(
            "/api/v1/cases/{id}/slides/{slide}/annotations",
            get(list_annotations).post(create_annotation),
        )
        .route(
            "/api/v1/cases/{id}/slides/{slide}/annotations.geojson",
            get(export_geojson)
                .post(import_geojson)
                .map(|m| m.layer(axum::extract::DefaultBodyLimit::max(MAX_GEOJSON_BYTES))),
        )
        .route(
            "/api/v1/cases/{id}/annotations/{annotation}",
            delete(delete_annotation),
        )
}

/// The consultation API's OpenAPI description, merged into `/openapi.json` by the server.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        taxonomies,
        list_organs,
        list_hubs,
        concordance,
        list,
        create,
        opt_out,
        list_opt_outs,
        show,
        update,
        attach,
        detach,
        label_slide,
        submit,
        cancel,
        claim,
        assign,
        primary_read,
        double_check,
        second_read,
        adjudicate,
        report_preview,
        sign_out,
        amend,
        report_versions,
        report_version,
        report_file,
        list_annotations,
        create_annotation,
        delete_annotation,
        export_geojson,
        import_geojson,
        crate::notifications::list_notifications,
        crate::notifications::mark_notification_read,
        crate::notifications::mark_all_notifications_read,
    ),
    tags((name = "consult", description = "Consultation: cases, routing, reads, double-check, \
        sign-out, reports, annotations, opt-outs"))
)]
pub struct Api;

/// The case if `user` may see it; a refusal is audited as `action`.
async fn open_case(
    consult: &Consult,
    user: &Principal,
    id: &str,
    action: &str,
) -> Result<(Case, Relation), ApiError> {
    let found = access::visible_case(
        &consult.platform.db,
        user,
        id,
        consult.access_after_close_s(),
    )
    .await;
    match found {
        Ok(found) => Ok(found),
        Err(e) => Err(audited::<(), _>(
            &consult.platform,
            user,
            action,
            &format!("case:{id}"),
            Err(e),
        )
        .await
        .err()
        .unwrap_or_else(|| ApiError::not_found("case"))),
    }
}

fn target(case: &Case) -> String {
    format!("case:{}", case.id)
}

/// The case as `relation` may see it: the patient id for the spoke (the hub's pathologists get
/// it in the case's [`detail`] where the spoke shares it), the final diagnosis for the spoke
/// only once signed out.
fn case_json(consult: &Consult, case: &Case, relation: Relation) -> Value {
    let mut value = serde_json::to_value(case).unwrap_or_default();
    match relation {
        Relation::Spoke => {
            value["patient_id"] = json!(consult.patients.decrypt(&case.patient_cipher));
            value["new_report"] = json!(case.report_version > case.report_seen_version);
            if case.status != Status::SignedOut {
                for field in ["final_code", "final_findings", "final_note", "concordant"] {
                    value[field] = Value::Null;
                }
            }
        }
        Relation::HubPathologist | Relation::HubAdmin => {}
    }
    value
}

/// Diagnosis taxonomies and the organ mapping
#[utoipa::path(
    get,
    path = "/api/v1/taxonomies",
    tag = "consult",
    responses(
        (status = 200, description = "every taxonomy in force", body = Taxonomies),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn taxonomies(
    State(consult): State<Consult>,
    Authenticated(_user): Authenticated,
) -> Response {
    axum::Json(consult.taxonomies.as_ref()).into_response()
}

/// The organs a case names: stable codes (what a case's `organ` is set to) with Japanese and English names; any other text stays accepted
#[utoipa::path(
    get,
    path = "/api/v1/organs",
    tag = "consult",
    responses(
        (status = 200, description = "`{\"organs\": [{\"code\", \"ja\", \"en\"}]}`, in the order a form lists them", body = OrganList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_organs(Authenticated(_user): Authenticated) -> Response {
    // Reference data, like the taxonomies: research pages name organs too (datasets, models).
    axum::Json(organs::list()).into_response()
}

/// A hub a case may be sent to.
#[derive(Debug, Serialize, ToSchema)]
struct HubChoice {
    /// Hospital id (what a case's `hub` may be set to).
    id: String,
    /// Hospital name.
    name: String,
    /// True for the hub the user's hospital sends to when a case names none.
    default: bool,
}

/// The answer of `GET /api/v1/hubs`.
#[derive(Debug, Serialize, ToSchema)]
struct HubList {
    /// Every hub but the user's own hospital, by name.
    hubs: Vec<HubChoice>,
}

/// Hubs the user's hospital may send cases to, its default hub marked (clinical staff)
#[utoipa::path(
    get,
    path = "/api/v1/hubs",
    tag = "consult",
    responses(
        (status = 200, description = "`{\"hubs\": [{\"id\", \"name\", \"default\"}]}`, by name", body = HubList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only clinical staff send cases (not researchers)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_hubs(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    if !user.role.sees_clinical_data() {
        let denied: ConsultResult<()> = Err(ConsultError::Forbidden(
            "only clinical staff send cases to hubs".into(),
        ));
        let target = format!("hospital:{}", user.hospital.id);
        audited(&consult.platform, &user, "case.hubs", &target, denied).await?;
    }
    let db = &consult.platform.db;
    let hospitals = accounts::list_hospitals(db).await.map_err(ApiError::from)?;
    let default_hub = accounts::default_hub(db, &user.hospital.id)
        .await
        .map_err(ApiError::from)?;
    // The same hospitals case creation accepts as a hub: hubs other than the sender.
    let hubs = hospitals
        .into_iter()
        .filter(|h| h.kind == HospitalKind::Hub && h.id != user.hospital.id)
        .map(|h| HubChoice {
            default: default_hub.as_deref() == Some(h.id.as_str()),
            id: h.id,
            name: h.name,
        })
        .collect();
    Ok(axum::Json(HubList { hubs }).into_response())
}

/// Double-check concordance of the user's hub, per taxonomy (the hub's pathologists and admins; every hub's for the platform admin)
#[utoipa::path(
    get,
    path = "/api/v1/stats/concordance",
    tag = "consult",
    responses(
        (status = 200, description = "`{\"concordance\": [...]}`, one row per hub and taxonomy", body = Object),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "hub volumes are for the hub's pathologists and admins, and the platform admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn concordance(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    // The rows count a hub's cases: clinical volumes, for the hub's own reading staff and
    // admins, and for the platform admin across hubs; never for researchers.
    let (scope, target) = match user.role {
        Role::PlatformAdmin => (Ok(None), "hospitals".to_string()),
        Role::Pathologist | Role::Admin => (
            Ok(Some(user.hospital.id.as_str())),
            format!("hospital:{}", user.hospital.id),
        ),
        Role::Submitter | Role::Researcher => (
            Err(ConsultError::Forbidden(
                "double-check statistics are for the hub's pathologists and admins".into(),
            )),
            format!("hospital:{}", user.hospital.id),
        ),
    };
    let result = match scope {
        Ok(hub) => stats::concordance(&consult.platform.db, hub).await,
        Err(e) => Err(e),
    };
    let rows = audited(&consult.platform, &user, "case.stats", &target, result).await?;
    Ok(axum::Json(json!({ "concordance": rows })).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    urgency: Option<String>,
    organ: Option<String>,
    older_than_hours: Option<u64>,
    q: Option<String>,
    mine: Option<String>,
    open: Option<String>,
}

/// A yes/no query parameter: `1` or `true` is yes; `0`, `false`, empty or absent is no.
fn query_flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::trim) {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "bad_query",
            format!("{name} must be 1 or 0, not {other:?}"),
        )),
    }
}

/// Cases the user's hospital sent or (as a hub) received, with the worklist's columns; filters status, urgency, organ, older_than_hours, q, mine, open
#[utoipa::path(
    get,
    path = "/api/v1/cases",
    tag = "consult",
    params(
        ("status" = Option<String>, Query, description = "only cases in this status"),
        ("urgency" = Option<String>, Query, description = "`routine` or `urgent`"),
        ("organ" = Option<String>, Query, description = "only cases of this organ"),
        ("older_than_hours" = Option<u64>, Query, description = "only cases submitted longer ago than this"),
        ("q" = Option<String>, Query, description = "search: a case id prefix, or a substring of the specimen or of the organ (its code or its Japanese or English name), letter case and full-width characters ignored; for the submitting hospital's own staff also a patient id, matched exactly after the normalisation case creation applies (never by a hub)"),
        ("mine" = Option<String>, Query, description = "`1`: only cases the user reads, as primary reader or double-checker"),
        ("open" = Option<String>, Query, description = "`1`: only open cases (neither signed out nor cancelled), urgent first, then those waiting longest; otherwise the latest first"),
    ),
    responses(
        (status = 200, description = "`{\"cases\": [...]}`, each as the user may see it, with `assigned_to_me`, `assignee_name` (the primary reader's shown name), `waiting_seconds` (since submission, until sign-out or cancellation) and `final_diagnosis` (`{code, label, label_ja}`, signed-out cases only)", body = Object),
        (status = 400, description = "a bad query string", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad_query", e.body_text()))?;
    let filter = ListFilter {
        status: query.status.filter(|s| !s.is_empty()),
        urgency: query.urgency.filter(|s| !s.is_empty()),
        organ: query.organ.filter(|s| !s.is_empty()),
        older_than_hours: query.older_than_hours,
        q: query.q.filter(|s| !s.trim().is_empty()),
        mine: query_flag("mine", query.mine.as_deref())?,
        open: query_flag("open", query.open.as_deref())?,
    };
    let window = consult.access_after_close_s();
    let listed = cases::list(
        &consult.platform.db,
        &consult.patients,
        &consult.taxonomies,
        &user,
        &filter,
    )
    .await;
    let all = audited(&consult.platform, &user, "case.list", "cases", listed).await?;
    let visible: Vec<Value> = all
        .iter()
        .filter_map(|item| {
            let relation = access::relation(&user, &item.case, window)?;
            let mut value = case_json(&consult, &item.case, relation);
            value["assigned_to_me"] = json!(item.assigned_to_me);
            value["assignee_name"] = json!(item.assignee_name);
            value["waiting_seconds"] = json!(item.waiting_seconds);
            value["final_diagnosis"] = json!(item.final_diagnosis);
            Some(value)
        })
        .collect();
    Ok(axum::Json(json!({ "cases": visible })).into_response())
}

/// Create a draft case
#[utoipa::path(
    post,
    path = "/api/v1/cases",
    tag = "consult",
    request_body = CaseForm,
    responses(
        (status = 201, description = "the draft", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn create(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    JsonBody(form): JsonBody<CaseForm>,
) -> Result<Response, ApiError> {
    let created = cases::create(
        &consult.platform.db,
        &consult.patients,
        &consult.taxonomies,
        &user,
        &form,
    )
    .await;
    let case = audited(&consult.platform, &user, "case.create", "cases", created).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(case_json(&consult, &case, Relation::Spoke)),
    )
        .into_response())
}

/// A patient's opt-out, by the hospital's own patient id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OptOutForm {
    /// The patient's id at the user's hospital, as typed: it is normalised as a case's is
    /// (NFKC, so full-width characters are ASCII; trimmed; letter case per the hospital's
    /// `patient_id_case` setting).
    patient_id: String,
    /// The patient's hospital (name or id), where a client names it: it must be the user's
    /// own, since an opt-out is always for the requesting user's hospital.
    #[serde(default)]
    hospital: Option<String>,
}

/// The audit action of recording an opt-out.
const OPT_OUT_ACTION: &str = "patient.opt_out";

/// Record that a patient of your hospital opts out of research use (a spoke's submitters and admins); says how many of the hospital's cases and research slides it matched
#[utoipa::path(
    post,
    path = "/api/v1/opt-outs",
    tag = "consult",
    request_body = OptOutForm,
    responses(
        (status = 201, description = "recorded, with what it matched (zero matches too: the patient's future cases are excluded)", body = OptOut),
        (status = 200, description = "already on record; the counts are today's and removal is re-checked", body = OptOut),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only a spoke's submitters and admins record opt-outs, and only for their own hospital", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn opt_out(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    JsonBody(form): JsonBody<OptOutForm>,
) -> Result<Response, ApiError> {
    let target = format!("hospital:{}", user.hospital.id);
    let result =
        research::record(&consult, &user, &form.patient_id, form.hospital.as_deref()).await;
    let recorded = match result {
        Ok(recorded) => recorded,
        Err(e) => return audited(&consult.platform, &user, OPT_OUT_ACTION, &target, Err(e)).await,
    };
    // The audit row says what the opt-out matched; it names the patient by hash prefix only.
    let event = pathfed_core::audit::AuditEvent::by(
        &user,
        OPT_OUT_ACTION,
        &target,
        pathfed_core::http::Outcome::Ok.as_str(),
    )
    .detail(recorded.audit_detail());
    // A failed append is logged by the platform; the answer stands.
    let _ = consult.platform.audit(event).await;
    let status = if recorded.newly_recorded {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(recorded)).into_response())
}

/// Your hospital's research opt-outs, newest first: who recorded each, when, and what it matched (a spoke's submitters and admins)
#[utoipa::path(
    get,
    path = "/api/v1/opt-outs",
    tag = "consult",
    responses(
        (status = 200, description = "the hospital's opt-outs", body = OptOutList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only a spoke's submitters and admins see its opt-outs", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_opt_outs(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let listed = research::list(&consult, &user).await;
    let target = format!("hospital:{}", user.hospital.id);
    let list = audited(
        &consult.platform,
        &user,
        "patient.opt_out.list",
        &target,
        listed,
    )
    .await?;
    Ok(axum::Json(list).into_response())
}

async fn detail(
    consult: &Consult,
    user: &Principal,
    case: &Case,
    relation: Relation,
) -> Result<Value, ApiError> {
    let db = &consult.platform.db;
    let mut value = case_json(consult, case, relation);
    value["relation"] = json!(match relation {
        Relation::Spoke => "spoke",
        Relation::HubPathologist => "hub_pathologist",
        Relation::HubAdmin => "hub_admin",
    });
    if relation == Relation::HubPathologist {
        // The reading pathologist checks the patient's identity (against the slide label),
        // unless the referring hospital keeps the id to itself.
        let sharing = hospital_settings::hub_sharing(db, &case.spoke_id).await?;
        if sharing.patient_id {
            value["patient_id"] = json!(consult.patients.decrypt(&case.patient_cipher));
        }
    }
    // Whether the AI panel is for this user: the server's answer, which the page follows
    // (AI support belongs to the hub pathologists who diagnose the case).
    value["ai_support"] = json!(relation == Relation::HubPathologist);
    value["slides"] = json!(cases::slides(db, &case.id).await.map_err(ApiError::from)?);
    value["reads"] = json!(
        reads::visible_reads(db, user, case)
            .await
            .map_err(ApiError::from)?
    );
    value["reports"] = json!(
        report::versions(consult, &case.id)
            .await
            .map_err(ApiError::from)?
    );
    value["taxonomy_labels"] = json!(consult.taxonomy_of(case).map_err(ApiError::from)?.labels);
    Ok(value)
}

/// A case with its slides, the reads the user may see, and report versions
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn show(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, relation) = open_case(&consult, &user, &id, "case.view").await?;
    let value = detail(&consult, &user, &case, relation).await?;
    audited(
        &consult.platform,
        &user,
        "case.view",
        &target(&case),
        Ok::<_, ConsultError>(()),
    )
    .await?;
    Ok(axum::Json(value).into_response())
}

/// Edit a draft
#[utoipa::path(
    put,
    path = "/api/v1/cases/{id}",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = CaseForm,
    responses(
        (status = 200, description = "the draft as edited", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn update(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<CaseForm>,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.update").await?;
    let updated = cases::update_draft(
        &consult.platform.db,
        &consult.patients,
        &consult.taxonomies,
        &user,
        &case,
        &form,
    )
    .await;
    let case = audited(
        &consult.platform,
        &user,
        "case.update",
        &target(&case),
        updated,
    )
    .await?;
    Ok(axum::Json(case_json(&consult, &case, Relation::Spoke)).into_response())
}

/// The slide to attach.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AttachForm {
    /// One of the spoke's slides.
    slide_id: String,
    /// Its specimen/block label in this case (e.g. `A1`): at most 40 characters, any script,
    /// trimmed.
    #[serde(default)]
    label: Option<String>,
}

/// Attach one of the spoke's slides to a draft ({slide_id, label})
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/slides",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = AttachForm,
    responses(
        (status = 204, description = "attached"),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn attach(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<AttachForm>,
) -> Result<Response, ApiError> {
    attach_slide(&consult, &user, &id, &form.slide_id, form.label.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Attaches one of the user's hospital's slides to draft case `case_id` as
/// `POST /api/v1/cases/{id}/slides` does (the case opened for the user, the outcome audited as
/// `case.attach`): also for slides that arrive naming a case, such as a STOW-RS push.
pub async fn attach_slide(
    consult: &Consult,
    user: &Principal,
    case_id: &str,
    slide_id: &str,
    label: Option<&str>,
) -> Result<(), ApiError> {
    let (case, _) = open_case(consult, user, case_id, "case.attach").await?;
    let done = cases::attach_slide(&consult.platform.db, user, &case, slide_id, label).await;
    audited(&consult.platform, user, "case.attach", &target(&case), done).await
}

/// Refuses, before any slide arrives, what [`attach_slide`] would refuse whatever the slide: a
/// case the user may not see (404) or not attach to (403), one that is no longer a draft (409);
/// refusals are audited as `case.attach`. A push naming a case is checked so before its body
/// is read.
pub async fn check_attachable(
    consult: &Consult,
    user: &Principal,
    case_id: &str,
) -> Result<(), ApiError> {
    let (case, _) = open_case(consult, user, case_id, "case.attach").await?;
    match cases::check_attach(user, &case) {
        Ok(()) => Ok(()),
        Err(refused) => {
            audited(
                &consult.platform,
                user,
                "case.attach",
                &target(&case),
                Err::<(), _>(refused),
            )
            .await
        }
    }
}

/// Detach a slide from a draft
#[utoipa::path(
    delete,
    path = "/api/v1/cases/{id}/slides/{slide}",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    responses(
        (status = 204, description = "detached"),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn detach(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.detach").await?;
    let done = cases::detach_slide(&consult.platform.db, &user, &case, &slide).await;
    audited(
        &consult.platform,
        &user,
        "case.detach",
        &target(&case),
        done,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A slide's specimen/block label within a case.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SlideLabelForm {
    /// The label, e.g. `A1` or `#2 HE`: at most 40 characters, any script, trimmed; empty (or
    /// null) clears it.
    #[serde(default)]
    label: Option<String>,
}

/// Label a slide of the case with its specimen/block ({label}): the submitting hospital while the case is a draft or waiting at the hub, the case's assigned pathologist until sign-out
#[utoipa::path(
    put,
    path = "/api/v1/cases/{id}/slides/{slide}",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    request_body = SlideLabelForm,
    responses(
        (status = 200, description = "the slide as the case now lists it: `{\"id\", \"label\"}`", body = cases::CaseSlide),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case or slide (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn label_slide(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
    JsonBody(form): JsonBody<SlideLabelForm>,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.slide_label").await?;
    let label = form.label.unwrap_or_default();
    let done = cases::set_slide_label(&consult.platform.db, &user, &case, &slide, &label).await;
    let label = audited(
        &consult.platform,
        &user,
        "case.slide_label",
        &format!("case:{}/slide:{slide}", case.id),
        done,
    )
    .await?;
    Ok(axum::Json(cases::CaseSlide { id: slide, label }).into_response())
}

/// Runs a state change and answers with the case as the user now sees it.
async fn moved(
    consult: &Consult,
    user: &Principal,
    action: &str,
    case: &Case,
    relation: Relation,
    result: ConsultResult<Case>,
) -> Result<Response, ApiError> {
    let after = audited(&consult.platform, user, action, &target(case), result).await?;
    crate::notifications::case_moved(consult, user, case, &after).await;
    Ok(axum::Json(detail(consult, user, &after, relation).await?).into_response())
}

/// Send a draft to its hub (chosen, or the spoke's default hub)
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/submit",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn submit(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.submit").await?;
    let result = cases::submit(&consult.platform.db, &user, &case).await;
    moved(&consult, &user, "case.submit", &case, rel, result).await
}

/// Withdraw a draft or submitted case
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/cancel",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn cancel(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.cancel").await?;
    let result = cases::cancel(&consult.platform.db, &user, &case).await;
    moved(&consult, &user, "case.cancel", &case, rel, result).await
}

/// A hub pathologist takes a submitted case
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/claim",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn claim(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.claim").await?;
    let result = reads::claim(&consult.platform.db, &user, &case).await;
    moved(&consult, &user, "case.claim", &case, rel, result).await
}

/// Who gets the case (or the double-check).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AssignForm {
    /// A pathologist of the hub; for the double-check, absent means "I take it".
    username: Option<String>,
}

/// Give a case to a hub pathologist ({username})
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/assign",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = AssignForm,
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn assign(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<AssignForm>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.assign").await?;
    let Some(name) = form.username.filter(|n| !n.trim().is_empty()) else {
        return Err(ApiError::bad_request("invalid", "username is required"));
    };
    let result = reads::assign(&consult.platform.db, &user, &case, name.trim()).await;
    moved(&consult, &user, "case.assign", &case, rel, result).await
}

/// Enter or revise the first read
#[utoipa::path(
    put,
    path = "/api/v1/cases/{id}/reads/primary",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = ReadForm,
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn primary_read(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<ReadForm>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.diagnose").await?;
    let result = async {
        reads::enter_primary(
            &consult.platform.db,
            consult.taxonomy_of(&case)?,
            &user,
            &case,
            &form,
        )
        .await
    }
    .await;
    moved(&consult, &user, "case.diagnose", &case, rel, result).await
}

/// Take the blind double-check (empty body) or give it to {username}; never the first reader
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/double-check",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = Option<AssignForm>,
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn double_check(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.double_check").await?;
    // An empty body means "I take it"; {"username": …} gives it to a colleague.
    let form: AssignForm = if body.iter().all(u8::is_ascii_whitespace) {
        AssignForm { username: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_body", format!("send {{\"username\"}}: {e}")))?
    };
    let result =
        reads::start_double_check(&consult.platform.db, &user, &case, form.username.as_deref())
            .await;
    moved(&consult, &user, "case.double_check", &case, rel, result).await
}

/// Enter the blind double-check read; concordant → ready_for_sign_out, discordant → adjudication
#[utoipa::path(
    put,
    path = "/api/v1/cases/{id}/reads/second",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = ReadForm,
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn second_read(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<ReadForm>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.diagnose").await?;
    let result = async {
        reads::enter_second(
            &consult.platform.db,
            consult.taxonomy_of(&case)?,
            &user,
            &case,
            &form,
        )
        .await
    }
    .await;
    moved(
        &consult,
        &user,
        "case.double_check_read",
        &case,
        rel,
        result,
    )
    .await
}

/// Record the agreed diagnosis after discordant reads ({code, findings, note})
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/adjudication",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = FinalForm,
    responses(
        (status = 200, description = "the case as the user now sees it: fields, relation, slides, reads, reports, taxonomy labels", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn adjudicate(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(form): JsonBody<FinalForm>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_case(&consult, &user, &id, "case.adjudicate").await?;
    let result = async {
        reads::adjudicate(
            &consult.platform.db,
            consult.taxonomy_of(&case)?,
            &user,
            &case,
            &form,
        )
        .await
    }
    .await;
    moved(&consult, &user, "case.adjudicate", &case, rel, result).await
}

/// The report as it would be issued if the caller signed the case out now, as HTML marked as a preview (for a reader who may sign out now)
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/report/preview",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "the report as HTML, in the reading hospital's language, marked as a preview and without a hash", content(("text/html"))),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only the case's two readers sign it out", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case cannot be signed out now (no settled diagnosis, or already signed out)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn report_preview(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.report.preview").await?;
    let built = report::preview(&consult, &user, &case).await;
    let page = audited(
        &consult.platform,
        &user,
        "case.report.preview",
        &target(&case),
        built,
    )
    .await?;
    let mut response = page.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // It changes as the case does and names the patient: never kept by a cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Like the issued HTML: its own styles, nothing else may load or run in it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; font-src 'self'"),
    );
    Ok(response)
}

/// What a sign-out may carry: the second-factor code the hospital's policy may ask for.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignOutForm {
    /// A current code from the signer's authenticator app, when their hospital asks for one
    /// to sign out (a code given in this session within `auth.fresh_second_factor_minutes`
    /// also counts).
    second_factor_code: Option<String>,
}

/// Refuses (and audits under `action`) a signature — a sign-out or an amendment — when the
/// signer's hospital asks for a fresh second factor and neither `code` nor the request's
/// session gives one.
async fn fresh_second_factor(
    consult: &Consult,
    user: &Principal,
    case: &Case,
    headers: &axum::http::HeaderMap,
    code: Option<&str>,
    action: &str,
) -> Result<(), ApiError> {
    let session = pathfed_core::http::session_cookie(headers);
    let fresh =
        pathfed_core::second_factor::check_fresh(&consult.platform, user, session.as_deref(), code)
            .await;
    if let Err(e) = fresh {
        let outcome = match e {
            pathfed_core::CoreError::FreshSecondFactorRequired(_) => "denied",
            _ => "failed",
        };
        let event = pathfed_core::audit::AuditEvent::by(user, action, &target(case), outcome)
            .detail(e.to_string());
        let _ = consult.platform.audit(event).await;
        return Err(e.into());
    }
    Ok(())
}

/// Sign out: issues report version 1 (empty body, or {second_factor_code} when the hospital asks for one)
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/sign-out",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = Option<SignOutForm>,
    responses(
        (status = 200, description = "the issued report version", body = ReportVersion),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this; \
            or `fresh_second_factor_required`: the signer's hospital asks for a current \
            second-factor code to sign out, and none (or a wrong one) was given", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn sign_out(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.sign_out").await?;
    let form: SignOutForm = if body.iter().all(u8::is_ascii_whitespace) {
        SignOutForm::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_body", format!("send {{\"second_factor_code\"}}: {e}"))
        })?
    };
    // A sign-out is an electronic signature: the hospital may ask for a fresh second factor.
    let code = form.second_factor_code.as_deref();
    fresh_second_factor(&consult, &user, &case, &headers, code, "case.sign_out").await?;
    let result = report::sign_out(&consult, &user, &case).await;
    let version = audited(
        &consult.platform,
        &user,
        "case.sign_out",
        &target(&case),
        result,
    )
    .await?;
    crate::notifications::report_issued(&consult, &user, &case.id, version.version).await;
    Ok(axum::Json(version).into_response())
}

/// Amend after sign-out ({code, findings, reason, second_factor_code?}): issues the next report version
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/amendments",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    request_body = AmendForm,
    responses(
        (status = 200, description = "the issued report version", body = ReportVersion),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this; \
            or `fresh_second_factor_required`: the signer's hospital asks for a current \
            second-factor code to sign (as for a sign-out), and none (or a wrong one) was given", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn amend(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    JsonBody(form): JsonBody<AmendForm>,
) -> Result<Response, ApiError> {
    let (case, _) = open_case(&consult, &user, &id, "case.amend").await?;
    // An amendment issues a new signed version: the same fresh second factor as a sign-out.
    let code = form.second_factor_code.as_deref();
    fresh_second_factor(&consult, &user, &case, &headers, code, "case.amend").await?;
    let result = report::amend(&consult, &user, &case, &form).await;
    let version = audited(
        &consult.platform,
        &user,
        "case.amend",
        &target(&case),
        result,
    )
    .await?;
    crate::notifications::report_issued(&consult, &user, &case.id, version.version).await;
    Ok(axum::Json(version).into_response())
}

/// Reports are for the spoke once signed out and for the hub's pathologists.
async fn open_reports(
    consult: &Consult,
    user: &Principal,
    id: &str,
    action: &str,
) -> Result<(Case, Relation), ApiError> {
    let (case, relation) = open_case(consult, user, id, action).await?;
    if relation == Relation::HubAdmin {
        let denied: ConsultResult<()> = Err(ConsultError::Forbidden(
            "reports are for the case's pathologists and the submitting hospital".into(),
        ));
        audited(&consult.platform, user, action, &target(&case), denied).await?;
    }
    Ok((case, relation))
}

/// Report versions
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/reports",
    tag = "consult",
    params(("id" = String, Path, description = "case id")),
    responses(
        (status = 200, description = "`{\"reports\": [...]}`, each a report version", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn report_versions(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (case, _) = open_reports(&consult, &user, &id, "case.reports").await?;
    let versions = report::versions(&consult, &case.id)
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(json!({ "reports": versions })).into_response())
}

/// One version: content hash, PDF SHA-256, who signed and when
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/reports/{version}",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("version" = i64, Path, description = "report version (1 is the sign-out)"),
    ),
    responses(
        (status = 200, description = "the report version", body = ReportVersion),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn report_version(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let (case, _) = open_reports(&consult, &user, &id, "case.report").await?;
    let found = report::version(&consult, &case.id, version).await;
    let version = audited(
        &consult.platform,
        &user,
        "case.report",
        &target(&case),
        found,
    )
    .await?;
    Ok(axum::Json(version).into_response())
}

/// report.pdf, report.html or report.json of a version
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/reports/{version}/{file}",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("version" = i64, Path, description = "report version (1 is the sign-out)"),
        ("file" = String, Path, description = "`report.pdf`, `report.html` or `report.json`"),
    ),
    responses(
        (status = 200, description = "the file", content(("application/pdf"), ("text/html"), ("application/json"))),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn report_file(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, version, file)): Path<(String, i64, String)>,
) -> Result<Response, ApiError> {
    let (case, relation) = open_reports(&consult, &user, &id, "case.report.download").await?;
    let content_type = match file.as_str() {
        "report.pdf" => "application/pdf",
        "report.html" => "text/html; charset=utf-8",
        "report.json" => "application/json",
        _ => return Err(ApiError::not_found("report file")),
    };
    let loaded = async {
        report::version(&consult, &case.id, version).await?;
        report::file(&consult, &case, version, &file).await
    }
    .await;
    let bytes = audited(
        &consult.platform,
        &user,
        "case.report.download",
        &format!("case:{}/report:v{version}/{file}", case.id),
        loaded,
    )
    .await?;
    if relation == Relation::Spoke {
        let _ = report::mark_seen(&consult, &case, version).await;
    }
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "inline; filename=\"report-{}-v{version}.{}\"",
        case.id,
        file.rsplit('.').next().unwrap_or("bin")
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    // The HTML report carries its own styles; nothing else may load or run in it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; font-src 'self'"),
    );
    Ok(response)
}

/// Annotation endpoints are for people who may see the slides: not hub admins.
async fn open_for_slides(
    consult: &Consult,
    user: &Principal,
    id: &str,
    action: &str,
) -> Result<(Case, Relation), ApiError> {
    let (case, relation) = open_case(consult, user, id, action).await?;
    if relation == Relation::HubAdmin {
        let denied: ConsultResult<()> = Err(ConsultError::NotFound("case"));
        audited(&consult.platform, user, action, &target(&case), denied).await?;
    }
    Ok((case, relation))
}

/// Annotations of a slide the user may see
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/slides/{slide}/annotations",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    responses(
        (status = 200, description = "`{\"annotations\": [...]}`", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_annotations(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_for_slides(&consult, &user, &id, "case.annotations").await?;
    let found = annotations::visible(&consult.platform.db, &user, &case, rel, &slide).await;
    let list = audited(
        &consult.platform,
        &user,
        "case.annotations",
        &target(&case),
        found,
    )
    .await?;
    Ok(axum::Json(json!({ "annotations": list })).into_response())
}

/// Add an annotation (polygon, rectangle, point, text)
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/slides/{slide}/annotations",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    request_body = AnnotationForm,
    responses(
        (status = 201, description = "the annotation", body = Annotation),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn create_annotation(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
    JsonBody(form): JsonBody<AnnotationForm>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_for_slides(&consult, &user, &id, "case.annotate").await?;
    let result = async {
        annotations::create(
            &consult.platform.db,
            consult.taxonomy_of(&case)?,
            &user,
            &case,
            rel,
            &slide,
            &form,
        )
        .await
    }
    .await;
    let created = audited(
        &consult.platform,
        &user,
        "case.annotate",
        &target(&case),
        result,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Remove one of your annotations
#[utoipa::path(
    delete,
    path = "/api/v1/cases/{id}/annotations/{annotation}",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("annotation" = String, Path, description = "annotation id"),
    ),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn delete_annotation(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, annotation)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_for_slides(&consult, &user, &id, "case.annotate").await?;
    let result = annotations::delete(&consult.platform.db, &user, &case, rel, &annotation).await;
    audited(
        &consult.platform,
        &user,
        "case.annotation.delete",
        &target(&case),
        result,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Annotations as QuPath-readable GeoJSON
#[utoipa::path(
    get,
    path = "/api/v1/cases/{id}/slides/{slide}/annotations.geojson",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    responses(
        (status = 200, description = "a GeoJSON FeatureCollection", content_type = "application/geo+json", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn export_geojson(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_for_slides(&consult, &user, &id, "case.annotations.export").await?;
    let taxonomy = consult.taxonomy_of(&case).map_err(ApiError::from)?;
    let found = annotations::visible(&consult.platform.db, &user, &case, rel, &slide).await;
    let list = audited(
        &consult.platform,
        &user,
        "case.annotations.export",
        &target(&case),
        found,
    )
    .await?;
    let mut response = axum::Json(annotations::to_geojson(&list, taxonomy)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/geo+json"),
    );
    Ok(response)
}

/// Import GeoJSON (Feature or FeatureCollection), all or nothing
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/slides/{slide}/annotations.geojson",
    tag = "consult",
    params(
        ("id" = String, Path, description = "case id"),
        ("slide" = String, Path, description = "slide id"),
    ),
    request_body(content = Object, content_type = "application/geo+json", description = "a GeoJSON Feature or FeatureCollection (at most 16 MiB)"),
    responses(
        (status = 201, description = "`{\"annotations\": [...]}`, the imported annotations", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role or relation to the case does not allow this", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the case is not in a state that allows this", body = ErrorBody),
        (status = 413, description = "larger than the import limit", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn import_geojson(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path((id, slide)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let (case, rel) = open_for_slides(&consult, &user, &id, "case.annotations.import").await?;
    let body = body.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "GeoJSON imports are limited to {} MiB",
                MAX_GEOJSON_BYTES >> 20
            ),
        )
    })?;
    let result = async {
        annotations::import(
            &consult.platform.db,
            consult.taxonomy_of(&case)?,
            &user,
            &case,
            rel,
            &slide,
            &body,
        )
        .await
    }
    .await;
    let imported = audited(
        &consult.platform,
        &user,
        "case.annotations.import",
        &target(&case),
        result,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "annotations": imported })),
    )
        .into_response())
}
