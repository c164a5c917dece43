//! Hospitals, users and roles, browser sessions and API tokens.
//!
//! Every request is made by a [`Principal`]: a user with a role in one hospital. Sessions and
//! tokens are random bearer secrets of which the database keeps only a SHA-256.
//!
//! A browser session ends after `auth.idle_minutes` without a request and after
//! `auth.session_hours` in any case; a session of a user who must set up a second factor is in
//! stage [`SessionStage::Enrol`] until they do. Every password set here passes
//! [`crate::password_policy`] first, and a new password ends the user's other sessions and
//! every API token.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, IN_CHUNK, new_id, now, placeholders};
use crate::error::{CoreError, CoreResult};
use crate::locale::{DEFAULT_TIME_ZONE, Lang, check_time_zone};
use crate::secrets::{
    hash_password, hash_secret, new_secret, verify_against_dummy, verify_password,
};

/// A user's role: what kind of work they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Spoke staff who submit slides.
    Submitter,
    /// Hub pathologist who views and diagnoses.
    Pathologist,
    /// Works on the de-identified research tier only: datasets, training, the model registry.
    Researcher,
    /// Administers one hospital: its users, tokens, settings and audit; nothing beyond it.
    Admin,
    /// Runs the platform (the research tier, models and what is deployed, platform settings),
    /// and administers its own hospital as an admin does.
    #[serde(rename = "platform-admin")]
    PlatformAdmin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Submitter,
        Role::Pathologist,
        Role::Researcher,
        Role::Admin,
        Role::PlatformAdmin,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Pathologist => "pathologist",
            Role::Researcher => "researcher",
            Role::Admin => "admin",
            Role::PlatformAdmin => "platform-admin",
        }
    }

    /// True for roles that may see identifiable (clinical-tier) data of their hospital.
    pub fn sees_clinical_data(self) -> bool {
        // Spelled out so that a new role must be placed on one side or the other.
        match self {
            Role::Submitter | Role::Pathologist | Role::Admin | Role::PlatformAdmin => true,
            Role::Researcher => false,
        }
    }

    /// True for the platform's administrator: the only role that acts beyond its hospital
    /// (deploys and retires models, reaches the research tier as an operator, reads metrics).
    pub fn is_platform_admin(self) -> bool {
        match self {
            Role::PlatformAdmin => true,
            Role::Submitter | Role::Pathologist | Role::Researcher | Role::Admin => false,
        }
    }

    /// True for roles that administer their own hospital (a platform admin does too); what
    /// they administer is always limited to `user.hospital`.
    pub fn is_hospital_admin(self) -> bool {
        match self {
            Role::Admin | Role::PlatformAdmin => true,
            Role::Submitter | Role::Pathologist | Role::Researcher => false,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> CoreResult<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                CoreError::Invalid(format!(
                    "unknown role {s:?} (submitter, pathologist, researcher, admin or platform-admin)"
                ))
            })
    }
}

/// Whether a hospital sends cases (spoke) or reads them (hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HospitalKind {
    /// Sends slides for consultation.
    Spoke,
    /// Has pathologists who read them.
    Hub,
}

impl HospitalKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            HospitalKind::Spoke => "spoke",
            HospitalKind::Hub => "hub",
        }
    }
}

impl std::str::FromStr for HospitalKind {
    type Err = CoreError;
    fn from_str(s: &str) -> CoreResult<Self> {
        match s {
            "spoke" => Ok(HospitalKind::Spoke),
            "hub" => Ok(HospitalKind::Hub),
            _ => Err(CoreError::Invalid(format!(
                "unknown hospital kind {s:?} (spoke or hub)"
            ))),
        }
    }
}

/// A hospital.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Hospital {
    /// Id.
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// Spoke or hub.
    pub kind: HospitalKind,
    /// IANA time zone its people read times in (default Asia/Tokyo).
    pub time_zone: String,
    /// The language of its reports and the default of its people's pages.
    pub language: Lang,
}

/// A user as the rest of the platform sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: String,
    /// Unique sign-in name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The user's hospital.
    pub hospital: Hospital,
    /// Disabled users cannot sign in and their sessions and tokens stop working.
    pub disabled: bool,
    /// Full name as reports print it (e.g. 山田 太郎); the user name when not set.
    pub display_name: Option<String>,
    /// Qualification as registered (e.g. 病理専門医), printed beside the name on reports.
    pub qualification: Option<String>,
    /// Where e-mail notices go, if anywhere.
    pub email: Option<String>,
    /// The language the user chose; none means the browser's (pages) or the hospital's (e-mail).
    pub language: Option<Lang>,
    /// Whether the user has a confirmed second factor (see [`crate::second_factor`]).
    pub second_factor: bool,
}

impl User {
    /// The name a report or notice shows: the full name, else the user name.
    pub fn shown_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.username)
    }

    /// The language to write to this user in when no browser says otherwise.
    pub fn preferred_language(&self) -> Lang {
        self.language.unwrap_or(self.hospital.language)
    }
}

/// Who is making a request.
pub type Principal = User;

/// An API token's public description (the secret is shown once, at creation).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// Id (used to revoke it).
    pub id: String,
    /// Owner's user name.
    pub username: String,
    /// What the token is for.
    pub name: String,
    /// Creation time.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// When it stops working by itself (none for tokens made before tokens expired).
    pub expires_at: Option<i64>,
}

const USER_COLUMNS: &str = "u.id, u.username, u.role, u.disabled, u.display_name, \
                            u.qualification, u.email, u.language, u.totp_enabled_at, h.id AS hid, \
                            h.name AS hname, h.kind AS hkind, h.time_zone AS htz, \
                            h.language AS hlang FROM users u JOIN hospitals h ON h.id = u.hospital_id";

const HOSPITAL_COLUMNS: &str = "id, name, kind, time_zone, language";

fn user_from_row(row: &AnyRow) -> CoreResult<User> {
    let role: String = row.try_get("role")?;
    let kind: String = row.try_get("hkind")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: role.parse()?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        display_name: row.try_get("display_name")?,
        qualification: row.try_get("qualification")?,
        email: row.try_get("email")?,
        language: row
            .try_get::<Option<String>, _>("language")?
            .and_then(|l| l.parse().ok()),
        second_factor: row.try_get::<Option<i64>, _>("totp_enabled_at")?.is_some(),
        hospital: Hospital {
            id: row.try_get("hid")?,
            name: row.try_get("hname")?,
            kind: kind.parse()?,
            time_zone: row.try_get("htz")?,
            language: row.try_get::<String, _>("hlang")?.parse()?,
        },
    })
}

fn check_name(what: &str, name: &str) -> CoreResult<()> {
    let ok = !name.trim().is_empty()
        && name.len() <= 100
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "{what} must be 1–100 printable characters without leading or trailing spaces"
        )))
    }
}

/// User names the audit log gives actors that are not users; no user may take one.
const RESERVED_USER_NAMES: &[&str] = &["anonymous"];

/// A user name: [`check_name`]'s rules, and nothing an audit row could be read as another kind
/// of actor by (`anonymous` for unauthenticated requests, `cli:…` for the server host's
/// commands).
fn check_username(name: &str) -> CoreResult<()> {
    check_name("user name", name)?;
    if name.contains(':') {
        return Err(CoreError::Invalid(
            "a user name may not contain \":\" (the audit log names the server host's commands \
             \"cli:…\")"
                .into(),
        ));
    }
    if RESERVED_USER_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(CoreError::Invalid(format!(
            "the user name {name:?} is reserved (the audit log names unauthenticated requests \
             so): choose another"
        )));
    }
    Ok(())
}

fn unique_or(e: sqlx::Error, what: String) -> CoreError {
    let e = CoreError::Database(e);
    if e.is_unique_violation() {
        CoreError::Conflict(what)
    } else {
        e
    }
}

/// Creates a hospital.
pub async fn create_hospital(db: &Db, name: &str, kind: HospitalKind) -> CoreResult<Hospital> {
    check_name("hospital name", name)?;
    let id = new_id();
    sqlx::query("INSERT INTO hospitals (id, name, kind, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(name)
        .bind(kind.as_str())
        .bind(now())
        .execute(db.pool())
        .await
        .map_err(|e| unique_or(e, format!("hospital {name:?}")))?;
    Ok(Hospital {
        id,
        name: name.to_string(),
        kind,
        time_zone: DEFAULT_TIME_ZONE.to_string(),
        language: Lang::Ja,
    })
}

fn hospital_from_row(row: &AnyRow) -> CoreResult<Hospital> {
    let kind: String = row.try_get("kind")?;
    Ok(Hospital {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: kind.parse()?,
        time_zone: row.try_get("time_zone")?,
        language: row.try_get::<String, _>("language")?.parse()?,
    })
}

/// Every hospital, by name.
pub async fn list_hospitals(db: &Db) -> CoreResult<Vec<Hospital>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOSPITAL_COLUMNS} FROM hospitals ORDER BY name"
    )))
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(hospital_from_row).collect()
}

/// The hospital whose id or name is `id_or_name`, if any.
pub async fn find_hospital(db: &Db, id_or_name: &str) -> CoreResult<Option<Hospital>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOSPITAL_COLUMNS} FROM hospitals WHERE id = $1 OR name = $1"
    )))
    .bind(id_or_name)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(hospital_from_row).transpose()
}

/// Each distinct id once, in chunks small enough to bind into one `IN (…)`.
fn distinct_chunks(ids: &[String]) -> Vec<Vec<String>> {
    let distinct: Vec<String> = ids
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    distinct.chunks(IN_CHUNK).map(<[String]>::to_vec).collect()
}

/// The rows of `select` (a statement ending in `IN (`) for `ids`, one query per chunk.
async fn rows_for_ids(db: &Db, select: &str, ids: &[String]) -> CoreResult<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in distinct_chunks(ids) {
        // Only our own statement and parameter numbers are formatted in; the ids are bound.
        let sql = format!("{select}{})", placeholders(1, chunk.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        rows.extend(query.fetch_all(db.pool()).await?);
    }
    Ok(rows)
}

/// Hospital names by hospital id, for lists that show them: one call for the whole list
/// rather than a query per row. Unknown ids are absent from the answer.
pub async fn hospital_names(db: &Db, ids: &[String]) -> CoreResult<HashMap<String, String>> {
    rows_for_ids(db, "SELECT id, name FROM hospitals WHERE id IN (", ids)
        .await?
        .iter()
        .map(|row| -> CoreResult<(String, String)> {
            Ok((row.try_get("id")?, row.try_get("name")?))
        })
        .collect()
}

/// The hub a spoke's cases go to when the submitter names none. A consultation setting kept
/// on the hospital row: consultation decides it, accounts only store it.
pub async fn default_hub(db: &Db, hospital_id: &str) -> CoreResult<Option<String>> {
    Ok(
        sqlx::query("SELECT default_hub_id FROM hospitals WHERE id = $1")
            .bind(hospital_id)
            .fetch_one(db.pool())
            .await?
            .try_get("default_hub_id")?,
    )
}

/// Sets (or clears) the hospital's default hub; see [`default_hub`].
pub async fn set_default_hub(db: &Db, hospital_id: &str, hub_id: Option<&str>) -> CoreResult<()> {
    sqlx::query("UPDATE hospitals SET default_hub_id = $1 WHERE id = $2")
        .bind(hub_id)
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Whether the hub hides AI results from a pathologist until their own read of the case. A
/// consultation setting kept on the hospital row: consultation decides it, accounts only
/// store it. False for unknown hospitals.
pub async fn hides_ai_until_read(db: &Db, hospital_id: &str) -> CoreResult<bool> {
    let row = sqlx::query("SELECT ai_after_first_read FROM hospitals WHERE id = $1")
        .bind(hospital_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64, _>("ai_after_first_read")? == 1,
        None => false,
    })
}

/// Sets [`hides_ai_until_read`] for a hub; spokes are left unchanged.
pub async fn set_hides_ai_until_read(db: &Db, hub_id: &str, hidden: bool) -> CoreResult<()> {
    sqlx::query("UPDATE hospitals SET ai_after_first_read = $1 WHERE id = $2 AND kind = 'hub'")
        .bind(i64::from(hidden))
        .bind(hub_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// The hospital with this name.
pub async fn hospital_by_name(db: &Db, name: &str) -> CoreResult<Hospital> {
    list_hospitals(db)
        .await?
        .into_iter()
        .find(|h| h.name == name)
        .ok_or_else(|| CoreError::NotFound(format!("hospital {name:?}")))
}

/// Creates a user with an argon2id-hashed password.
pub async fn create_user(
    db: &Db,
    hospital: &Hospital,
    username: &str,
    role: Role,
    password: &str,
) -> CoreResult<User> {
    check_username(username)?;
    // A new user has no second factor yet, so the longer rule applies.
    crate::password_policy::check(password, username, false)?;
    let hash = hash_password(password)?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO users (id, hospital_id, username, role, password_hash, disabled, created_at, \
         password_changed_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
    )
    .bind(&id)
    .bind(&hospital.id)
    .bind(username)
    .bind(role.as_str())
    .bind(&hash)
    .bind(now())
    .execute(db.pool())
    .await
    .map_err(|e| unique_or(e, format!("user {username:?}")))?;
    Ok(User {
        id,
        username: username.to_string(),
        role,
        hospital: hospital.clone(),
        disabled: false,
        display_name: None,
        qualification: None,
        email: None,
        language: None,
        second_factor: false,
    })
}

/// Every user, by hospital then name.
pub async fn list_users(db: &Db) -> CoreResult<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} ORDER BY h.name, u.username");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(user_from_row).collect()
}

/// The users of one hospital, by name.
pub async fn users_of(db: &Db, hospital_id: &str) -> CoreResult<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} WHERE u.hospital_id = $1 ORDER BY u.username");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hospital_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(user_from_row).collect()
}

/// Changes a user's role. A change ends the user's browser sessions, so that someone made an
/// admin signs in again and meets what admins must (a second factor) before acting as one, and
/// revokes their API tokens, which would otherwise act with the new role without either.
pub async fn set_role(db: &Db, username: &str, role: Role) -> CoreResult<()> {
    let user = user_by_name(db, username).await?;
    if user.role == role {
        return Ok(());
    }
    let mut tx = db.pool().begin().await?;
    sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
        .bind(role.as_str())
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now())
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The user with this name.
pub async fn user_by_name(db: &Db, username: &str) -> CoreResult<User> {
    let sql = format!("SELECT {USER_COLUMNS} WHERE u.username = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(username)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| CoreError::NotFound(format!("user {username:?}")))?;
    user_from_row(&row)
}

/// Users by user id, with their hospitals, for lists that show them: one call for the whole
/// list rather than a query per row. Unknown ids are absent from the answer.
pub async fn users_by_id(db: &Db, ids: &[String]) -> CoreResult<HashMap<String, User>> {
    let select = format!("SELECT {USER_COLUMNS} WHERE u.id IN (");
    rows_for_ids(db, &select, ids)
        .await?
        .iter()
        .map(|row| -> CoreResult<(String, User)> {
            let user = user_from_row(row)?;
            Ok((user.id.clone(), user))
        })
        .collect()
}

/// User names by user id; [`users_by_id`] without the rest of each user.
pub async fn user_names(db: &Db, ids: &[String]) -> CoreResult<HashMap<String, String>> {
    rows_for_ids(db, "SELECT id, username FROM users WHERE id IN (", ids)
        .await?
        .iter()
        .map(|row| -> CoreResult<(String, String)> {
            Ok((row.try_get("id")?, row.try_get("username")?))
        })
        .collect()
}

/// Number of users (an empty platform needs `admin init`).
pub async fn count_users(db: &Db) -> CoreResult<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("n")?)
}

/// Enables or disables a user; disabling also ends their sessions.
pub async fn set_disabled(db: &Db, username: &str, disabled: bool) -> CoreResult<()> {
    let user = user_by_name(db, username).await?;
    sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
        .bind(i64::from(disabled))
        .bind(&user.id)
        .execute(db.pool())
        .await?;
    if disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(&user.id)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// Sets a new password (after [`crate::password_policy::check`], with the shorter rule when
/// the user has a second factor) and ends every session and API token the user had: an
/// admin's reset.
pub async fn set_password(db: &Db, username: &str, password: &str) -> CoreResult<Ended> {
    change_password(db, username, password, None).await
}

/// Sets a new password as [`set_password`] does, but keeps the session whose secret is
/// `keep_session` (the user's own change, made in that session); every other session and
/// every API token of the user ends.
pub async fn change_password(
    db: &Db,
    username: &str,
    password: &str,
    keep_session: Option<&str>,
) -> CoreResult<Ended> {
    let user = user_by_name(db, username).await?;
    crate::password_policy::check(password, &user.username, user.second_factor)?;
    let hash = hash_password(password)?;
    let changed_at = now();
    // A new password ends what the old one opened: whoever knew it (or holds a session or token
    // it made) is out, in the same transaction as the change.
    let mut tx = db.pool().begin().await?;
    sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
        .bind(&hash)
        .bind(changed_at)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    // A hash no session has when nothing is kept, so one statement serves both cases.
    let kept = keep_session.map(hash_secret).unwrap_or_default();
    let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
        .bind(&user.id)
        .bind(&kept)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let tokens = sqlx::query(
        "UPDATE api_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
    )
    .bind(changed_at)
    .bind(&user.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Ended { sessions, tokens })
}

/// What a password change ended: the user's sessions and API tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Sessions signed out.
    pub sessions: u64,
    /// API tokens revoked.
    pub tokens: u64,
}

/// The user if the name and password match and the account is enabled. Unknown names cost
/// the same time as wrong passwords.
pub async fn authenticate(db: &Db, username: &str, password: &str) -> CoreResult<Option<User>> {
    let sql = format!("SELECT u.password_hash, {USER_COLUMNS} WHERE u.username = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(username)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else {
        let password = password.to_string();
        let _ = tokio::task::spawn_blocking(move || verify_against_dummy(&password)).await;
        return Ok(None);
    };
    let user = user_from_row(&row)?;
    let hash: String = row.try_get("password_hash")?;
    let password = password.to_string();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    Ok((matches && !user.disabled).then_some(user))
}

/// How far a browser session has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStage {
    /// Signed in: the whole API, as the role allows.
    Full,
    /// Signed in with the password by a user who must set up a second factor first: only the
    /// session's own routes (`/api/v1/session…`), where the second factor is set up.
    Enrol,
}

impl SessionStage {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStage::Full => "full",
            SessionStage::Enrol => "enrol",
        }
    }

    /// The stage a stored name means; anything unknown is the narrower stage.
    fn parse(stored: &str) -> Self {
        match stored {
            "full" => SessionStage::Full,
            _ => SessionStage::Enrol,
        }
    }
}

/// How a new browser session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewSession {
    /// Its stage.
    pub stage: SessionStage,
    /// When a second-factor code was given at sign-in, if one was.
    pub second_factor_at: Option<i64>,
    /// The client's address, when known.
    pub address: Option<std::net::IpAddr>,
}

/// A live browser session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whose it is.
    pub user: User,
    /// What requests that change state must echo in `X-CSRF-Token`.
    pub csrf_token: String,
    /// How far it has got.
    pub stage: SessionStage,
    /// When a second-factor code was last given in it.
    pub second_factor_at: Option<i64>,
    /// When it was opened.
    pub created_at: i64,
    /// When it ends in any case.
    pub expires_at: i64,
}

/// A new browser session in stage [`SessionStage::Full`]: returns (session secret for the
/// cookie, CSRF token).
pub async fn create_session(db: &Db, user: &User, hours: u64) -> CoreResult<(String, String)> {
    let start = NewSession {
        stage: SessionStage::Full,
        second_factor_at: None,
        address: None,
    };
    open_session(db, user, hours, &start).await
}

/// A new browser session that lasts `hours` at most: returns (session secret for the cookie,
/// CSRF token).
pub async fn open_session(
    db: &Db,
    user: &User,
    hours: u64,
    start: &NewSession,
) -> CoreResult<(String, String)> {
    let secret = new_secret("pfs_");
    let csrf = new_secret("");
    let created = now();
    let lifetime = i64::try_from(hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, \
         last_seen_at, stage, second_factor_at, address) \
         VALUES ($1, $2, $3, $4, $5, $4, $6, $7, $8)",
    )
    .bind(hash_secret(&secret))
    .bind(&user.id)
    .bind(&csrf)
    .bind(created)
    .bind(created.saturating_add(lifetime))
    .bind(start.stage.as_str())
    .bind(start.second_factor_at)
    .bind(start.address.map(|a| a.to_string()).unwrap_or_default())
    .execute(db.pool())
    .await?;
    Ok((secret, csrf))
}

/// The live session with this secret: not past its absolute end (`expires_at`), not idle for
/// `idle_minutes` or more (0: no idle limit), its user enabled. An idle session is deleted. A
/// request that is the user's `activity` refreshes the session's last-seen time, written at
/// most about once a minute (more often for short idle limits) to spare the database a write
/// per request; so an idle session may end up to that much before `idle_minutes` after its
/// last request, never later. A page's own polling is not activity: it is answered while the
/// session lives but does not keep it alive.
pub async fn session_user(
    db: &Db,
    secret: &str,
    idle_minutes: u64,
    activity: bool,
) -> CoreResult<Option<Session>> {
    let sql = format!(
        "SELECT s.csrf_token, s.stage, s.second_factor_at, s.created_at AS s_created, \
         s.expires_at AS s_expires, s.last_seen_at AS s_seen, {USER_COLUMNS} \
         JOIN sessions s ON s.user_id = u.id WHERE s.token_hash = $1 AND s.expires_at > $2"
    );
    let token_hash = hash_secret(secret);
    let at = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&token_hash)
        .bind(at)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let user = user_from_row(&row)?;
    if user.disabled {
        return Ok(None);
    }
    let created_at: i64 = row.try_get("s_created")?;
    let seen = row
        .try_get::<Option<i64>, _>("s_seen")?
        .unwrap_or(created_at);
    let idle_s = i64::try_from(idle_minutes.saturating_mul(60)).unwrap_or(i64::MAX);
    if idle_s > 0 {
        if at - seen >= idle_s {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(&token_hash)
                .execute(db.pool())
                .await?;
            return Ok(None);
        }
        // A thirtieth of the idle limit, at most a minute: the session's end comes early by
        // at most that much.
        let refresh_s = (idle_s / 30).clamp(1, 60);
        if activity && at - seen >= refresh_s {
            sqlx::query(
                "UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2 \
                 AND (last_seen_at IS NULL OR last_seen_at < $1)",
            )
            .bind(at)
            .bind(&token_hash)
            .execute(db.pool())
            .await?;
        }
    }
    Ok(Some(Session {
        user,
        csrf_token: row.try_get("csrf_token")?,
        stage: SessionStage::parse(&row.try_get::<String, _>("stage")?),
        second_factor_at: row.try_get("second_factor_at")?,
        created_at,
        expires_at: row.try_get("s_expires")?,
    }))
}

/// Moves the session with this secret to `stage` (an enrolment confirmed in it makes it
/// full), if it is `user_id`'s: a request authenticated by one user's API token that carries
/// another user's session cookie cannot change that session.
pub async fn set_session_stage(
    db: &Db,
    secret: &str,
    user_id: &str,
    stage: SessionStage,
) -> CoreResult<()> {
    sqlx::query("UPDATE sessions SET stage = $1 WHERE token_hash = $2 AND user_id = $3")
        .bind(stage.as_str())
        .bind(hash_secret(secret))
        .bind(user_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records that `user_id` gave a second-factor code at `at` in the session with this secret,
/// if the session is theirs.
pub async fn record_second_factor(db: &Db, secret: &str, user_id: &str, at: i64) -> CoreResult<()> {
    sqlx::query("UPDATE sessions SET second_factor_at = $1 WHERE token_hash = $2 AND user_id = $3")
        .bind(at)
        .bind(hash_secret(secret))
        .bind(user_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Ends a session (logout).
pub async fn delete_session(db: &Db, secret: &str) -> CoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1 OR expires_at <= $2")
        .bind(hash_secret(secret))
        .bind(now())
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Creates an API token for a user; returns its description and the secret (shown once).
pub async fn create_token(
    db: &Db,
    user: &User,
    name: &str,
    days: u32,
) -> CoreResult<(TokenInfo, String)> {
    check_name("token name", name)?;
    if days == 0 || days > MAX_TOKEN_DAYS {
        return Err(CoreError::Invalid(format!(
            "a token lasts 1 to {MAX_TOKEN_DAYS} days, not {days}"
        )));
    }
    let secret = new_secret("pf_");
    let created_at = now();
    let info = TokenInfo {
        id: new_id(),
        username: user.username.clone(),
        name: name.to_string(),
        created_at,
        revoked_at: None,
        expires_at: Some(created_at + i64::from(days) * 86_400),
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&info.id)
    .bind(&user.id)
    .bind(name)
    .bind(hash_secret(&secret))
    .bind(info.created_at)
    .bind(info.expires_at)
    .execute(db.pool())
    .await?;
    Ok((info, secret))
}

/// The longest a token may last: a year.
pub const MAX_TOKEN_DAYS: u32 = 366;

/// The user an unrevoked, unexpired token belongs to.
pub async fn token_user(db: &Db, secret: &str) -> CoreResult<Option<User>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} JOIN api_tokens t ON t.user_id = u.id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL \
         AND (t.expires_at IS NULL OR t.expires_at > $2)"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hash_secret(secret))
        .bind(now())
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(row) => {
            let user = user_from_row(&row)?;
            Ok((!user.disabled).then_some(user))
        }
        None => Ok(None),
    }
}

/// Every token (revoked ones too), newest first.
pub async fn list_tokens(db: &Db) -> CoreResult<Vec<TokenInfo>> {
    let rows = sqlx::query(
        "SELECT t.id, u.username, t.name, t.created_at, t.revoked_at, t.expires_at \
         FROM api_tokens t \
         JOIN users u ON u.id = t.user_id ORDER BY t.created_at DESC, t.id",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(TokenInfo {
                id: row.try_get("id")?,
                username: row.try_get("username")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .collect()
}

/// Revokes a token by id; it stops working at once.
pub async fn revoke_token(db: &Db, id: &str) -> CoreResult<()> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(db.pool())
            .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound(format!("active token {id:?}")));
    }
    Ok(())
}

/// Whether the hospital's patient ids distinguish letter case. A consultation setting kept on
/// the hospital row (column `patient_id_case`): accounts only store it, and
/// `contracts::consent::PatientId::normalise` applies it wherever a patient id is keyed.
pub async fn patient_id_case(
    db: &Db,
    hospital_id: &str,
) -> CoreResult<crate::contracts::consent::PatientIdCase> {
    let row = sqlx::query("SELECT patient_id_case FROM hospitals WHERE id = $1")
        .bind(hospital_id)
        .fetch_optional(db.pool())
        .await?
        .ok_or_else(|| CoreError::NotFound(format!("hospital {hospital_id:?}")))?;
    row.try_get::<String, _>("patient_id_case")?.parse()
}

/// Sets [`patient_id_case`]. Callers check first that no stored id changes meaning
/// (`pathfed_consult::patient::set_id_case` does).
pub async fn set_patient_id_case(
    db: &Db,
    hospital_id: &str,
    case: crate::contracts::consent::PatientIdCase,
) -> CoreResult<()> {
    let done = sqlx::query("UPDATE hospitals SET patient_id_case = $1 WHERE id = $2")
        .bind(case.as_str())
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound(format!("hospital {hospital_id:?}")));
    }
    Ok(())
}

/// What a user is called on reports and notices, and where notices go. `None` leaves a field
/// as it is; an empty string clears it.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// Full name (e.g. 山田 太郎).
    pub display_name: Option<String>,
    /// Qualification as registered (e.g. 病理専門医).
    pub qualification: Option<String>,
    /// E-mail address for notices.
    pub email: Option<String>,
    /// Chosen language; `Some(None)` returns to the browser's.
    pub language: Option<Option<Lang>>,
}

fn check_profile_text(what: &str, value: &str) -> CoreResult<()> {
    if value.chars().count() > 100 || value.chars().any(char::is_control) {
        return Err(CoreError::Invalid(format!(
            "{what} must be at most 100 printable characters"
        )));
    }
    Ok(())
}

fn check_email(email: &str) -> CoreResult<()> {
    let (local, domain) = email.split_once('@').unwrap_or(("", ""));
    let ok = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "{email:?} is not an e-mail address"
        )))
    }
}

/// Changes a user's profile (see [`ProfileChange`]).
pub async fn set_profile(db: &Db, user_id: &str, change: &ProfileChange) -> CoreResult<()> {
    let cleared = |v: &Option<String>| -> Option<Option<String>> {
        v.as_ref().map(|v| {
            let v = v.trim();
            (!v.is_empty()).then(|| v.to_string())
        })
    };
    let name = cleared(&change.display_name);
    let qualification = cleared(&change.qualification);
    let email = cleared(&change.email);
    for (what, value) in [("full name", &name), ("qualification", &qualification)] {
        if let Some(Some(v)) = value {
            check_profile_text(what, v)?;
        }
    }
    if let Some(Some(e)) = &email {
        check_email(e)?;
    }
    let updates: [(&str, Option<Option<String>>); 4] = [
        ("display_name", name),
        ("qualification", qualification),
        ("email", email),
        (
            "language",
            change.language.map(|l| l.map(|l| l.as_str().to_string())),
        ),
    ];
    for (column, value) in updates {
        let Some(value) = value else { continue };
        // Only our own column names are formatted in; the values are bound.
        let sql = format!("UPDATE users SET {column} = $1 WHERE id = $2");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .bind(user_id)
            .execute(db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(CoreError::NotFound(format!("user {user_id:?}")));
        }
    }
    Ok(())
}

/// Sets a hospital's time zone (an IANA name) and language.
pub async fn set_hospital_locale(
    db: &Db,
    hospital_id: &str,
    time_zone: Option<&str>,
    language: Option<Lang>,
) -> CoreResult<()> {
    if let Some(zone) = time_zone {
        check_time_zone(zone)?;
        sqlx::query("UPDATE hospitals SET time_zone = $1 WHERE id = $2")
            .bind(zone)
            .bind(hospital_id)
            .execute(db.pool())
            .await?;
    }
    if let Some(language) = language {
        sqlx::query("UPDATE hospitals SET language = $1 WHERE id = $2")
            .bind(language.as_str())
            .bind(hospital_id)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

/// Whether a hospital sends e-mail notices (off until it is turned on).
pub async fn sends_email(db: &Db, hospital_id: &str) -> CoreResult<bool> {
    let on: Option<i64> =
        sqlx::query_scalar("SELECT email_notifications FROM hospitals WHERE id = $1")
            .bind(hospital_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(on.unwrap_or(0) != 0)
}

/// Turns a hospital's e-mail notices on or off.
pub async fn set_sends_email(db: &Db, hospital_id: &str, on: bool) -> CoreResult<()> {
    sqlx::query("UPDATE hospitals SET email_notifications = $1 WHERE id = $2")
        .bind(i64::from(on))
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    Ok(())
}
