//! DICOMweb for every slide a user may see, whatever format it was uploaded in: a slide is
//! served as a DICOM VL Whole Slide Microscopy Image study, so that DICOMweb viewers and tools
//! (OHIF/Slim, QuPath, dicomweb-client, wsidicom) open clinical slides. Base `/dicomweb`:
//!
//! - **QIDO-RS**: `studies`, `series`, `studies/{study}/series`, `studies/{study}/instances`,
//!   `studies/{study}/series/{series}/instances` ([`query`] says what is matched).
//! - **WADO-RS**: metadata of a study, a series or an instance (`application/dicom+json`);
//!   `…/instances/{instance}/frames/{frames}` (`multipart/related; type="image/jpeg"`, JPEG
//!   baseline, or `type="application/octet-stream"` for `transfer-syntax=*` as
//!   dicom-microscopy-viewer asks; frames numbered from 1, at most [`frames::MAX_FRAMES`] at once); and rendered
//!   images: `…/instances/{instance}/rendered` (a whole level, when it fits
//!   [`MAX_RENDERED_SIDE`] and `slide.max_region_pixels`) and `…/frames/{n}/rendered`, as JPEG
//!   or PNG. Anything else asked for in `Accept` is 406 with the JSON error body.
//! - **STOW-RS**: `POST studies` and `POST studies/{study}` ([`stow`]): a scanner or archive
//!   pushes a DICOM WSI series, which becomes one slide of the pusher's hospital.
//!
//! **The DICOM view of a slide**: one study per slide, one series, one instance per pyramid
//! level (VOLUME; level 0 ORIGINAL, the others DERIVED), frames `TILED_FULL` in rows. The UIDs
//! are computed from the slide's id ([`uids`]), so nothing new is stored and a UID the server
//! never gave is simply an unknown slide. A slide uploaded as SVS is a DICOM WSI whose frames
//! are its stored JPEG tiles, byte for byte ([`frames`]). The label and the overview (macro)
//! image are **not** offered as LABEL or OVERVIEW instances: they can show the patient's name
//! or number; so, for the same reason, patient and study identity stay empty ([`json`]) and
//! stay in the case system, behind its own access rules.
//!
//! **Access and audit are the tile API's**: every request naming a study goes through
//! [`visible_slide`] (404 for other hospitals' slides exactly as for unknown ids and for UIDs
//! that name no slide, 403 for roles without clinical access, each refusal audited); a study
//! search without a Study Instance UID lists the user's hospital's slides, and one naming UIDs
//! also finds the slides of cases the user reads at a hub. A user's DICOMweb access to a slide is
//! audited once per hour as `slide.dicomweb`.
//!
//! **Caching and CORS**: frames and rendered images are immutable and carry strong ETags and
//! long private cache lifetimes (`tiles.browser_cache`), metadata an ETag of its content; every
//! answer allows any origin without credentials, as IIIF does, so a viewer on another origin
//! authenticates with an API token (`Authorization: Bearer`).

mod accept;
mod frames;
mod json;
mod query;
pub(super) mod stow;
mod uids;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder as _, RgbImage};
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, get};
use pathfed_ingest::slides::{self, Slide};
use pathfed_slide::SlideError;
use serde_json::Value;
use sha2::Digest as _;

use self::accept::Rendered;
use self::frames::Tiling;
use self::json::{DataSet, JPEG_BASELINE};
use self::query::Query;
use super::AppState;
use super::cors::{allow_any_origin, preflight};
use super::slides::{Need, OpenedSlide, audit_viewing, etag_matches, private_cache, visible_slide};

/// The audit action of DICOMweb access and of its refusals.
const ACTION: &str = "slide.dicomweb";
/// The media type of search results and metadata.
const DICOM_JSON: &str = "application/dicom+json";
/// Largest width and height of a rendered level (4096² RGB is 48 MiB), as IIIF's answers.
const MAX_RENDERED_SIDE: u64 = 4096;
/// Changes whenever the bytes of a frame or rendered image of the same slide would change
/// (frame grid, colour model, encoders), so that no cached copy outlives it.
const IMAGE_VERSION: &str = "dw1";

/// The DICOMweb routes, each with its CORS preflight.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .merge(stow::router())
        .route(
            "/dicomweb/studies",
            get(search_studies)
                .options(preflight_studies)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/series",
            get(search_all_series)
                .options(preflight_all_series)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/metadata",
            get(study_metadata)
                .options(preflight_study_metadata)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series",
            get(search_series)
                .options(preflight_series)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/instances",
            get(search_study_instances)
                .options(preflight_study_instances)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/metadata",
            get(series_metadata)
                .options(preflight_series_metadata)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances",
            get(search_instances)
                .options(preflight_instances)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(instance_metadata)
                .options(preflight_instance_metadata)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
            get(rendered_instance)
                .options(preflight_rendered_instance)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(retrieve_frames)
                .options(preflight_frames)
                .map(allow_any_origin),
        )
        .route(
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            get(rendered_frame)
                .options(preflight_rendered_frame)
                .map(allow_any_origin),
        )
}

/// The DICOMweb routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        search_studies,
        search_all_series,
        study_metadata,
        search_series,
        search_study_instances,
        series_metadata,
        search_instances,
        instance_metadata,
        rendered_instance,
        retrieve_frames,
        rendered_frame,
        preflight_studies,
        preflight_all_series,
        preflight_study_metadata,
        preflight_series,
        preflight_study_instances,
        preflight_series_metadata,
        preflight_instances,
        preflight_instance_metadata,
        preflight_rendered_instance,
        preflight_frames,
        preflight_rendered_frame
    ),
    tags((name = "dicomweb", description = "DICOMweb (QIDO-RS, WADO-RS) over every slide the \
        user may see, as DICOM whole-slide images whose frames are the stored tiles; the slide \
        API's access rules; CORS for viewers on other origins, which authenticate with an API \
        token"))
)]
pub struct Api;

/// One documented preflight handler per route (`tt` fragments, so that the documentation's
/// literals reach `utoipa` as literals).
macro_rules! preflights {
    ($($name:ident => $path:tt $(, params $params:tt)?;)*) => {$(
        /// CORS preflight: GET allowed from any origin
        #[utoipa::path(
            options,
            path = $path,
            tag = "dicomweb",
            security(()),
            $(params $params,)?
            responses((status = 204, description = "GET allowed from any origin with the \
                `Authorization` header"))
        )]
        async fn $name() -> Response {
            preflight()
        }
    )*};
}

preflights! {
    preflight_studies => "/dicomweb/studies";
    preflight_all_series => "/dicomweb/series";
    preflight_study_metadata => "/dicomweb/studies/{study}/metadata",
        params(("study" = String, Path, description = "Study Instance UID"));
    preflight_series => "/dicomweb/studies/{study}/series",
        params(("study" = String, Path, description = "Study Instance UID"));
    preflight_study_instances => "/dicomweb/studies/{study}/instances",
        params(("study" = String, Path, description = "Study Instance UID"));
    preflight_series_metadata => "/dicomweb/studies/{study}/series/{series}/metadata",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
        );
    preflight_instances => "/dicomweb/studies/{study}/series/{series}/instances",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
        );
    preflight_instance_metadata =>
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
            ("instance" = String, Path, description = "SOP Instance UID"),
        );
    preflight_rendered_instance =>
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
            ("instance" = String, Path, description = "SOP Instance UID"),
        );
    preflight_frames =>
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
            ("instance" = String, Path, description = "SOP Instance UID"),
            ("frames" = String, Path, description = "frame numbers"),
        );
    preflight_rendered_frame =>
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        params(
            ("study" = String, Path, description = "Study Instance UID"),
            ("series" = String, Path, description = "Series Instance UID"),
            ("instance" = String, Path, description = "SOP Instance UID"),
            ("frames" = String, Path, description = "one frame number"),
        );
}

/// Search for studies (QIDO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies",
    tag = "dicomweb",
    params(
        ("StudyInstanceUID" = Option<String>, Query, description = "Study Instance UIDs \
            (comma-separated, or the key repeated): also finds the slides of cases the user \
            reads at a hub; without it, the slides of the user's hospital"),
        ("ModalitiesInStudy" = Option<String>, Query, description = "`SM`"),
        ("limit" = Option<u32>, Query, description = "results per answer (at most 1000)"),
        ("offset" = Option<u32>, Query, description = "results to skip"),
        ("includefield" = Option<String>, Query, description = "accepted; every answer holds \
            all the attributes there are"),
    ),
    responses(
        (status = 200, description = "a JSON array of studies in DICOM JSON (patient identity \
            empty); a `Warning` header names ignored keys and says when more results remain",
            body = Object, content_type = "application/dicom+json"),
        (status = 400, description = "`dicomweb_bad_query`: a limit, offset or list that does \
            not parse or is too long", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`: `Accept` names nothing but \
            other types than `application/dicom+json`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_studies(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search_slides(
        &state,
        &user,
        query.as_deref(),
        &headers,
        json::study_result,
    )
    .await
}

/// Search for series of any study (QIDO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/series",
    tag = "dicomweb",
    params(
        ("StudyInstanceUID" = Option<String>, Query, description = "Study Instance UIDs, as \
            for studies"),
        ("SeriesInstanceUID" = Option<String>, Query, description = "Series Instance UIDs"),
        ("Modality" = Option<String>, Query, description = "`SM`"),
        ("limit" = Option<u32>, Query, description = "results per answer (at most 1000)"),
        ("offset" = Option<u32>, Query, description = "results to skip"),
    ),
    responses(
        (status = 200, description = "a JSON array of series in DICOM JSON", body = Object,
            content_type = "application/dicom+json"),
        (status = 400, description = "`dicomweb_bad_query`", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_all_series(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    search_slides(
        &state,
        &user,
        query.as_deref(),
        &headers,
        json::series_result,
    )
    .await
}

/// A search across the user's slides (studies, or their one series each): the matching slides,
/// a page of them, each described by `result`.
async fn search_slides(
    state: &AppState,
    user: &Principal,
    query: Option<&str>,
    headers: &HeaderMap,
    result: fn(&Slide, &str) -> DataSet,
) -> Result<Response, ApiError> {
    accept::json(headers)?;
    let query = Query::parse(query)?;
    let found = searched_slides(&state.platform, user, &query).await?;
    let matching: Vec<(Slide, String)> = found
        .into_iter()
        .filter(|(slide, study)| query.matches(study, None, json::stored_levels(slide)))
        .collect();
    let (page, warnings) = query.page(matching);
    let results = page
        .iter()
        .map(|(slide, study)| result(slide, study))
        .collect();
    search_answer(results, &warnings)
}

/// Search for the series of a study (QIDO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("SeriesInstanceUID" = Option<String>, Query, description = "Series Instance UIDs"),
        ("Modality" = Option<String>, Query, description = "`SM`"),
    ),
    responses(
        (status = 200, description = "a JSON array of the study's one series", body = Object,
            content_type = "application/dicom+json"),
        (status = 400, description = "`dicomweb_bad_query`", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_series(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(study): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let query = Query::parse(query.as_deref())?;
    let (slide, study) = visible_study(&state.platform, &user, &study).await?;
    audit_viewing(&state, &user, &slide.id, "dicomweb", ACTION).await;
    let matching = if query.matches(&study, None, json::stored_levels(&slide)) {
        vec![json::series_result(&slide, &study)]
    } else {
        Vec::new()
    };
    let (page, warnings) = query.page(matching);
    search_answer(page, &warnings)
}

/// Search for the instances of a study (QIDO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/instances",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("SeriesInstanceUID" = Option<String>, Query, description = "Series Instance UIDs"),
        ("SOPInstanceUID" = Option<String>, Query, description = "SOP Instance UIDs"),
        ("SOPClassUID" = Option<String>, Query, description = "`1.2.840.10008.5.1.4.1.1.77.1.6`"),
        ("Modality" = Option<String>, Query, description = "`SM`"),
    ),
    responses(
        (status = 200, description = "a JSON array of instances, one per pyramid level, each \
            with its Available Transfer Syntax UID", body = Object,
            content_type = "application/dicom+json"),
        (status = 400, description = "`dicomweb_bad_query`", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_study_instances(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(study): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let query = Query::parse(query.as_deref())?;
    let (slide, study) = visible_study(&state.platform, &user, &study).await?;
    instance_search(&state, &user, slide, &study, &query).await
}

/// Search for the instances of a series (QIDO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/instances",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("SOPInstanceUID" = Option<String>, Query, description = "SOP Instance UIDs"),
        ("SOPClassUID" = Option<String>, Query, description = "`1.2.840.10008.5.1.4.1.1.77.1.6`"),
        ("Modality" = Option<String>, Query, description = "`SM`"),
    ),
    responses(
        (status = 200, description = "a JSON array of instances, one per pyramid level", body = Object,
            content_type = "application/dicom+json"),
        (status = 400, description = "`dicomweb_bad_query`", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study or series (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn search_instances(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let query = Query::parse(query.as_deref())?;
    let (slide, study) = visible_series(&state.platform, &user, &study, &series).await?;
    instance_search(&state, &user, slide, &study, &query).await
}

/// Metadata of every instance of a study (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/metadata",
    tag = "dicomweb",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses(
        (status = 200, description = "a JSON array of every level's instance metadata", body = Object,
            content_type = "application/dicom+json",
            headers(("ETag" = String, description = "of the content; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn study_metadata(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let (slide, study) = visible_study(&state.platform, &user, &study).await?;
    let opened = state.slides.opened(&state.platform, &slide).await?;
    audit_viewing(&state, &user, &slide.id, "dicomweb", ACTION).await;
    metadata_answer(&state, slide, study, opened, None, &headers).await
}

/// Metadata of every instance of a series (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/metadata",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
    ),
    responses(
        (status = 200, description = "a JSON array of every level's instance metadata", body = Object,
            content_type = "application/dicom+json",
            headers(("ETag" = String, description = "of the content; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study or series (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn series_metadata(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let (slide, study) = visible_series(&state.platform, &user, &study, &series).await?;
    let opened = state.slides.opened(&state.platform, &slide).await?;
    audit_viewing(&state, &user, &slide.id, "dicomweb", ACTION).await;
    metadata_answer(&state, slide, study, opened, None, &headers).await
}

/// Metadata of one instance (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("instance" = String, Path, description = "SOP Instance UID (one per pyramid level)"),
    ),
    responses(
        (status = 200, description = "a JSON array of the instance's metadata: a VL Whole \
            Slide Microscopy Image whose frames are JPEG baseline", body = Object,
            content_type = "application/dicom+json",
            headers(("ETag" = String, description = "of the content; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study, series or instance (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn instance_metadata(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    accept::json(&headers)?;
    let found = visible_instance(&state, &user, &study, &series, &instance).await?;
    audit_viewing(&state, &user, &found.slide.id, "dicomweb", ACTION).await;
    let level = found.tiling.level;
    metadata_answer(
        &state,
        found.slide,
        found.study,
        found.opened,
        Some(level),
        &headers,
    )
    .await
}

/// Frames of an instance (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("instance" = String, Path, description = "SOP Instance UID"),
        ("frames" = String, Path, description = "frame numbers from 1, comma-separated (at \
            most 500), row by row from the top left"),
    ),
    responses(
        (status = 200, description = "`multipart/related; type=\"image/jpeg\"; \
            transfer-syntax=1.2.840.10008.1.2.4.50`, one part per frame in the order asked: \
            the stored JPEG tile itself where it is the frame, else the frame encoded; the same \
            parts as `application/octet-stream` when `Accept` asks for that type with \
            `transfer-syntax=*`",
            content_type = "multipart/related",
            headers(("ETag" = String, description = "strong; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "`dicomweb_bad_frames` (a frame list that does not \
            parse, frame 0, more than 500 frames) or `dicomweb_too_large` (more pixels than \
            `slide.max_region_pixels`)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study, series, instance or frame (or not visible \
            to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`: `Accept` asks for another type \
            or transfer syntax than JPEG baseline (or octet-stream with `transfer-syntax=*`)",
            body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn retrieve_frames(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Syntax first: a request that cannot be answered is refused whoever asks.
    let part = accept::jpeg_frames(&headers)?;
    let numbers = frames::parse_frame_list(&list)?;
    let platform = &state.platform;
    let found = visible_instance(&state, &user, &study, &series, &instance).await?;
    let tiling = found.tiling;
    if let Some(&beyond) = numbers.iter().find(|&&n| n > tiling.count()) {
        return Err(no_such_frame(beyond, &tiling));
    }
    let budget = platform.config.slide.max_region_pixels;
    let pixels = u64::try_from(numbers.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(tiling.frame_pixels());
    if pixels > budget {
        return Err(ApiError::bad_request(
            "dicomweb_too_large",
            format!(
                "these frames hold {pixels} pixels, over the server's limit of {budget} \
                 (slide.max_region_pixels): ask for fewer frames at once"
            ),
        ));
    }
    audit_viewing(&state, &user, &found.slide.id, "dicomweb", ACTION).await;
    let quality = platform.config.tiles.jpeg_quality;
    // Each labelling is its own representation of the same bytes.
    let etag = image_etag(
        &found.slide,
        quality,
        &tiling,
        &format!("frames-{list}-{}", part.media_type()),
    );
    let cache = private_cache(
        platform.config.tiles.browser_cache,
        "private, max-age=31536000, immutable",
    );
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    if etag_matches(&headers, &etag) {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::CACHE_CONTROL, cache),
                (header::ETAG, etag_value),
                (header::VARY, HeaderValue::from_static("Accept")),
            ],
        )
            .into_response());
    }
    let opened = found.opened;
    let parts = tokio::task::spawn_blocking(move || {
        let reader = opened.reader.as_ref();
        let colour = frames::instance_colour(reader, &tiling);
        numbers
            .iter()
            .map(|&n| frames::read_frame(reader, &tiling, colour, n, quality))
            .collect::<pathfed_slide::Result<Vec<_>>>()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(slide_error)?;
    let media_type = part.media_type();
    let part_type = format!("{media_type}; transfer-syntax={JPEG_BASELINE}");
    let (boundary, body) = frames::multipart(&parts, &part_type);
    let content_type = format!(
        "multipart/related; type=\"{media_type}\"; transfer-syntax={JPEG_BASELINE}; \
         boundary={boundary}"
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).map_err(ApiError::internal)?,
            ),
            (header::CACHE_CONTROL, cache),
            (header::ETAG, etag_value),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        body,
    )
        .into_response())
}

/// A whole level, rendered (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("instance" = String, Path, description = "SOP Instance UID"),
    ),
    responses(
        (status = 200, description = "`image/jpeg` (the default) or `image/png`, as `Accept` \
            prefers: the whole level", content_type = "image/jpeg",
            headers(("ETag" = String, description = "strong; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "`dicomweb_too_large`: the level is wider or taller than \
            4096 pixels or holds more than `slide.max_region_pixels`; render a smaller level, or \
            read frames", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study, series or instance (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`: neither JPEG nor PNG is acceptable", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn rendered_instance(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series, instance)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = accept::rendered(&headers)?;
    let found = visible_instance(&state, &user, &study, &series, &instance).await?;
    let tiling = found.tiling;
    let budget = state.platform.config.slide.max_region_pixels;
    let fits = tiling.width <= MAX_RENDERED_SIDE
        && tiling.height <= MAX_RENDERED_SIDE
        && tiling.width * tiling.height <= budget;
    let size = u32::try_from(tiling.width)
        .ok()
        .zip(u32::try_from(tiling.height).ok());
    let Some((width, height)) = size.filter(|_| fits) else {
        return Err(ApiError::bad_request(
            "dicomweb_too_large",
            format!(
                "this level is {}×{} pixels; a rendered level is at most \
                 {MAX_RENDERED_SIDE}×{MAX_RENDERED_SIDE} and {budget} pixels \
                 (slide.max_region_pixels): render a smaller level's instance, or read its frames",
                tiling.width, tiling.height
            ),
        ));
    };
    audit_viewing(&state, &user, &found.slide.id, "dicomweb", ACTION).await;
    let opened = found.opened;
    rendered_answer(
        &state,
        &found.slide,
        &tiling,
        "level",
        format,
        &headers,
        move || opened.reader.read_region(tiling.level, 0, 0, width, height),
    )
    .await
}

/// One frame, rendered (WADO-RS)
#[utoipa::path(
    get,
    path = "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
    tag = "dicomweb",
    params(
        ("study" = String, Path, description = "Study Instance UID"),
        ("series" = String, Path, description = "Series Instance UID"),
        ("instance" = String, Path, description = "SOP Instance UID"),
        ("frames" = String, Path, description = "one frame number, from 1"),
    ),
    responses(
        (status = 200, description = "`image/jpeg` (the default) or `image/png`, as `Accept` \
            prefers: the frame's pixels, white beyond the level's edges", content_type = "image/jpeg",
            headers(("ETag" = String, description = "strong; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "`dicomweb_bad_frames`: not one frame number from 1", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such study, series, instance or frame (or not visible to the user)", body = ErrorBody),
        (status = 406, description = "`dicomweb_not_acceptable`: neither JPEG nor PNG is acceptable", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn rendered_frame(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((study, series, instance, frame)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = accept::rendered(&headers)?;
    let number = frames::parse_frame(&frame)?;
    let found = visible_instance(&state, &user, &study, &series, &instance).await?;
    let tiling = found.tiling;
    if number > tiling.count() {
        return Err(no_such_frame(number, &tiling));
    }
    audit_viewing(&state, &user, &found.slide.id, "dicomweb", ACTION).await;
    let opened = found.opened;
    let what = format!("frame-{number}");
    rendered_answer(
        &state,
        &found.slide,
        &tiling,
        &what,
        format,
        &headers,
        move || frames::frame_pixels(opened.reader.as_ref(), &tiling, number),
    )
    .await
}

/// Answers a rendered image: its ETag (and 304 when the client has it), else `read`'s pixels
/// encoded as `format`.
async fn rendered_answer<F>(
    state: &AppState,
    slide: &Slide,
    tiling: &Tiling,
    what: &str,
    format: Rendered,
    headers: &HeaderMap,
    read: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> pathfed_slide::Result<RgbImage> + Send + 'static,
{
    let config = &state.platform.config;
    let quality = config.tiles.jpeg_quality;
    let etag = image_etag(
        slide,
        quality,
        tiling,
        &format!("{what}-rendered-{}", format.content_type()),
    );
    let answer_headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        ),
        (
            header::CACHE_CONTROL,
            private_cache(
                config.tiles.browser_cache,
                "private, max-age=31536000, immutable",
            ),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
    ];
    if etag_matches(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, answer_headers).into_response());
    }
    let bytes = tokio::task::spawn_blocking(move || {
        let image = read().map_err(slide_error)?;
        encode_rendered(&image, format, quality)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((answer_headers, bytes).into_response())
}

/// Encodes a rendered image.
fn encode_rendered(image: &RgbImage, format: Rendered, quality: u8) -> Result<Vec<u8>, ApiError> {
    match format {
        Rendered::Jpeg => {
            pathfed_slide::jpeg::encode_rgb(image, quality).map_err(ApiError::internal)
        }
        Rendered::Png => {
            let mut out = Vec::new();
            // Fast compression: an answer is made for one request.
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                .write_image(
                    image.as_raw(),
                    image.width(),
                    image.height(),
                    ExtendedColorType::Rgb8,
                )
                .map_err(ApiError::internal)?;
            Ok(out)
        }
    }
}

/// A strong ETag of an image answer: the slide's bytes, the JPEG quality, how images are made,
/// the level and what was asked of it.
fn image_etag(slide: &Slide, quality: u8, tiling: &Tiling, asked: &str) -> String {
    let digest = slide.sha256.get(..16).unwrap_or(slide.sha256.as_str());
    // The frame list holds commas, which separate the tags of `If-None-Match`: a hash of it.
    let asked = hex::encode(&sha2::Sha256::digest(asked.as_bytes())[..8]);
    format!(
        "\"{digest}-{quality}-{IMAGE_VERSION}-{}-{asked}\"",
        tiling.level
    )
}

fn no_such_frame(frame: u64, tiling: &Tiling) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "frame {frame} not found: this instance has frames 1 to {}",
            tiling.count()
        ),
    )
}

fn slide_error(e: SlideError) -> ApiError {
    match e {
        limit @ SlideError::LimitExceeded { .. } => ApiError::bad_request(
            "dicomweb_too_large",
            format!("the request is over the server's limits: {limit}"),
        ),
        other => ApiError::internal(other),
    }
}

/// Answers search results (`application/dicom+json`) with the query's warnings.
fn search_answer(results: Vec<DataSet>, warnings: &[String]) -> Result<Response, ApiError> {
    let results: Vec<Value> = results.into_iter().map(DataSet::into_json).collect();
    let body = serde_json::to_vec(&results).map_err(ApiError::internal)?;
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON))],
        body,
    )
        .into_response();
    for warning in warnings {
        let value = HeaderValue::from_str(&format!("299 pathfed \"{warning}\""))
            .map_err(ApiError::internal)?;
        response.headers_mut().append(header::WARNING, value);
    }
    Ok(response)
}

/// Answers the metadata of one level (`Some`) or of all of an opened slide, with an ETag of
/// the content.
async fn metadata_answer(
    state: &AppState,
    slide: Slide,
    study: String,
    opened: Arc<OpenedSlide>,
    level: Option<usize>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let body = tokio::task::spawn_blocking(move || {
        let reader = opened.reader.as_ref();
        let properties = reader.properties();
        let levels = match level {
            Some(level) => level..level + 1,
            None => 0..properties.levels.len(),
        };
        let instances: Vec<Value> = levels
            .filter_map(|level| Tiling::of(properties, level))
            .map(|tiling| {
                // The colour model of the level's first stored tile: one tile read per level.
                let colour = frames::instance_colour(reader, &tiling);
                json::instance_metadata(&slide, &study, properties, &tiling, colour).into_json()
            })
            .collect();
        serde_json::to_vec(&instances)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let etag = format!(
        "\"{}\"",
        hex::encode(&sha2::Sha256::digest(body.as_slice())[..12])
    );
    let answer_headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(DICOM_JSON)),
        (
            header::CACHE_CONTROL,
            private_cache(
                state.platform.config.tiles.browser_cache,
                "private, max-age=3600",
            ),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
    ];
    if etag_matches(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, answer_headers).into_response());
    }
    Ok((answer_headers, body).into_response())
}

/// Answers an instance search within a visible study: one result per matching level.
async fn instance_search(
    state: &AppState,
    user: &Principal,
    slide: Slide,
    study: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let opened = state.slides.opened(&state.platform, &slide).await?;
    audit_viewing(state, user, &slide.id, "dicomweb", ACTION).await;
    let properties = opened.reader.properties();
    let levels = properties.levels.len();
    let matching: Vec<Tiling> = (0..levels)
        .filter(|&level| query.matches(study, Some(level), levels))
        .filter_map(|level| Tiling::of(properties, level))
        .collect();
    let (page, warnings) = query.page(matching);
    let results = page
        .iter()
        .map(|tiling| json::instance_result(study, tiling))
        .collect();
    search_answer(results, &warnings)
}

/// The slides a study or series search looks at, with their Study Instance UIDs: those the
/// query names that the user may see, else the user's hospital's.
async fn searched_slides(
    platform: &Platform,
    user: &Principal,
    query: &Query,
) -> Result<Vec<(Slide, String)>, ApiError> {
    if let Some(studies) = query.studies() {
        // Each is checked as the slide API checks an id, so that the hub's pathologists find
        // the slides of the cases they read, and unknown studies are refused (and audited)
        // alike; a search answers what it found.
        let mut found: Vec<(Slide, String)> = Vec::new();
        for study in studies {
            match visible_study(platform, user, study).await {
                Ok((slide, uid)) => {
                    if !found.iter().any(|(known, _)| known.id == slide.id) {
                        found.push((slide, uid));
                    }
                }
                Err(e) if e.status == StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(found);
    }
    if !user.role.sees_clinical_data() {
        let _ = platform
            .audit(AuditEvent::by(user, ACTION, "slides", "denied").detail("role"))
            .await;
        return Err(ApiError::forbidden(
            "your role has no access to clinical slides",
        ));
    }
    let own = slides::list_for_hospital(&platform.db, &user.hospital.id).await?;
    Ok(own
        .into_iter()
        .filter_map(|slide| uids::study_uid(&slide.id).map(|uid| (slide, uid)))
        .collect())
}

/// The slide a Study Instance UID names, and the UID, if the user may see it; otherwise the
/// refusal [`visible_slide`] gives (and audits) for an unknown slide, for UIDs this server never
/// gives too.
async fn visible_study(
    platform: &Platform,
    user: &Principal,
    study: &str,
) -> Result<(Slide, String), ApiError> {
    let slide_id = uids::slide_of_study(study);
    // Slide ids are UUIDs, which have no dots: a UID that names no slide is looked up as
    // itself (shortened for the audit log) and found nowhere.
    let probe = slide_id.as_deref().unwrap_or_else(|| clip(study, 64));
    let slide = visible_slide(platform, user, probe, ACTION, Need::Read).await?;
    let uid = uids::study_uid(&slide.id).ok_or_else(|| ApiError::not_found("slide"))?;
    Ok((slide, uid))
}

/// [`visible_study`], and the series UID checked against it.
async fn visible_series(
    platform: &Platform,
    user: &Principal,
    study: &str,
    series: &str,
) -> Result<(Slide, String), ApiError> {
    let (slide, study) = visible_study(platform, user, study).await?;
    if !uids::is_series(&study, series) {
        return Err(no_such(platform, user, &slide.id, "series").await);
    }
    Ok((slide, study))
}

/// An instance a request names, found and opened.
struct Instance {
    slide: Slide,
    study: String,
    opened: Arc<OpenedSlide>,
    tiling: Tiling,
}

/// [`visible_series`], and the instance UID resolved to a pyramid level of the opened slide.
async fn visible_instance(
    state: &AppState,
    user: &Principal,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<Instance, ApiError> {
    let platform = &state.platform;
    let (slide, study) = visible_series(platform, user, study, series).await?;
    let Some(level) = uids::level_of_instance(&study, instance) else {
        return Err(no_such(platform, user, &slide.id, "instance").await);
    };
    let opened = state.slides.opened(platform, &slide).await?;
    let Some(tiling) = Tiling::of(opened.reader.properties(), level) else {
        return Err(no_such(platform, user, &slide.id, "instance").await);
    };
    Ok(Instance {
        slide,
        study,
        opened,
        tiling,
    })
}

/// A series or instance that the visible slide does not have: refused as an unknown slide is,
/// and audited.
async fn no_such(platform: &Platform, user: &Principal, slide_id: &str, what: &str) -> ApiError {
    let _ = platform
        .audit(
            AuditEvent::by(user, ACTION, &format!("slide:{slide_id}"), "denied")
                .detail(format!("no such {what}")),
        )
        .await;
    ApiError::not_found(what)
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_uids_are_clipped_for_the_audit_log() {
        assert_eq!(clip("2.25.1", 64), "2.25.1");
        assert_eq!(clip(&"9".repeat(100), 64).len(), 64);
        assert_eq!(clip("ああああ", 2), "ああ");
    }
}
