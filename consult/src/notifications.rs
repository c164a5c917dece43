//! Notices of case events, in the app and by e-mail.
//!
//! Each successful transition that hands work to someone records one event: a row per recipient
//! in `notifications` (this module owns the table) and, where the operator configured SMTP
//! (`[notify]`), the recipient's hospital turned e-mail on and the recipient has an address, a
//! `notify-email` job committed with the rows. Recipients are the people the next step waits
//! for, never the actor, and only people who may see the case ([`access::relation`]). An e-mail
//! says what happened, the case's short id, the hospitals' names, the time and a link: never a
//! patient's id, the organ, the specimen or a diagnosis ([`MailFacts`] holds nothing else).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRef, Path, State};
use axum::response::{IntoResponse, Response};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pathfed_core::accounts::{self, Principal, Role, User};
use pathfed_core::config::NotifyConfig;
use pathfed_core::db::{new_id, now};
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, audited};
use pathfed_core::jobs::kinds::{NotifyEmail, NotifyEmailPayload};
use pathfed_core::jobs::{Jobs, NewJob};
use pathfed_core::locale::{Lang, local_time};
use pathfed_core::routes::{Routes, get, post};
use pathfed_core::worker::{JobFailure, RunningJob, Transient};
use pathfed_core::{CoreError, Db, Platform};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::Consult;
use crate::access::{self, Relation};
use crate::cases::{self, Case, Status};
use crate::error::{ConsultError, ConsultResult};

/// Most notices one list answer holds (the newest).
pub const LIST_LIMIT: i64 = 50;

/// How long one SMTP conversation may take before the attempt counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened to a case, as a notice names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A spoke sent a case to the hub: for the hub's pathologists.
    CaseSubmitted,
    /// A case was given to a pathologist for the first read: for them.
    CaseAssigned,
    /// A double-check waits: for the second reader chosen, else the hub's other pathologists.
    DoubleCheckRequested,
    /// The two reads disagree: for the readers, who settle the final diagnosis.
    AdjudicationNeeded,
    /// The report was issued: for the spoke's submitters and admins and the case's creator.
    ReportIssued,
    /// The report was amended: for the same people and the first reader.
    ReportAmended,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::CaseSubmitted,
        Kind::CaseAssigned,
        Kind::DoubleCheckRequested,
        Kind::AdjudicationNeeded,
        Kind::ReportIssued,
        Kind::ReportAmended,
    ];

    /// The stored name (`case_submitted`, …), which the web catalogue keys follow.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::CaseSubmitted => "case_submitted",
            Kind::CaseAssigned => "case_assigned",
            Kind::DoubleCheckRequested => "double_check_requested",
            Kind::AdjudicationNeeded => "adjudication_needed",
            Kind::ReportIssued => "report_issued",
            Kind::ReportAmended => "report_amended",
        }
    }

    /// The kind with this stored name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Who a notice is for, before the actor and anyone who may not see the case are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Audience {
    /// The hub's pathologists and its admins, who assign the case.
    HubStaff,
    /// The pathologists of the case's hub, except these users.
    HubPathologists {
        /// Left out (the first reader, who may not double-check their own read).
        except: Vec<String>,
    },
    /// These users.
    Users(Vec<String>),
    /// The spoke's submitters and admins and the case's creator, and these users.
    Spoke {
        /// Also told (the first reader of an amended report).
        also: Vec<String>,
    },
}

/// The ids that are set.
fn ids(ids: &[&Option<String>]) -> Vec<String> {
    ids.iter().filter_map(|id| (*id).clone()).collect()
}

/// The event of a move from `before` to `after`, if it hands work to someone.
fn event_of_move(before: &Case, after: &Case) -> Option<(Kind, Audience)> {
    match (before.status, after.status) {
        (Status::Draft, Status::Submitted) => Some((Kind::CaseSubmitted, Audience::HubStaff)),
        (Status::Submitted | Status::Assigned, Status::Assigned) => {
            // Given to the same reader again: nothing new for anyone.
            let changed = after.primary_reader.is_some()
                && (before.status == Status::Submitted
                    || before.primary_reader != after.primary_reader);
            changed.then(|| {
                (
                    Kind::CaseAssigned,
                    Audience::Users(ids(&[&after.primary_reader])),
                )
            })
        }
        // The first read is in and nobody has the double-check yet: any other pathologist of
        // the hub may take it. A revised first read (diagnosed → diagnosed) says nothing new.
        (Status::Assigned, Status::Diagnosed) => Some((
            Kind::DoubleCheckRequested,
            Audience::HubPathologists {
                except: ids(&[&after.primary_reader]),
            },
        )),
        (Status::Diagnosed, Status::InDoubleCheck) => Some((
            Kind::DoubleCheckRequested,
            Audience::Users(ids(&[&after.second_reader])),
        )),
        // Either reader records the agreed diagnosis (`reads::adjudicate`).
        (Status::InDoubleCheck, Status::Adjudication) => Some((
            Kind::AdjudicationNeeded,
            Audience::Users(ids(&[&after.primary_reader, &after.second_reader])),
        )),
        _ => None,
    }
}

/// The kind of report `version`: the sign-out (1) or an amendment.
fn report_kind(version: i64) -> Kind {
    if version <= 1 {
        Kind::ReportIssued
    } else {
        Kind::ReportAmended
    }
}

/// The event of report `version` of `case`.
fn event_of_report(case: &Case, version: i64) -> (Kind, Audience) {
    let kind = report_kind(version);
    // An amendment changes the first reader's diagnosis on record: they hear of it too.
    let also = match kind {
        Kind::ReportAmended => case.primary_reader.iter().cloned().collect(),
        _ => Vec::new(),
    };
    (kind, Audience::Spoke { also })
}

/// Whether `user`, related to the case as `relation`, is told of an event for `audience` that
/// `actor_id` caused.
fn is_recipient(
    user: &User,
    relation: Option<Relation>,
    actor_id: &str,
    case: &Case,
    audience: &Audience,
) -> bool {
    if user.disabled || user.id == actor_id {
        return false;
    }
    let Some(relation) = relation else {
        return false;
    };
    match audience {
        Audience::HubStaff => matches!(relation, Relation::HubPathologist | Relation::HubAdmin),
        Audience::HubPathologists { except } => {
            relation == Relation::HubPathologist && !except.contains(&user.id)
        }
        Audience::Users(ids) => ids.contains(&user.id),
        Audience::Spoke { also } => {
            let spoke_staff = relation == Relation::Spoke
                && (matches!(
                    user.role,
                    Role::Submitter | Role::Admin | Role::PlatformAdmin
                ) || user.id == case.created_by);
            spoke_staff || also.contains(&user.id)
        }
    }
}

/// The people told of an event on `case` (as it stands after the event).
async fn recipients(
    consult: &Consult,
    actor: &Principal,
    case: &Case,
    audience: &Audience,
) -> ConsultResult<Vec<User>> {
    let window = consult.access_after_close_s();
    // Every user, filtered here: the hub's staff and the spoke's are a small share of a
    // platform's users, and `accounts` owns the table.
    let everyone = accounts::list_users(&consult.platform.db).await?;
    Ok(everyone
        .into_iter()
        .filter(|user| {
            let relation = access::relation(user, case, window);
            is_recipient(user, relation, &actor.id, case, audience)
        })
        .collect())
}

/// Writes the notices of one event and queues their e-mails, in one transaction; returns how
/// many people were told.
async fn record(
    consult: &Consult,
    actor: &Principal,
    case: &Case,
    kind: Kind,
    audience: &Audience,
) -> ConsultResult<usize> {
    let db = &consult.platform.db;
    let people = recipients(consult, actor, case, audience).await?;
    if people.is_empty() {
        return Ok(0);
    }
    // Nothing is mailed unless the operator named a mail server and the recipient's hospital
    // turned e-mail on; asked once per hospital.
    let mut mails: HashMap<String, bool> = HashMap::new();
    if consult.platform.config.notify.email_configured() {
        for user in people.iter().filter(|u| u.email.is_some()) {
            if !mails.contains_key(&user.hospital.id) {
                let on = accounts::sends_email(db, &user.hospital.id).await?;
                mails.insert(user.hospital.id.clone(), on);
            }
        }
    }
    let at = now();
    let mut tx = db.pool().begin().await?;
    for user in &people {
        let id = new_id();
        sqlx::query(
            "INSERT INTO notifications (id, user_id, kind, case_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&user.id)
        .bind(kind.as_str())
        .bind(&case.id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let mailed = user.email.is_some() && mails.get(&user.hospital.id).copied().unwrap_or(false);
        if mailed {
            let payload = NotifyEmailPayload {
                notification_id: id,
            };
            Jobs::enqueue_in(&mut tx, &NewJob::of::<NotifyEmail>(&payload).by(&actor.id)).await?;
        }
    }
    tx.commit().await?;
    Ok(people.len())
}

/// Logs a notice that could not be recorded: the move it reports stands.
fn logged(kind: Kind, case_id: &str, result: ConsultResult<usize>) {
    match result {
        Ok(told) => {
            tracing::debug!(case = %case_id, kind = kind.as_str(), told, "notices recorded")
        }
        Err(e) => tracing::warn!(
            case = %case_id,
            kind = kind.as_str(),
            error = %e,
            "the notices of a case event could not be recorded"
        ),
    }
}

/// Records the event of `actor` moving a case from `before` to `after`, if the move hands work
/// to someone (submission, assignment, a double-check, discordant reads). Never fails the
/// request that made the move.
pub async fn case_moved(consult: &Consult, actor: &Principal, before: &Case, after: &Case) {
    if let Some((kind, audience)) = event_of_move(before, after) {
        let result = record(consult, actor, after, kind, &audience).await;
        logged(kind, &after.id, result);
    }
}

/// Records that `actor` issued report `version` of case `case_id` (1: the sign-out; later
/// versions: amendments). Never fails the request that issued it.
pub async fn report_issued(consult: &Consult, actor: &Principal, case_id: &str, version: i64) {
    let result = async {
        // The case as the report left it (signed out, closed), for the access check.
        let case = cases::load(&consult.platform.db, case_id).await?;
        let (kind, audience) = event_of_report(&case, version);
        record(consult, actor, &case, kind, &audience).await
    }
    .await;
    logged(report_kind(version), case_id, result);
}

// ---- Reading and marking notices ---------------------------------------------------------

/// One notice as its recipient sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationItem {
    /// Id (to mark it read).
    pub id: String,
    /// What happened.
    pub kind: Kind,
    /// The case.
    pub case_id: Option<String>,
    /// The case's short id, as lists show it (its first eight characters).
    pub case_short: Option<String>,
    /// When (unix seconds).
    pub created_at: i64,
    /// Whether the recipient marked it read.
    pub read: bool,
}

/// A user's newest notices and how many are unread.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    /// Unread notices (all of them, not only those listed).
    pub unread: i64,
    /// The newest notices, newest first (at most [`LIST_LIMIT`]).
    pub items: Vec<NotificationItem>,
}

/// How many notices are unread after a change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnreadCount {
    /// Unread notices.
    pub unread: i64,
}

/// A case id as lists show it.
fn short_id(case_id: &str) -> String {
    case_id.chars().take(8).collect()
}

/// How many of `user_id`'s notices are unread.
pub async fn unread_count(db: &Db, user_id: &str) -> ConsultResult<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM notifications WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get("n")?)
}

/// `user_id`'s newest notices, newest first, and the unread count.
pub async fn list_for(db: &Db, user_id: &str) -> ConsultResult<NotificationList> {
    let rows = sqlx::query(
        "SELECT id, kind, case_id, created_at, read_at FROM notifications WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(LIST_LIMIT)
    .fetch_all(db.pool())
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let stored: String = row.try_get("kind")?;
        // A kind this build does not know (written by a newer one) is left out.
        let Some(kind) = Kind::parse(&stored) else {
            continue;
        };
        let case_id: Option<String> = row.try_get("case_id")?;
        items.push(NotificationItem {
            id: row.try_get("id")?,
            kind,
            case_short: case_id.as_deref().map(short_id),
            case_id,
            created_at: row.try_get("created_at")?,
            read: row.try_get::<Option<i64>, _>("read_at")?.is_some(),
        });
    }
    Ok(NotificationList {
        unread: unread_count(db, user_id).await?,
        items,
    })
}

/// Marks one of `user_id`'s notices read (again is fine); another user's is "not found".
pub async fn mark_read(db: &Db, user_id: &str, id: &str) -> ConsultResult<()> {
    let done = sqlx::query(
        "UPDATE notifications SET read_at = $1 WHERE id = $2 AND user_id = $3 \
         AND read_at IS NULL",
    )
    .bind(now())
    .bind(id)
    .bind(user_id)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        let mine = sqlx::query("SELECT 1 AS one FROM notifications WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?;
        if mine.is_none() {
            return Err(ConsultError::NotFound("notification"));
        }
    }
    Ok(())
}

/// Marks every notice of `user_id` read; returns how many were unread.
pub async fn mark_all_read(db: &Db, user_id: &str) -> ConsultResult<u64> {
    let done =
        sqlx::query("UPDATE notifications SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL")
            .bind(now())
            .bind(user_id)
            .execute(db.pool())
            .await?;
    Ok(done.rows_affected())
}

/// The notice routes, merged into the consultation router.
pub fn routes<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Consult: FromRef<S>,
    Platform: FromRef<S>,
{
    Routes::new()
        .route("/api/v1/notifications", get(list_notifications))
        .route(
            "/api/v1/notifications/read-all",
            post(mark_all_notifications_read),
        )
        .route(
            "/api/v1/notifications/{id}/read",
            post(mark_notification_read),
        )
}

/// Your newest notices (at most 50, newest first) and how many are unread
#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    tag = "consult",
    responses(
        (status = 200, description = "the signed-in user's own notices", body = NotificationList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
pub(crate) async fn list_notifications(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    // Not audited: every open page asks every 30 s, and the answer is the user's own.
    let list = list_for(&consult.platform.db, &user.id)
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(list).into_response())
}

/// Mark one of your notices read
#[utoipa::path(
    post,
    path = "/api/v1/notifications/{id}/read",
    tag = "consult",
    params(("id" = String, Path, description = "notice id")),
    responses(
        (status = 200, description = "marked (or already read); the unread count now", body = UnreadCount),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a browser request without the session's CSRF token", body = ErrorBody),
        (status = 404, description = "no such notice of yours", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
pub(crate) async fn mark_notification_read(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let db = &consult.platform.db;
    let done = mark_read(db, &user.id, &id).await;
    audited(
        &consult.platform,
        &user,
        "notification.read",
        &format!("notification:{id}"),
        done,
    )
    .await?;
    let unread = unread_count(db, &user.id).await.map_err(ApiError::from)?;
    Ok(axum::Json(UnreadCount { unread }).into_response())
}

/// Mark all your notices read
#[utoipa::path(
    post,
    path = "/api/v1/notifications/read-all",
    tag = "consult",
    responses(
        (status = 200, description = "every notice of yours is read; the unread count now (0)", body = UnreadCount),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a browser request without the session's CSRF token", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
pub(crate) async fn mark_all_notifications_read(
    State(consult): State<Consult>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let db = &consult.platform.db;
    let done = mark_all_read(db, &user.id).await;
    audited(
        &consult.platform,
        &user,
        "notification.read_all",
        &format!("user:{}", user.id),
        done,
    )
    .await?;
    let unread = unread_count(db, &user.id).await.map_err(ApiError::from)?;
    Ok(axum::Json(UnreadCount { unread }).into_response())
}

// ---- E-mail ------------------------------------------------------------------------------

/// Why a notice could not be mailed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The `[notify]` settings are missing or wrong.
    #[error("e-mail notices: {0}")]
    Settings(String),
    /// The recipient's address is not one.
    #[error("{0}")]
    Address(String),
    /// The message could not be built.
    #[error("building the e-mail: {0}")]
    Message(#[from] lettre::error::Error),
    /// The mail server refused or could not be reached.
    #[error("the mail server: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// Reading the notice, the recipient or the case failed.
    #[error(transparent)]
    Consult(#[from] ConsultError),
    /// The platform failed underneath.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl Transient for NotifyError {
    fn is_transient(&self) -> bool {
        match self {
            // A 5xx answer is the server's final word; a 4xx, a dropped connection or a
            // timeout may pass.
            Self::Smtp(e) => !e.is_permanent() && !e.is_client(),
            Self::Consult(ConsultError::Core(core)) | Self::Core(core) => core.is_transient(),
            Self::Consult(_) | Self::Settings(_) | Self::Address(_) | Self::Message(_) => false,
        }
    }
}

/// Everything a notice's e-mail may say. It holds no patient id, organ, specimen, question or
/// diagnosis, so no template can print one.
#[derive(Debug, Clone)]
pub struct MailFacts<'a> {
    /// What happened.
    pub kind: Kind,
    /// The recipient's name as notices show it.
    pub recipient: &'a str,
    /// The case's id (the link) — its short form is shown.
    pub case_id: &'a str,
    /// The requesting hospital's name.
    pub spoke: &'a str,
    /// The consulting hospital's name.
    pub hub: Option<&'a str>,
    /// When it happened (unix seconds).
    pub at: i64,
    /// The recipient's hospital's time zone.
    pub time_zone: &'a str,
    /// The web UI's address, without a trailing `/`.
    pub base_url: &'a str,
}

/// A notice as mailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// One text per event kind.
struct KindTexts {
    case_submitted: &'static str,
    case_assigned: &'static str,
    double_check_requested: &'static str,
    adjudication_needed: &'static str,
    report_issued: &'static str,
    report_amended: &'static str,
}

impl KindTexts {
    fn get(&self, kind: Kind) -> &'static str {
        match kind {
            Kind::CaseSubmitted => self.case_submitted,
            Kind::CaseAssigned => self.case_assigned,
            Kind::DoubleCheckRequested => self.double_check_requested,
            Kind::AdjudicationNeeded => self.adjudication_needed,
            Kind::ReportIssued => self.report_issued,
            Kind::ReportAmended => self.report_amended,
        }
    }
}

/// The words of one language's e-mails. Each language is a constant of this type, so a text
/// missing from one of them fails the build. Placeholders: `{case}` (short id), `{name}`.
struct MailWords {
    /// Subject per event.
    subjects: KindTexts,
    /// What happened, as one sentence.
    sentences: KindTexts,
    greeting: &'static str,
    intro: &'static str,
    case: &'static str,
    spoke: &'static str,
    hub: &'static str,
    time: &'static str,
    open: &'static str,
    footer: &'static str,
}

const JA: MailWords = MailWords {
    subjects: KindTexts {
        case_submitted: "【pathfed】新規のコンサルテーション依頼（症例 {case}）",
        case_assigned: "【pathfed】症例の担当割り当て（症例 {case}）",
        double_check_requested: "【pathfed】再検（ダブルチェック）の依頼（症例 {case}）",
        adjudication_needed: "【pathfed】診断不一致のため診断協議が必要です（症例 {case}）",
        report_issued: "【pathfed】病理診断報告書が確定しました（症例 {case}）",
        report_amended: "【pathfed】病理診断報告書が訂正されました（症例 {case}）",
    },
    sentences: KindTexts {
        case_submitted: "新しいコンサルテーション依頼が届きました。",
        case_assigned: "症例の一次診断の担当に割り当てられました。",
        double_check_requested: "症例の再検（ダブルチェック）の依頼があります。",
        adjudication_needed: "一次診断と再検（ダブルチェック）の診断が一致しませんでした。診断協議のうえ、最終診断を記録してください。",
        report_issued: "病理診断報告書が確定されました。",
        report_amended: "病理診断報告書が訂正され、訂正版が発行されました。",
    },
    greeting: "{name} 様",
    intro: "pathfed（遠隔病理コンサルテーション）からのお知らせです。",
    case: "症例番号",
    spoke: "依頼元施設",
    hub: "診断施設",
    time: "日時",
    open: "症例を開く:",
    footer: "※ このメールは送信専用です。患者さんの情報や診断内容は記載していません。内容は pathfed にサインインしてご確認ください。\n\
             ※ メール通知の停止・変更は、貴院の管理者にお問い合わせください。",
};

const EN: MailWords = MailWords {
    subjects: KindTexts {
        case_submitted: "[pathfed] New consultation request (case {case})",
        case_assigned: "[pathfed] Case assigned to you (case {case})",
        double_check_requested: "[pathfed] Double-check requested (case {case})",
        adjudication_needed: "[pathfed] Discordant reads: adjudication needed (case {case})",
        report_issued: "[pathfed] Pathology report issued (case {case})",
        report_amended: "[pathfed] Pathology report amended (case {case})",
    },
    sentences: KindTexts {
        case_submitted: "A new consultation request has arrived.",
        case_assigned: "A case has been assigned to you for the primary diagnosis.",
        double_check_requested: "A double-check (blind second read) of a case has been requested.",
        adjudication_needed: "The primary read and the double-check disagree. Please agree and \
                              record the final diagnosis.",
        report_issued: "The pathology report has been issued (signed out).",
        report_amended: "The pathology report has been amended and a corrected version issued.",
    },
    greeting: "Dear {name},",
    intro: "This is a notice from pathfed, the telepathology consultation platform.",
    case: "Case",
    spoke: "Requesting hospital",
    hub: "Consulting hospital",
    time: "Time",
    open: "Open the case:",
    footer: "This message is sent automatically; please do not reply. It contains no patient \
             details and no diagnosis: sign in to pathfed to read the case.\n\
             To stop or change these e-mails, contact your hospital's administrator.",
};

fn words(lang: Lang) -> &'static MailWords {
    match lang {
        Lang::Ja => &JA,
        Lang::En => &EN,
    }
}

/// The e-mail of a notice in `lang`, times in the recipient's hospital's zone.
pub fn render_mail(facts: &MailFacts<'_>, lang: Lang) -> Mail {
    let w = words(lang);
    let short = short_id(facts.case_id);
    let subject = w.subjects.get(facts.kind).replace("{case}", &short);
    let time = local_time(facts.at, facts.time_zone, lang);
    let link = format!("{}/case?id={}", facts.base_url, facts.case_id);
    let mut lines = vec![
        w.greeting.replace("{name}", facts.recipient),
        String::new(),
        w.intro.to_string(),
        String::new(),
        w.sentences.get(facts.kind).to_string(),
        String::new(),
        format!("{}: {short}", w.case),
        format!("{}: {}", w.spoke, facts.spoke),
    ];
    if let Some(hub) = facts.hub {
        lines.push(format!("{}: {hub}", w.hub));
    }
    lines.extend([
        format!("{}: {time}", w.time),
        String::new(),
        w.open.to_string(),
        link,
        String::new(),
        w.footer.to_string(),
    ]);
    let mut body = lines.join("\n");
    body.push('\n');
    Mail { subject, body }
}

/// `url` with STARTTLS required, unless it already says how to use TLS.
fn with_starttls(url: &str) -> String {
    if !url.starts_with("smtp://") || url.contains("tls=") {
        return url.to_string();
    }
    let joint = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joint}tls=required")
}

/// The configured mail server and sender.
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    base_url: String,
}

impl Mailer {
    fn from_config(config: &NotifyConfig) -> Result<Self, NotifyError> {
        let missing = |key: &str| NotifyError::Settings(format!("notify.{key} is not set"));
        let url = config
            .smtp_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| missing("smtp_url"))?;
        let url = if config.starttls {
            with_starttls(url)
        } else {
            url.to_string()
        };
        // The URL may hold a password: only lettre's reason is repeated, never the URL.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| NotifyError::Settings(format!("notify.smtp_url is not usable: {e}")))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = config.from.as_deref().ok_or_else(|| missing("from"))?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| NotifyError::Settings(format!("notify.from {from:?}: {e}")))?;
        let base_url = config
            .base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .ok_or_else(|| missing("base_url"))?
            .to_string();
        Ok(Self {
            transport,
            from,
            base_url,
        })
    }

    async fn send(
        &self,
        notice_id: &str,
        name: &str,
        address: &str,
        mail: Mail,
    ) -> Result<(), NotifyError> {
        let to: Address = address
            .parse()
            .map_err(|e| NotifyError::Address(format!("{address:?} is not an address: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(Some(name.to_string()), to))
            // One id per notice, so a copy delivered twice by a retry reads as one message.
            .message_id(Some(format!(
                "<notice-{notice_id}@{}>",
                self.from.email.domain()
            )))
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body)?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// A stored notice, as the e-mail job reads it.
struct StoredNotice {
    user_id: String,
    kind: String,
    case_id: Option<String>,
    created_at: i64,
}

async fn stored_notice(db: &Db, id: &str) -> ConsultResult<Option<StoredNotice>> {
    let row =
        sqlx::query("SELECT user_id, kind, case_id, created_at FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(StoredNotice {
        user_id: row.try_get("user_id")?,
        kind: row.try_get("kind")?,
        case_id: row.try_get("case_id")?,
        created_at: row.try_get("created_at")?,
    }))
}

/// Mails notice `id` if it should still go out; what happened, for the job's result.
async fn send_notice(platform: &Platform, id: &str) -> Result<Value, NotifyError> {
    let db = &platform.db;
    let skipped = |why: &str| Ok(json!({ "skipped": why }));
    let Some(notice) = stored_notice(db, id).await? else {
        return skipped("the notice no longer exists");
    };
    let Some(kind) = Kind::parse(&notice.kind) else {
        return Err(NotifyError::Settings(format!(
            "unknown notice kind {:?}",
            notice.kind
        )));
    };
    let Some(user) = accounts::users_by_id(db, std::slice::from_ref(&notice.user_id))
        .await?
        .remove(&notice.user_id)
    else {
        return skipped("the recipient no longer exists");
    };
    // Settings may have changed since the notice was queued; the latest ones decide.
    let Some(address) = user.email.as_deref().filter(|_| !user.disabled) else {
        return skipped("the recipient has no e-mail address or is disabled");
    };
    if !accounts::sends_email(db, &user.hospital.id).await? {
        return skipped("the recipient's hospital turned e-mail notices off");
    }
    let Some(case_id) = notice.case_id.as_deref() else {
        return skipped("the notice names no case");
    };
    let case = cases::load(db, case_id).await?;
    let mailer = Mailer::from_config(&platform.config.notify)?;
    let lang = user.preferred_language();
    let facts = MailFacts {
        kind,
        recipient: user.shown_name(),
        case_id: &case.id,
        spoke: &case.spoke_name,
        hub: case.hub_name.as_deref(),
        at: notice.created_at,
        time_zone: &user.hospital.time_zone,
        base_url: &mailer.base_url,
    };
    let mail = render_mail(&facts, lang);
    mailer.send(id, user.shown_name(), address, mail).await?;
    Ok(json!({ "sent": kind.as_str(), "language": lang.as_str() }))
}

/// The `notify-email` job: mails one notice to its recipient in their language, with times in
/// their hospital's zone. A notice whose recipient, address or hospital switch is gone by then
/// is skipped, not failed; a mail server that is down is retried with the queue's backoff.
pub async fn run_notify_email(
    platform: Platform,
    payload: NotifyEmailPayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    job.check_cancel()?;
    send_notice(&platform, &payload.notification_id)
        .await
        .map_err(|e| JobFailure::from_error(&e))
}

#[cfg(test)]
mod tests {
    use pathfed_core::accounts::{Hospital, HospitalKind};

    use super::*;
    use crate::cases::Urgency;

    fn case(status: Status) -> Case {
        Case {
            id: "0123456789abcdef".into(),
            spoke_id: "spoke".into(),
            spoke_name: "Spoke A".into(),
            hub_id: Some("hub".into()),
            hub_name: Some("Hub H".into()),
            created_by: "creator".into(),
            patient_hash: String::new(),
            patient_cipher: String::new(),
            age_band: "60-69".into(),
            sex: "male".into(),
            organ: "stomach".into(),
            specimen: "endoscopic biopsy".into(),
            clinical_question: "carcinoma?".into(),
            urgency: Urgency::Routine,
            taxonomy: "gastric-group".into(),
            status,
            primary_reader: None,
            second_reader: None,
            concordant: None,
            final_code: None,
            final_findings: None,
            final_by: None,
            final_note: None,
            report_version: 0,
            report_seen_version: 0,
            created_at: 0,
            submitted_at: None,
            closed_at: None,
            updated_at: 0,
        }
    }

    fn moved(from: Status, to: Status, first: Option<&str>, second: Option<&str>) -> (Case, Case) {
        let before = case(from);
        let mut after = case(to);
        after.primary_reader = first.map(str::to_string);
        after.second_reader = second.map(str::to_string);
        (before, after)
    }

    fn user(id: &str, hospital: &str, role: Role) -> User {
        User {
            id: id.into(),
            username: id.into(),
            role,
            hospital: Hospital {
                id: hospital.into(),
                name: hospital.into(),
                kind: HospitalKind::Spoke,
                time_zone: "Asia/Tokyo".into(),
                language: Lang::Ja,
            },
            disabled: false,
            display_name: None,
            qualification: None,
            email: None,
            language: None,
            second_factor: false,
        }
    }

    #[test]
    fn each_move_tells_whom_the_next_step_waits_for() {
        let (b, a) = moved(Status::Draft, Status::Submitted, None, None);
        assert_eq!(
            event_of_move(&b, &a),
            Some((Kind::CaseSubmitted, Audience::HubStaff))
        );
        let (b, a) = moved(Status::Submitted, Status::Assigned, Some("p1"), None);
        assert_eq!(
            event_of_move(&b, &a),
            Some((Kind::CaseAssigned, Audience::Users(vec!["p1".into()])))
        );
        // Given to the same reader again: no notice; to another: the new one.
        let (mut b, a) = moved(Status::Assigned, Status::Assigned, Some("p1"), None);
        b.primary_reader = Some("p1".into());
        assert_eq!(event_of_move(&b, &a), None);
        b.primary_reader = Some("p2".into());
        assert_eq!(
            event_of_move(&b, &a),
            Some((Kind::CaseAssigned, Audience::Users(vec!["p1".into()])))
        );
        let (b, a) = moved(Status::Assigned, Status::Diagnosed, Some("p1"), None);
        assert_eq!(
            event_of_move(&b, &a),
            Some((
                Kind::DoubleCheckRequested,
                Audience::HubPathologists {
                    except: vec!["p1".into()]
                }
            ))
        );
        let (b, a) = moved(Status::Diagnosed, Status::Diagnosed, Some("p1"), None);
        assert_eq!(event_of_move(&b, &a), None, "a revised first read");
        let (b, a) = moved(
            Status::Diagnosed,
            Status::InDoubleCheck,
            Some("p1"),
            Some("p2"),
        );
        assert_eq!(
            event_of_move(&b, &a),
            Some((
                Kind::DoubleCheckRequested,
                Audience::Users(vec!["p2".into()])
            ))
        );
        let (b, a) = moved(
            Status::InDoubleCheck,
            Status::Adjudication,
            Some("p1"),
            Some("p2"),
        );
        assert_eq!(
            event_of_move(&b, &a),
            Some((
                Kind::AdjudicationNeeded,
                Audience::Users(vec!["p1".into(), "p2".into()])
            ))
        );
        for (from, to) in [
            (Status::InDoubleCheck, Status::ReadyForSignOut),
            (Status::Adjudication, Status::ReadyForSignOut),
            (Status::Submitted, Status::Cancelled),
            (Status::Draft, Status::Cancelled),
        ] {
            let (b, a) = moved(from, to, Some("p1"), Some("p2"));
            assert_eq!(event_of_move(&b, &a), None, "{from:?} → {to:?}");
        }
        let mut signed = case(Status::SignedOut);
        signed.primary_reader = Some("p1".into());
        assert_eq!(
            event_of_report(&signed, 1),
            (Kind::ReportIssued, Audience::Spoke { also: vec![] })
        );
        assert_eq!(
            event_of_report(&signed, 2),
            (
                Kind::ReportAmended,
                Audience::Spoke {
                    also: vec!["p1".into()]
                }
            )
        );
    }

    #[test]
    fn never_the_actor_and_never_someone_who_cannot_see_the_case() {
        let c = case(Status::SignedOut);
        let told = |u: &User, rel: Option<Relation>, actor: &str, to: &Audience| {
            is_recipient(u, rel, actor, &c, to)
        };
        let (spoke, hub_rel) = (Some(Relation::Spoke), Some(Relation::HubPathologist));
        let report = Audience::Spoke { also: vec![] };
        let submitter = user("s1", "spoke", Role::Submitter);
        assert!(told(&submitter, spoke, "x", &report));
        assert!(!told(&submitter, spoke, "s1", &report), "the actor");
        assert!(!told(&submitter, None, "x", &report), "cannot see the case");
        let mut gone = submitter.clone();
        gone.disabled = true;
        assert!(!told(&gone, spoke, "x", &report), "disabled");
        // A spoke pathologist hears of the report only for the cases they created.
        let spoke_path = user("sp", "spoke", Role::Pathologist);
        assert!(!told(&spoke_path, spoke, "x", &report));
        let creator = user("creator", "spoke", Role::Pathologist);
        assert!(told(&creator, spoke, "x", &report));
        let pool = Audience::HubPathologists {
            except: vec!["p1".into()],
        };
        let p1 = user("p1", "hub", Role::Pathologist);
        let p2 = user("p2", "hub", Role::Pathologist);
        let admin = user("a", "hub", Role::Admin);
        assert!(!told(&p1, hub_rel, "x", &pool), "the first reader");
        assert!(told(&p2, hub_rel, "x", &pool));
        assert!(!told(&admin, Some(Relation::HubAdmin), "x", &pool));
        // Named users still need to see the case.
        let named = Audience::Users(vec!["p2".into()]);
        assert!(told(&p2, hub_rel, "x", &named));
        assert!(!told(&p2, None, "x", &named));
        assert!(!told(&p1, hub_rel, "x", &named));
    }

    fn facts(kind: Kind) -> MailFacts<'static> {
        MailFacts {
            kind,
            recipient: "山田 太郎",
            case_id: "0123456789abcdef",
            spoke: "Spoke A",
            hub: Some("Hub H"),
            // 2026-12-05 06:04:00 UTC
            at: 1_796_450_640,
            time_zone: "Asia/Tokyo",
            base_url: "https://pathfed.example.jp",
        }
    }

    #[test]
    fn mails_say_the_event_the_case_the_time_and_the_link_in_both_languages() {
        let ja = render_mail(&facts(Kind::ReportIssued), Lang::Ja);
        assert_eq!(
            ja.subject,
            "【pathfed】病理診断報告書が確定しました（症例 01234567）"
        );
        assert!(ja.body.starts_with("山田 太郎 様\n"), "{}", ja.body);
        assert!(
            ja.body.contains("日時: 2026年12月5日 15:04 JST"),
            "{}",
            ja.body
        );
        assert!(ja.body.contains("依頼元施設: Spoke A"), "{}", ja.body);
        assert!(ja.body.contains("診断施設: Hub H"), "{}", ja.body);
        let en = render_mail(&facts(Kind::ReportIssued), Lang::En);
        assert_eq!(
            en.subject,
            "[pathfed] Pathology report issued (case 01234567)"
        );
        assert!(
            en.body.contains("Time: 5 Dec 2026 15:04 JST"),
            "{}",
            en.body
        );
        for mail in [&ja, &en] {
            assert!(
                mail.body
                    .contains("https://pathfed.example.jp/case?id=0123456789abcdef"),
                "{}",
                mail.body
            );
        }
        // Every kind has its own words in each language, with no placeholder left.
        for lang in Lang::ALL {
            let mut subjects = std::collections::HashSet::new();
            for kind in Kind::ALL {
                let mail = render_mail(&facts(kind), lang);
                assert!(subjects.insert(mail.subject.clone()), "{kind:?} {lang}");
                for text in [&mail.subject, &mail.body] {
                    assert!(!text.contains('{'), "{kind:?} {lang}: {text}");
                }
            }
        }
    }

    #[test]
    fn the_web_bell_knows_every_kind() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/static");
        let catalogue = std::fs::read_to_string(web.join("i18n/notifications.json"))
            .expect("the notifications catalogue");
        let catalogue: Value = serde_json::from_str(&catalogue).expect("catalogue JSON");
        let script = std::fs::read_to_string(web.join("notifications.js")).expect("the bell");
        for kind in Kind::ALL {
            let key = format!("notifications.kind.{}", kind.as_str());
            for lang in ["en", "ja"] {
                let text = catalogue[&key][lang].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "{key} has no {lang} text");
            }
            assert!(
                script.contains(&format!("\"{}\"", kind.as_str())),
                "notifications.js does not list {kind:?}"
            );
        }
    }

    #[test]
    fn starttls_is_required_unless_the_url_says_otherwise() {
        assert_eq!(
            with_starttls("smtp://mail.example.jp:587"),
            "smtp://mail.example.jp:587?tls=required"
        );
        assert_eq!(
            with_starttls("smtp://mail.example.jp:587/pathfed.example.jp?x=1"),
            "smtp://mail.example.jp:587/pathfed.example.jp?x=1&tls=required"
        );
        assert_eq!(
            with_starttls("smtp://mail.example.jp?tls=opportunistic"),
            "smtp://mail.example.jp?tls=opportunistic"
        );
        assert_eq!(
            with_starttls("smtps://mail.example.jp"),
            "smtps://mail.example.jp"
        );
        let settings = NotifyConfig {
            smtp_url: Some("smtp://127.0.0.1:2525".into()),
            starttls: false,
            from: Some("pathfed <noreply@pathfed.example.jp>".into()),
            base_url: Some("https://pathfed.example.jp/".into()),
        };
        let mailer = Mailer::from_config(&settings).expect("usable settings");
        assert_eq!(mailer.base_url, "https://pathfed.example.jp");
        let unset = NotifyConfig {
            from: None,
            ..settings
        };
        let err = Mailer::from_config(&unset).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("e-mail notices: notify.from is not set")
        );
    }
}
