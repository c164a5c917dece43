//! STOW-RS, the DICOMweb store transaction (DICOM PS3.18 §10.5): `POST /dicomweb/studies` and
//! `POST /dicomweb/studies/{study}`, so a scanner or an archive can push a whole-slide image.
//!
//! The body is `multipart/related; type="application/dicom"`, one instance per part.
//! `pathfed_ingest::stow` streams it to the staging folder, refuses the whole request as soon as
//! a part is not DICOM or names a transfer syntax the reader does not decode, and registers each
//! series as one slide of the user's hospital through the same steps as a zip of its instances.
//! This route adds what is HTTP's and the platform's:
//!
//! - **Who**: the platform's authentication (session or API token) and the roles that may
//!   upload over tus (submitter, pathologist, admin, platform admin); others get 403, audited.
//! - **Case**: `?case=<id>` attaches the new slides to that draft case, as
//!   `POST /api/v1/cases/{id}/slides` does. The case is checked before the body is read, so a
//!   push naming a case that cannot take slides is refused before anything is stored; if it
//!   stopped being a draft while the body arrived, the slides stay registered and the answer is
//!   the refusal (a repeated push finds the same slides and attaches them).
//! - **Answer**: `application/dicom+json` (the only `Accept`ed type; absent or a wildcard is
//!   fine, anything else is 406), the Store Instances Response Module: (0008,1190) the study's
//!   Retrieve URL (one slide), (0008,1199) every stored instance's SOP Class and Instance UIDs
//!   and Retrieve URL, (0008,1198) every instance not stored with its Failure Reason
//!   (`pathfed_ingest::stow::reason`). 200 when every instance was stored, 202 when some were
//!   not. The DICOMweb routes (`dicomweb`) serve a slide as a DICOM view of its own: the study
//!   `2.25.<slide UUID as a decimal number>`, its one series that UID with `.1` added, an
//!   instance per pyramid level; so a stored instance's Retrieve URL is that series'. The
//!   `Pathfed-Slide-Id` header names the slides (comma-separated), as the tus upload's does.
//! - **Refusals** of the whole request, and a request of which no instance could be stored, are
//!   the platform's JSON error body (400, 404, 406, 409, 413, 415, 422), so every error this
//!   API gives has one shape; a DICOMweb client sees the status.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, post};
use pathfed_ingest::stow::{self, Outcome};
use pathfed_ingest::tus::SLIDE_ID_HEADER;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::{AppState, public_origin};
use super::{accept, uids};

/// Where the DICOMweb routes live.
const PREFIX: &str = "/dicomweb";
/// The one media type a store answer comes in.
const DICOM_JSON: &str = "application/dicom+json";

/// The store routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/dicomweb/studies", post(store))
        .route("/dicomweb/studies/{study}", post(store_in_study))
}

/// The store routes' OpenAPI description, merged into `/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(paths(store, store_in_study))]
pub struct Api;

/// The query of a store request.
#[derive(Debug, Deserialize)]
struct StoreQuery {
    /// A draft case of the user's hospital to attach the new slides to.
    case: Option<String>,
}

/// Store DICOM instances (STOW-RS); each whole-slide series becomes one slide
///
/// The body is `multipart/related; type="application/dicom"` with one DICOM instance per part
/// (PS3.18 10.5). Every VL Whole Slide Microscopy Image series in it (its VOLUME levels, and
/// LABEL, OVERVIEW and THUMBNAIL where present) becomes one slide of the user's hospital, as a
/// zip of its instances would; the same series pushed again is the same slide. Transfer
/// syntaxes: JPEG baseline, JPEG 2000, explicit VR little endian; a part in any other, or not
/// DICOM at all, refuses the whole request as soon as its header arrives.
#[utoipa::path(
    post,
    path = "/dicomweb/studies",
    tag = "dicomweb",
    params(("case" = Option<String>, Query, description = "a draft case of the user's hospital: \
        the new slides are attached to it")),
    request_body(content_type = "multipart/related",
        description = "`multipart/related; type=\"application/dicom\"; boundary=…`: one DICOM \
            Part 10 instance per part"),
    responses(
        (status = 200, description = "every instance stored: the Store Instances Response \
            Module (DICOM JSON)", content_type = "application/dicom+json", body = Object,
            headers(("Pathfed-Slide-Id" = String, description = "the slides made (or found \
                identical), comma-separated"))),
        (status = 202, description = "some instances stored, others not: their Failure Reasons \
            are in the Failed SOP Sequence (0008,1198)", content_type = "application/dicom+json",
            body = Object),
        (status = 400, description = "a body that is not multipart, names no boundary or holds \
            no part (`stow_bad_body`, `stow_empty`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the role cannot upload slides, or cannot attach to the case", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`Accept` excludes application/dicom+json (`dicomweb_not_acceptable`)", body = ErrorBody),
        (status = 409, description = "no instance stored: of another study than the path names \
            (`stow_study_mismatch`), sent twice, failures of several kinds \
            (`stow_nothing_stored`), or the case is no longer a draft", body = ErrorBody),
        (status = 413, description = "the body passes `ingest.max_upload_bytes` \
            (`upload_too_large`) or the hospital's upload quota (`quota_exceeded`), or has \
            more parts than `ingest.zip_max_entries` (`stow_too_many_parts`)", body = ErrorBody),
        (status = 415, description = "not `multipart/related; type=\"application/dicom\"`, or a \
            part that is not DICOM (`stow_content_type`, `not_dicom`)", body = ErrorBody),
        (status = 422, description = "a part's transfer syntax is not read \
            (`unsupported_transfer_syntax`, named), a header cannot be read (`invalid_dicom`), \
            or no series is a readable whole-slide image (`not_a_slide`, `invalid_slide`, …)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn store(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Query(query): Query<StoreQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(&state, &user, None, query, (&uri, &headers), body).await
}

/// Store DICOM instances of one study (STOW-RS); each whole-slide series becomes one slide
///
/// As `POST /dicomweb/studies`; instances whose Study Instance UID is not `{study}` are not
/// stored (Failure Reason C409).
#[utoipa::path(
    post,
    path = "/dicomweb/studies/{study}",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "the Study Instance UID every instance must have"),
        ("case" = Option<String>, Query, description = "a draft case of the user's hospital: \
            the new slides are attached to it"),
    ),
    request_body(content_type = "multipart/related",
        description = "`multipart/related; type=\"application/dicom\"; boundary=…`: one DICOM \
            Part 10 instance per part"),
    responses(
        (status = 200, description = "every instance stored: the Store Instances Response \
            Module (DICOM JSON)", content_type = "application/dicom+json", body = Object,
            headers(("Pathfed-Slide-Id" = String, description = "the slides made (or found \
                identical), comma-separated"))),
        (status = 202, description = "some instances stored, others not (Failed SOP Sequence)",
            content_type = "application/dicom+json", body = Object),
        (status = 400, description = "a body that is not multipart, names no boundary or holds \
            no part", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the role cannot upload slides, or cannot attach to the case", body = ErrorBody),
        (status = 404, description = "no such case (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`Accept` excludes application/dicom+json", body = ErrorBody),
        (status = 409, description = "no instance stored: of another study (`stow_study_mismatch`), \
            or for several reasons; or the case is no longer a draft", body = ErrorBody),
        (status = 413, description = "over the size limit, the hospital's quota or the part count", body = ErrorBody),
        (status = 415, description = "not multipart/related DICOM, or a part that is not DICOM", body = ErrorBody),
        (status = 422, description = "an unsupported transfer syntax (named), an unreadable \
            header, or no readable whole-slide series", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn store_in_study(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(study): Path<String>,
    Query(query): Query<StoreQuery>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(
        &state,
        &user,
        Some(study.as_str()),
        query,
        (&uri, &headers),
        body,
    )
    .await
}

/// The store transaction: who may, the case, the instances, the answer.
async fn receive(
    state: &AppState,
    user: &Principal,
    study: Option<&str>,
    query: StoreQuery,
    (uri, headers): (&Uri, &HeaderMap),
    body: Body,
) -> Result<Response, ApiError> {
    if !pathfed_ingest::can_upload(user.role) {
        let _ = state
            .platform
            .audit(AuditEvent::by(user, "slide.stow", "dicomweb", "denied"))
            .await;
        return Err(ApiError::forbidden("your role cannot upload slides"));
    }
    accept::json(headers)?;
    if let Some(case) = &query.case {
        pathfed_consult::api::check_attachable(&state.consult, user, case).await?;
    }
    let request = stow::Request {
        user,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        content_length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        study,
    };
    let outcome = stow::receive(&state.ingest, &request, body).await?;
    if outcome.stored.is_empty() {
        return Err(nothing_stored(&outcome));
    }
    if let Some(case) = &query.case {
        for slide in &outcome.slides {
            pathfed_consult::api::attach_slide(&state.consult, user, case, &slide.id, None).await?;
        }
    }
    // Relative Retrieve URLs where the request names no usable host.
    let origin = public_origin(&state.platform, headers, uri).unwrap_or_default();
    answer(&origin, &outcome)
}

/// The answer when no instance was stored: the refusal itself when all share one code, else
/// 409 listing the reasons.
fn nothing_stored(outcome: &Outcome) -> ApiError {
    let Some(first) = outcome.failed.first() else {
        return ApiError::bad_request("stow_empty", "the request holds no DICOM instance");
    };
    if outcome
        .failed
        .iter()
        .all(|f| f.error.code == first.error.code)
    {
        return first.error.clone();
    }
    let mut reasons: Vec<&str> = Vec::new();
    for failed in &outcome.failed {
        if !reasons.contains(&failed.error.message.as_str()) && reasons.len() < 5 {
            reasons.push(&failed.error.message);
        }
    }
    ApiError::new(
        StatusCode::CONFLICT,
        "stow_nothing_stored",
        format!(
            "none of the {} instances was stored: {}",
            outcome.failed.len(),
            reasons.join("; ")
        ),
    )
}

/// The Store Instances Response Module (PS3.18 Annex I) as DICOM JSON.
fn answer(origin: &str, outcome: &Outcome) -> Result<Response, ApiError> {
    let study_url = |slide_id: &str| {
        uids::study_uid(slide_id).map(|uid| format!("{origin}{PREFIX}/studies/{uid}"))
    };
    // The study's URL only when the request made one study (one slide).
    let whole = match outcome.slides.as_slice() {
        [slide] => study_url(&slide.id),
        _ => None,
    };
    let referenced: Vec<Value> = outcome
        .stored
        .iter()
        .map(|stored| {
            // The DICOMweb routes serve a slide as a view of its own (one series, one instance
            // per level, UIDs computed from the slide's id), not the pushed instances under
            // their UIDs: an instance is retrieved as part of that series.
            let url = uids::study_uid(&stored.slide_id).map(|uid| {
                format!(
                    "{origin}{PREFIX}/studies/{uid}/series/{}",
                    uids::series_uid(&uid)
                )
            });
            json!({
                // Referenced SOP Class UID, Referenced SOP Instance UID, Retrieve URL.
                "00081150": element("UI", Some(json!(stored.ids.class))),
                "00081155": element("UI", Some(json!(stored.ids.instance))),
                "00081190": element("UR", url.map(Value::from)),
            })
        })
        .collect();
    let mut module = serde_json::Map::new();
    // Retrieve URL (0008,1190) and Referenced SOP Sequence (0008,1199).
    module.insert("00081190".into(), element("UR", whole.map(Value::from)));
    module.insert("00081199".into(), sequence(referenced));
    if !outcome.failed.is_empty() {
        let failed: Vec<Value> = outcome
            .failed
            .iter()
            .map(|failed| {
                json!({
                    // Referenced SOP Class UID, Referenced SOP Instance UID, Failure Reason.
                    "00081150": element("UI", Some(json!(failed.ids.class))),
                    "00081155": element("UI", Some(json!(failed.ids.instance))),
                    "00081197": element("US", Some(json!(failed.reason))),
                })
            })
            .collect();
        // Failed SOP Sequence (0008,1198).
        module.insert("00081198".into(), sequence(failed));
    }
    let status = if outcome.failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let slides: Vec<&str> = outcome.slides.iter().map(|s| s.id.as_str()).collect();
    let body = serde_json::to_vec(&Value::Object(module)).map_err(ApiError::internal)?;
    Ok((
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON)),
            (
                header::HeaderName::from_static(SLIDE_ID_HEADER),
                HeaderValue::from_str(&slides.join(",")).map_err(ApiError::internal)?,
            ),
        ],
        body,
    )
        .into_response())
}

/// A DICOM JSON attribute of one value, or of none.
fn element(vr: &str, value: Option<Value>) -> Value {
    match value {
        Some(value) => json!({ "vr": vr, "Value": [value] }),
        None => json!({ "vr": vr }),
    }
}

/// A DICOM JSON sequence of items.
fn sequence(items: Vec<Value>) -> Value {
    json!({ "vr": "SQ", "Value": items })
}
