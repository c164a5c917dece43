//! STOW-RS intake (DICOM PS3.18 §10.5, Store Instances): a `multipart/related;
//! type="application/dicom"` body of DICOM instances becomes one slide per series. The HTTP
//! route (authentication, roles, `Accept`, the optional case, the Store Instances Response) is
//! the server's; this module receives the instances and registers them.
//!
//! **Streaming.** The body goes part by part to a fresh work folder in the staging folder
//! (`stow-<id>.work`, one file per part, hashed while written), never into memory: the parser
//! is handed one chunk at a time (`Paced`), and the folder always goes when the request ends.
//! While it arrives, `ingest.max_upload_bytes` and the room left in the hospital's upload quota
//! bound the whole body (a declared `Content-Length` is checked before any byte is read), and
//! `ingest.zip_max_entries` the number of parts.
//!
//! **Early refusal.** Each part is judged as soon as its file meta group has arrived: a part
//! without the DICOM magic, or whose transfer syntax the reader does not decode
//! (`pathfed_slide::dicom::check_head`, whose message names the syntax), refuses the whole
//! request there and then (415 `not_dicom`, 422 `unsupported_transfer_syntax`), so a scanner
//! pushing gigabytes learns it after the first bad part's head, not at the end.
//!
//! **Series.** Once the body is complete, every instance's Study and Series Instance UIDs are
//! read from its header with the slide reader's bounded parser (never its frames), and each
//! series is registered exactly as a zip of its instances is (`register::register_series`:
//! validation in the child process, storage, the slide row, `slide.upload` in the audit log,
//! one slide per identical series and hospital, the quota at completion). Instances that do not
//! become part of a slide are reported with a DICOM Failure Reason ([`reason`]) and not stored:
//! another SOP class than VL Whole Slide Microscopy Image (the reader ignores those in a slide,
//! as in a zip), another study than the request's path names, a second copy of an instance, an
//! unreadable header, or a series that is not a readable slide or does not fit the quota.
//! Those refusals are audited as `slide.stow`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::StatusCode;
use futures::Stream;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::db::new_id;
use pathfed_core::http::ApiError;
use pathfed_core::quota::human_bytes;
use pathfed_slide::SlideError;
use pathfed_slide::dicom::{HeadVerdict, SopIds, check_head, is_dicom_magic, series_ids, sop_ids};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::Ingest;
use crate::names::sanitise;
use crate::register::register_series;
use crate::slides::Slide;

/// Prefix of a store request's work folder in the staging folder (`stow-<id>.work`). It has no
/// upload row, so the upload sweep removes it only once it is older than an upload may live.
pub(crate) const WORK_PREFIX: &str = "stow-";
/// Most of a file's first bytes kept to judge it; its file meta group is a few hundred bytes.
pub const HEAD_BYTES: usize = 64 << 10;
/// Bytes up to and including the DICOM magic ("DICM" at byte 128).
const MAGIC_END: usize = 132;
/// The media type of each part.
const PART_TYPE: &str = "application/dicom";

/// DICOM Failure Reason (0008,1197) values given for instances not stored: PS3.18 Table I.2-2,
/// DIMSE's "duplicate SOP instance", and one of pathfed's own in the "cannot understand" range.
pub mod reason {
    /// A7xx: refused, out of resources (the hospital's upload quota).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Cxxx: cannot understand (an unreadable header, a series that is not a readable slide).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// C409 (pathfed's): the instance is of another study than the request's path names.
    pub const STUDY_MISMATCH: u16 = 0xC409;
    /// 0110: processing failure (on the server's side; the message names a log entry).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// 0111: the same SOP Instance UID came twice in the request; the first copy counts.
    pub const DUPLICATE_INSTANCE: u16 = 0x0111;
    /// 0122: referenced SOP class not supported (not a VL Whole Slide Microscopy Image).
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
}

/// A store request as the HTTP route received it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who pushes; the slides belong to their hospital.
    pub user: &'a Principal,
    /// The request's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The declared body length, when the client sent one.
    pub content_length: Option<u64>,
    /// The Study Instance UID of the target resource (`POST …/studies/{study}`), if any.
    pub study: Option<&'a str>,
}

/// An instance stored as part of a slide.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its SOP Class and SOP Instance UIDs.
    pub ids: SopIds,
    /// Its Series Instance UID.
    pub series: String,
    /// The slide it belongs to.
    pub slide_id: String,
}

/// An instance that was not stored, and why.
#[derive(Debug, Clone)]
pub struct Failed {
    /// Its SOP Class and SOP Instance UIDs.
    pub ids: SopIds,
    /// The DICOM Failure Reason (see [`reason`]).
    pub reason: u16,
    /// The refusal, as the API answers it when nothing at all was stored.
    pub error: ApiError,
}

/// What a store request made of its instances.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The slides registered (or found identical), one per series, in series order.
    pub slides: Vec<Slide>,
    /// The instances stored, with their slides.
    pub stored: Vec<Stored>,
    /// The instances not stored.
    pub failed: Vec<Failed>,
}

/// One part received into the work folder.
struct Part {
    /// Its place in the request, from 1 (for messages).
    number: usize,
    path: PathBuf,
    sha256: String,
    ids: SopIds,
    verdict: HeadVerdict,
}

/// The most body bytes a request may send, and whether that is the quota's room (with the
/// usage and limit it was computed from) rather than `max_upload_bytes`.
struct ByteCap {
    bytes: u64,
    quota: Option<(i64, i64)>,
}

/// Receives a store request's body and registers its series. Refusals of the whole request
/// (the body's form, its size, a part that is not DICOM or not readable) are errors, audited
/// as `slide.stow`; refusals of single instances are in the [`Outcome`].
pub async fn receive(
    ingest: &Ingest,
    request: &Request<'_>,
    body: Body,
) -> Result<Outcome, ApiError> {
    let result = receive_checked(ingest, request, body).await;
    if let Err(error) = &result {
        let outcome = if error.status.is_server_error() {
            "failed"
        } else {
            "refused"
        };
        let _ = ingest
            .platform()
            .audit(
                AuditEvent::by(request.user, "slide.stow", "dicomweb", outcome)
                    .detail(error.message.clone()),
            )
            .await;
    }
    result
}

async fn receive_checked(
    ingest: &Ingest,
    request: &Request<'_>,
    body: Body,
) -> Result<Outcome, ApiError> {
    let boundary = boundary(request.content_type)?;
    let cap = byte_cap(ingest, request).await?;
    let work = ingest.work_dir(&format!("{WORK_PREFIX}{}", new_id().replace('-', "")));
    let result = receive_into(ingest, request, body, &boundary, &cap, &work).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    result
}

/// Receives the parts into `work/parts`, then registers their series from `work`.
async fn receive_into(
    ingest: &Ingest,
    request: &Request<'_>,
    body: Body,
    boundary: &str,
    cap: &ByteCap,
    work: &Path,
) -> Result<Outcome, ApiError> {
    let parts_dir = work.join("parts");
    tokio::fs::create_dir_all(&parts_dir)
        .await
        .map_err(ApiError::internal)?;
    let parts = read_parts(ingest, body, boundary, cap, &parts_dir).await?;
    register_parts(ingest, request, parts, work).await
}

/// The boundary of a `multipart/related; type="application/dicom"` body. Parameter values may
/// be quoted or not (some clients leave `type=application/dicom` bare); a boundary holds no `;`.
fn boundary(content_type: Option<&str>) -> Result<String, ApiError> {
    let refuse = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "stow_content_type",
            "send the instances as Content-Type: multipart/related; type=\"application/dicom\"; \
             boundary=… (DICOM PS3.18 10.5)",
        )
    };
    let mut pieces = content_type.ok_or_else(refuse)?.split(';').map(str::trim);
    if !pieces
        .next()
        .is_some_and(|media| media.eq_ignore_ascii_case("multipart/related"))
    {
        return Err(refuse());
    }
    let mut boundary = None;
    for piece in pieces {
        let Some((name, value)) = piece.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "type" if !value.eq_ignore_ascii_case(PART_TYPE) => return Err(refuse()),
            "boundary" => boundary = Some(value.to_string()),
            _ => {}
        }
    }
    boundary.filter(|b| !b.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            "stow_bad_body",
            "the Content-Type names no multipart boundary",
        )
    })
}

/// The byte limit of the body: `max_upload_bytes`, or the room left in the hospital's quota
/// when that is less. A declared length over either is refused before anything is read.
async fn byte_cap(ingest: &Ingest, request: &Request<'_>) -> Result<ByteCap, ApiError> {
    let max = ingest.platform().config.ingest.max_upload_bytes;
    if let Some(length) = request.content_length
        && length > max
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!("the request has {length} bytes; the limit is {max} bytes"),
        ));
    }
    let db = &ingest.platform().db;
    let hospital = &request.user.hospital.id;
    if let Some(length) = request.content_length {
        pathfed_core::quota::check(db, hospital, length).await?;
    }
    let Some(limit) = pathfed_core::quota::limit(db, hospital).await? else {
        return Ok(ByteCap {
            bytes: max,
            quota: None,
        });
    };
    let used = pathfed_core::quota::usage(db, hospital).await?;
    let room = u64::try_from(limit.saturating_sub(used)).unwrap_or(0);
    Ok(if room < max {
        ByteCap {
            bytes: room,
            quota: Some((used, limit)),
        }
    } else {
        ByteCap {
            bytes: max,
            quota: None,
        }
    })
}

/// The refusal of a body that passed its [`ByteCap`].
fn over_cap(cap: &ByteCap) -> ApiError {
    match cap.quota {
        Some((used, limit)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            format!(
                "the request is larger than the {} left of your hospital's upload quota ({} of \
                 {} used); ask your administrator to raise the quota, or remove slides no \
                 longer needed",
                human_bytes(cap.bytes),
                human_bytes(used),
                human_bytes(limit)
            ),
        ),
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!(
                "the request is larger than the limit of {} bytes",
                cap.bytes
            ),
        ),
    }
}

/// A failure of the multipart parser, as the client is told.
fn body_error(error: multer::Error, cap: &ByteCap) -> ApiError {
    match error {
        multer::Error::StreamSizeExceeded { .. } => over_cap(cap),
        other => ApiError::bad_request(
            "stow_bad_body",
            format!("the multipart body cannot be read: {other}"),
        ),
    }
}

/// Streams every part of the body into `dir`, judging each as its head arrives.
async fn read_parts(
    ingest: &Ingest,
    body: Body,
    boundary: &str,
    cap: &ByteCap,
    dir: &Path,
) -> Result<Vec<Part>, ApiError> {
    let max_parts = ingest.platform().config.ingest.zip_max_entries;
    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(cap.bytes));
    let stream = Paced {
        inner: body.into_data_stream(),
        gave: false,
    };
    let mut multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut parts: Vec<Part> = Vec::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(e, cap))?
    {
        if u64::try_from(parts.len()).unwrap_or(u64::MAX) >= max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "stow_too_many_parts",
                format!("a request may hold at most {max_parts} instances"),
            ));
        }
        let number = parts.len() + 1;
        if let Some(kind) = field.content_type()
            && !kind.essence_str().trim().eq_ignore_ascii_case(PART_TYPE)
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "stow_content_type",
                format!(
                    "part {number} is {}; every part must be application/dicom",
                    kind.essence_str()
                ),
            ));
        }
        let path = dir.join(format!("{number:06}.dcm"));
        parts.push(read_part(&mut field, &path, number, cap).await?);
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "stow_empty",
            "the request holds no DICOM instance",
        ));
    }
    Ok(parts)
}

/// Writes one part to `path`, hashing it, and judges its head as soon as it has arrived.
async fn read_part(
    field: &mut multer::Field<'_>,
    path: &Path,
    number: usize,
    cap: &ByteCap,
) -> Result<Part, ApiError> {
    let what = format!("part {number}");
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(ApiError::internal)?;
    let mut hasher = Sha256::new();
    let mut head: Vec<u8> = Vec::new();
    let mut judged: Option<(HeadVerdict, SopIds)> = None;
    while let Some(chunk) = field.chunk().await.map_err(|e| body_error(e, cap))? {
        if judged.is_none() {
            let wanted = HEAD_BYTES.saturating_sub(head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..wanted]);
            judged = judge_part(&head, false, &what)?;
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    let (verdict, ids) = match judged {
        Some(judged) => judged,
        None => judge_part(&head, true, &what)?
            .ok_or_else(|| invalid_dicom(&what, "the file ends inside its file meta group"))?,
    };
    Ok(Part {
        number,
        path: path.to_path_buf(),
        sha256: hex::encode(hasher.finalize()),
        ids,
        verdict,
    })
}

/// What a part's first bytes say: `Ok(None)` while more are needed (unless `whole`: the part
/// has ended). A part must be DICOM; see [`judge_head`] for the rest.
fn judge_part(
    head: &[u8],
    whole: bool,
    what: &str,
) -> Result<Option<(HeadVerdict, SopIds)>, ApiError> {
    if head.len() < MAGIC_END {
        return if whole {
            Err(not_dicom(what))
        } else {
            Ok(None)
        };
    }
    if !is_dicom_magic(head) {
        return Err(not_dicom(what));
    }
    let Some(verdict) = judge_head(head, whole, what)? else {
        return Ok(None);
    };
    let ids = sop_ids(head).map_err(|e| invalid_dicom(what, &e.to_string()))?;
    Ok(Some((verdict, ids)))
}

/// Judges the first bytes of a file with the DICOM magic, for STOW parts and tus uploads alike:
/// `Ok(None)` while they end inside the file meta group and more may come (`whole` false, fewer
/// than [`HEAD_BYTES`]); 422 `unsupported_transfer_syntax` naming a transfer syntax the reader
/// does not decode; 422 `invalid_dicom` for a meta group that cannot be read. `what` names the
/// file in messages.
pub(crate) fn judge_head(
    head: &[u8],
    whole: bool,
    what: &str,
) -> Result<Option<HeadVerdict>, ApiError> {
    match check_head(head) {
        Ok(verdict) => Ok(Some(verdict)),
        Err(SlideError::Truncated(_)) if !whole && head.len() < HEAD_BYTES => Ok(None),
        Err(SlideError::Unsupported(message)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_transfer_syntax",
            format!("{what}: {message}"),
        )),
        Err(other) => Err(invalid_dicom(what, &other.to_string())),
    }
}

fn not_dicom(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not_dicom",
        format!("{what} is not a DICOM file (no \"DICM\" at byte 128)"),
    )
}

fn invalid_dicom(what: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_dicom",
        format!("{what} is not a readable DICOM file: {why}"),
    )
}

/// Groups the received parts by series and registers each series as one slide.
async fn register_parts(
    ingest: &Ingest,
    request: &Request<'_>,
    parts: Vec<Part>,
    work: &Path,
) -> Result<Outcome, ApiError> {
    let limits = ingest.platform().config.slide.clone();
    let mut outcome = Outcome::default();
    let mut seen = HashSet::new();
    let mut by_series: BTreeMap<String, Vec<Part>> = BTreeMap::new();
    for part in parts {
        let what = format!("part {} (instance {})", part.number, part.ids.instance);
        if !seen.insert(part.ids.instance.clone()) {
            let error = ApiError::new(
                StatusCode::CONFLICT,
                "stow_duplicate_instance",
                format!("{what} came twice in the request; the first copy is kept"),
            );
            outcome.fail(part.ids, reason::DUPLICATE_INSTANCE, error);
            continue;
        }
        if part.verdict == HeadVerdict::NotWholeSlide {
            let error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_slide",
                format!(
                    "{what} is of SOP class {}, not a VL Whole Slide Microscopy Image",
                    part.ids.class
                ),
            );
            outcome.fail(part.ids, reason::SOP_CLASS_NOT_SUPPORTED, error);
            continue;
        }
        let (path, part_limits) = (part.path.clone(), limits.clone());
        let placed = tokio::task::spawn_blocking(move || series_ids(&path, &part_limits))
            .await
            .map_err(ApiError::internal)?;
        match placed {
            Err(e) => {
                let error = invalid_dicom(&what, &e.to_string());
                outcome.fail(part.ids, reason::CANNOT_UNDERSTAND, error);
            }
            Ok(placed) => match request.study {
                Some(study) if placed.study.as_deref() != Some(study) => {
                    let error = ApiError::new(
                        StatusCode::CONFLICT,
                        "stow_study_mismatch",
                        format!(
                            "{what} belongs to study {}, not to study {study} the request names",
                            placed.study.as_deref().unwrap_or("(none)")
                        ),
                    );
                    outcome.fail(part.ids, reason::STUDY_MISMATCH, error);
                }
                _ => by_series.entry(placed.series).or_default().push(part),
            },
        }
    }
    for (number, (series, members)) in by_series.into_iter().enumerate() {
        let folder = work.join(format!("series-{number}"));
        let files = folder.join("files");
        tokio::fs::create_dir_all(&files)
            .await
            .map_err(ApiError::internal)?;
        let mut instances = Vec::with_capacity(members.len());
        for part in &members {
            // SOP Instance UIDs are digits and dots, unique in the request by now.
            let name = format!("{}.dcm", sanitise(&part.ids.instance));
            tokio::fs::rename(&part.path, files.join(&name))
                .await
                .map_err(ApiError::internal)?;
            instances.push((name, part.sha256.clone()));
        }
        match register_series(ingest, request.user, &series, &files, instances, &folder).await {
            Ok(slide) => {
                tracing::info!(slide = %slide.id, %series, instances = members.len(), "series stored");
                for part in members {
                    outcome.stored.push(Stored {
                        ids: part.ids,
                        series: series.clone(),
                        slide_id: slide.id.clone(),
                    });
                }
                outcome.slides.push(slide);
            }
            Err(error) => {
                let code = if error.code == "quota_exceeded" {
                    reason::OUT_OF_RESOURCES
                } else if error.status.is_server_error() {
                    reason::PROCESSING_FAILURE
                } else {
                    reason::CANNOT_UNDERSTAND
                };
                let error = ApiError {
                    message: format!("series {series}: {}", error.message),
                    ..error
                };
                for part in members {
                    outcome.fail(part.ids, code, error.clone());
                }
            }
        }
    }
    audit_failures(ingest, request.user, &outcome).await;
    Ok(outcome)
}

impl Outcome {
    fn fail(&mut self, ids: SopIds, reason: u16, error: ApiError) {
        self.failed.push(Failed { ids, reason, error });
    }
}

/// One `slide.stow` entry for the instances a request could not store (none when all were).
async fn audit_failures(ingest: &Ingest, user: &Principal, outcome: &Outcome) {
    if outcome.failed.is_empty() {
        return;
    }
    let mut reasons: Vec<&str> = Vec::new();
    for failed in &outcome.failed {
        if !reasons.contains(&failed.error.message.as_str()) && reasons.len() < 5 {
            reasons.push(&failed.error.message);
        }
    }
    let result = if outcome
        .failed
        .iter()
        .any(|f| f.error.status.is_server_error())
    {
        "failed"
    } else {
        "refused"
    };
    let detail = format!(
        "{} of {} instances not stored: {}",
        outcome.failed.len(),
        outcome.failed.len() + outcome.stored.len(),
        reasons.join("; ")
    );
    let _ = ingest
        .platform()
        .audit(AuditEvent::by(user, "slide.stow", "dicomweb", result).detail(detail))
        .await;
}

/// A body stream that hands over one chunk per poll. The multipart parser reads every chunk
/// that is ready before it returns, so a client faster than the disk could otherwise fill
/// memory between two writes; this way it holds about one chunk beyond what was written.
struct Paced<S> {
    inner: S,
    gave: bool,
}

impl<S: Stream + Unpin> Stream for Paced<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.gave {
            self.gave = false;
            // Back to the parser, which writes what it has; poll again straight away.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        self.gave = matches!(next, Poll::Ready(Some(_)));
        next
    }
}
