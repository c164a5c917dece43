//! The second factor: time-based one-time passwords (TOTP, RFC 6238) and one-time recovery
//! codes, and the policies that require them.
//!
//! Enrolment: [`begin_enrolment`] makes a 20-byte secret, keeps it sealed (AES-256-GCM under
//! the `totp` key, which lives outside the database like every key in [`crate::keys`]) and
//! shows it once, as base32, an `otpauth://` URI and a QR code for an authenticator app.
//! [`confirm_enrolment`] takes a first code from the app, which proves the app holds the
//! secret; only then is the second factor in force, and ten recovery codes (kept as keyed hashes,
//! each good once) are shown once for the day the phone is lost.
//!
//! Codes are SHA-1, 6 digits, 30-second steps, and one step either side is accepted for clock
//! drift. Each step is accepted once: the last accepted step is stored and a code of that step
//! or an earlier one is refused, so a code seen over a shoulder cannot be replayed.
//!
//! Who must have one ([`required`]): admins (hospital and platform) when
//! `auth.second_factor_for_admins` is on, and everyone in a hospital whose [`Policy`] says so.
//! A hospital can also ask for a fresh code to sign out a case ([`check_fresh`]).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use totp_rs::{Algorithm, TOTP};

use crate::accounts::User;
use crate::config::Config;
use crate::db::Db;
use crate::error::{CoreError, CoreResult};
use crate::http::constant_time_eq;
use crate::platform::Platform;
use crate::secrets::hash_secret;

/// The issuer authenticator apps show beside the account.
pub const ISSUER: &str = "pathfed";
/// Seconds per TOTP step.
pub const STEP_S: i64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the present one (clock drift between phone and server).
pub const SKEW_STEPS: i64 = 1;
/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a TOTP secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// Letters of recovery codes: no 0/o, 1/l/i, which read alike on paper.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// The name of the key that seals TOTP secrets.
const KEY_NAME: &str = "totp";

/// A started enrolment, shown once to the user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// The secret in base32, for typing into an app that cannot scan.
    pub secret: String,
    /// The `otpauth://totp/…` URI the QR code holds.
    pub otpauth_uri: String,
    /// The QR code of the URI, as an SVG document.
    pub qr_svg: String,
}

/// A hospital's second-factor policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// Everyone in the hospital must sign in with a second factor (admins always must).
    pub require_second_factor: bool,
    /// Signing out a case asks for a fresh second-factor code.
    pub signout_second_factor: bool,
}

/// How a code checked with [`verify_throttled`] fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Right, and now used.
    Accepted,
    /// Wrong, already used, or the user has no second factor; counted as a failed attempt.
    Wrong,
    /// Too many wrong codes and passwords lately: not checked; seconds until it may be tried.
    Locked(i64),
}

/// Makes the key that seals TOTP secrets if there is none yet (`pathfed admin init` does, so a
/// backup plan includes it from the start; otherwise the first enrolment makes it).
pub fn ensure_key(config: &Config) -> CoreResult<()> {
    crate::keys::load_or_create(config, KEY_NAME).map(|_| ())
}

/// The stored form of a recovery code: an HMAC under the second-factor key, bound to its
/// user, so a copy of the database alone cannot test guesses of the codes' ~59 bits offline.
fn recovery_hash(config: &Config, user_id: &str, code: &str) -> CoreResult<String> {
    let key = crate::keys::load_or_create(config, KEY_NAME)?;
    Ok(key.keyed_hash(&["recovery-code", user_id, code]))
}

fn cipher(config: &Config) -> CoreResult<Aes256Gcm> {
    let key = crate::keys::load_or_create(config, KEY_NAME)?;
    Ok(Aes256Gcm::new(key.bytes().into()))
}

/// base64(nonce ‖ AES-256-GCM ciphertext) of a secret.
fn seal(config: &Config, secret: &[u8]) -> CoreResult<String> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher(config)?
        .encrypt(&Nonce::from(nonce), secret)
        .map_err(|_| CoreError::Invalid("cannot seal the second-factor secret".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// The secret [`seal`] sealed; an integrity error when it was sealed under another key or
/// altered (the `totp` key was lost or replaced: the user must enrol again).
fn open(config: &Config, user_id: &str, sealed: &str) -> CoreResult<Vec<u8>> {
    let broken = || CoreError::Integrity(format!("the second-factor secret of user {user_id}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| broken())?;
    if bytes.len() < 12 {
        return Err(broken());
    }
    let (nonce, body) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| broken())?;
    cipher(config)?
        .decrypt(&Nonce::from(nonce), body)
        .map_err(|_| broken())
}

/// The TOTP generator of a secret, labelled for `username`.
fn generator(secret: Vec<u8>, username: &str) -> CoreResult<TOTP> {
    // The otpauth label may not hold a colon (it separates issuer and account).
    let account = username.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS as u8,
        STEP_S as u64,
        secret,
        Some(ISSUER.to_string()),
        account,
    )
    .map_err(|e| CoreError::Invalid(format!("cannot make a one-time password generator: {e}")))
}

/// The code of time step `step`.
fn code_of_step(totp: &TOTP, step: i64) -> String {
    totp.generate((step.max(0) * STEP_S) as u64)
}

/// The step within the skew of `now` whose code is `code` and which is later than
/// `last_step`, if any.
fn matching_step(totp: &TOTP, code: &str, now: i64, last_step: Option<i64>) -> Option<i64> {
    let present = now.div_euclid(STEP_S);
    (present - SKEW_STEPS..=present + SKEW_STEPS)
        .filter(|step| last_step.is_none_or(|last| *step > last))
        .find(|step| constant_time_eq(code_of_step(totp, *step).as_bytes(), code.as_bytes()))
}

/// What a typed code is, after spaces and hyphens are dropped and letters lowered.
enum Typed {
    /// Six digits: a TOTP code.
    Totp(String),
    /// A recovery code, in its stored form `xxxx-xxxx-xxxx`.
    Recovery(String),
    /// Neither.
    Other,
}

fn typed(code: &str) -> Typed {
    let bare: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if bare.len() == DIGITS && bare.bytes().all(|b| b.is_ascii_digit()) {
        Typed::Totp(bare)
    } else if bare.len() == 12 && bare.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)) {
        Typed::Recovery(format!("{}-{}-{}", &bare[..4], &bare[4..8], &bare[8..]))
    } else {
        Typed::Other
    }
}

/// A new recovery code, `xxxx-xxxx-xxxx` (about 59 random bits).
fn new_recovery_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(14);
    for i in 0..12 {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        let letter = RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())];
        code.push(char::from(letter));
    }
    code
}

/// The QR code of `text` as an SVG document.
fn qr_svg(text: &str) -> CoreResult<String> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| CoreError::Invalid(format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

/// The stored second-factor state of a user: (sealed secret, enabled at, last accepted step).
async fn stored(db: &Db, user_id: &str) -> CoreResult<(Option<String>, Option<i64>, Option<i64>)> {
    let row =
        sqlx::query("SELECT totp_secret, totp_enabled_at, totp_last_step FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("user {user_id:?}")))?;
    Ok((
        row.try_get("totp_secret")?,
        row.try_get("totp_enabled_at")?,
        row.try_get("totp_last_step")?,
    ))
}

/// Starts (or starts again) enrolment: a new secret, not in force until confirmed. Refused
/// while a confirmed second factor is in force: it is removed first (with a current code), so
/// a session left open cannot swap it for another.
pub async fn begin_enrolment(platform: &Platform, user: &User) -> CoreResult<Enrolment> {
    if is_enrolled(&platform.db, &user.id).await? {
        // Answered "… already exists" (409); the caller may say how to replace it.
        return Err(CoreError::Conflict(format!(
            "a second factor for {}",
            user.username
        )));
    }
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let sealed = seal(&platform.config, &secret)?;
    let totp = generator(secret, &user.username)?;
    let otpauth_uri = totp.get_url();
    let enrolment = Enrolment {
        secret: totp.get_secret_base32(),
        qr_svg: qr_svg(&otpauth_uri)?,
        otpauth_uri,
    };
    sqlx::query(
        "UPDATE users SET totp_secret = $1, totp_enabled_at = NULL, totp_last_step = NULL \
         WHERE id = $2 AND totp_enabled_at IS NULL",
    )
    .bind(&sealed)
    .bind(&user.id)
    .execute(platform.db.pool())
    .await?;
    Ok(enrolment)
}

/// Confirms enrolment with a first code from the app: the second factor is in force from now
/// on. Returns the recovery codes, in clear this once (only their hashes are kept); earlier
/// ones stop working. A wrong code is [`CoreError::WrongSecondFactor`].
pub async fn confirm_enrolment(
    platform: &Platform,
    user: &User,
    code: &str,
) -> CoreResult<Vec<String>> {
    let (sealed, enabled_at, _) = stored(&platform.db, &user.id).await?;
    if enabled_at.is_some() {
        return Err(CoreError::Conflict(format!(
            "a confirmed second factor for {}",
            user.username
        )));
    }
    let Some(sealed) = sealed else {
        return Err(CoreError::Invalid(
            "no second-factor enrolment is under way: start one first".into(),
        ));
    };
    let Typed::Totp(code) = typed(code) else {
        return Err(CoreError::WrongSecondFactor(
            "enter the 6-digit code your authenticator app shows".into(),
        ));
    };
    let totp = generator(open(&platform.config, &user.id, &sealed)?, &user.username)?;
    let now = crate::clock::now();
    let Some(step) = matching_step(&totp, &code, now, None) else {
        return Err(CoreError::WrongSecondFactor(
            "the code does not match: check the app's clock and enter the code it shows now".into(),
        ));
    };
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    let mut tx = platform.db.pool().begin().await?;
    let done = sqlx::query(
        "UPDATE users SET totp_enabled_at = $1, totp_last_step = $2 \
         WHERE id = $3 AND totp_secret = $4 AND totp_enabled_at IS NULL",
    )
    .bind(now)
    .bind(step)
    .bind(&user.id)
    .bind(&sealed)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        // Another request confirmed or restarted the enrolment meanwhile.
        return Err(CoreError::Invalid(
            "the enrolment was restarted or confirmed meanwhile: start again".into(),
        ));
    }
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    for code in &codes {
        sqlx::query(
            "INSERT INTO recovery_codes (code_hash, user_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(recovery_hash(&platform.config, &user.id, code)?)
        .bind(&user.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(codes)
}

/// Whether the user has a confirmed second factor.
pub async fn is_enrolled(db: &Db, user_id: &str) -> CoreResult<bool> {
    let enabled: Option<Option<i64>> =
        sqlx::query_scalar("SELECT totp_enabled_at FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(db.pool())
            .await?;
    Ok(enabled.flatten().is_some())
}

/// Whether `code` is a right code of the user's confirmed second factor: a TOTP code of a
/// step within the skew and later than the last one accepted, or an unused recovery code.
/// Either is used up by a `true` answer. False for users without a second factor.
pub async fn verify(platform: &Platform, user_id: &str, code: &str) -> CoreResult<bool> {
    let (sealed, enabled_at, last_step) = stored(&platform.db, user_id).await?;
    let (Some(sealed), Some(_)) = (sealed, enabled_at) else {
        return Ok(false);
    };
    match typed(code) {
        Typed::Totp(code) => {
            let username: String = sqlx::query_scalar("SELECT username FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_one(platform.db.pool())
                .await?;
            let totp = generator(open(&platform.config, user_id, &sealed)?, &username)?;
            let Some(step) = matching_step(&totp, &code, crate::clock::now(), last_step) else {
                return Ok(false);
            };
            // The condition makes the step's use atomic: of two requests with one code, one
            // moves the last step and the other finds it moved.
            let done = sqlx::query(
                "UPDATE users SET totp_last_step = $1 WHERE id = $2 \
                 AND (totp_last_step IS NULL OR totp_last_step < $1)",
            )
            .bind(step)
            .bind(user_id)
            .execute(platform.db.pool())
            .await?;
            Ok(done.rows_affected() == 1)
        }
        Typed::Recovery(code) => {
            let done = sqlx::query(
                "UPDATE recovery_codes SET used_at = $1 \
                 WHERE code_hash = $2 AND user_id = $3 AND used_at IS NULL",
            )
            .bind(crate::clock::now())
            .bind(recovery_hash(&platform.config, user_id, &code)?)
            .bind(user_id)
            .execute(platform.db.pool())
            .await?;
            Ok(done.rows_affected() == 1)
        }
        Typed::Other => Ok(false),
    }
}

/// [`verify`] for a signed-in user, throttled like sign-in: each code counts as a sign-in
/// attempt of the user's name before it is checked (a right one is given back), and a locked
/// name is not checked. Guards the places a session (rather than a sign-in) offers a code, so
/// a session left open cannot guess codes freely, in parallel either.
pub async fn verify_throttled(platform: &Platform, user: &User, code: &str) -> CoreResult<Check> {
    let key = crate::throttle::account_key(&user.username);
    let limit = platform.config.auth.account_limit();
    let now = crate::clock::now();
    if let crate::throttle::Reservation::Refused(wait) =
        crate::throttle::reserve(&platform.db, &key, limit, now).await?
    {
        return Ok(Check::Locked(wait));
    }
    if verify(platform, &user.id, code).await? {
        crate::throttle::undo(&platform.db, &key, limit).await?;
        return Ok(Check::Accepted);
    }
    Ok(Check::Wrong)
}

/// An admin's reset of a user's second factor (a lost phone): forgets the secret, the replay
/// guard and every recovery code, and ends every session of the user, so none opened with the
/// old factor stays and a user who must have one meets the enrolment at once.
pub async fn reset(db: &Db, user_id: &str) -> CoreResult<()> {
    forget(db, user_id, true).await
}

/// The user's own removal of their second factor (with a current code, where no rule requires
/// one): forgets it as [`reset`] does, but the user's sessions stay.
pub async fn remove(db: &Db, user_id: &str) -> CoreResult<()> {
    forget(db, user_id, false).await
}

/// Forgets the user's second factor (and with `end_sessions`, signs the user out everywhere),
/// in one transaction. The user enrols again when they next need one.
async fn forget(db: &Db, user_id: &str, end_sessions: bool) -> CoreResult<()> {
    let mut tx = db.pool().begin().await?;
    let done = sqlx::query(
        "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL \
         WHERE id = $1",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(CoreError::NotFound(format!("user {user_id:?}")));
    }
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if end_sessions {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether the user must sign in with a second factor: admins when
/// `auth.second_factor_for_admins` is on, everyone in a hospital whose policy requires it.
pub async fn required(platform: &Platform, user: &User) -> CoreResult<bool> {
    if platform.config.auth.second_factor_for_admins && user.role.is_hospital_admin() {
        return Ok(true);
    }
    Ok(policy(&platform.db, &user.hospital.id)
        .await?
        .require_second_factor)
}

/// A hospital's second-factor policy.
pub async fn policy(db: &Db, hospital_id: &str) -> CoreResult<Policy> {
    let row = sqlx::query(
        "SELECT require_second_factor, signout_second_factor FROM hospitals WHERE id = $1",
    )
    .bind(hospital_id)
    .fetch_optional(db.pool())
    .await?
    .ok_or_else(|| CoreError::NotFound(format!("hospital {hospital_id:?}")))?;
    Ok(Policy {
        require_second_factor: row.try_get::<i64, _>("require_second_factor")? != 0,
        signout_second_factor: row.try_get::<i64, _>("signout_second_factor")? != 0,
    })
}

/// Sets a hospital's second-factor policy. Turning `require_second_factor` on ends every
/// session of the hospital's users who have no confirmed second factor, so the rule applies at
/// once: each meets the enrolment at their next sign-in.
pub async fn set_policy(db: &Db, hospital_id: &str, wanted: Policy) -> CoreResult<()> {
    let mut tx = db.pool().begin().await?;
    // The first statement writes (an identity update that returns the old value), so the
    // transaction holds SQLite's write lock from the start. Read first, its update would fail
    // with "database is locked" whenever another connection wrote in between, as a worker
    // curating a case signed out a moment before does.
    let required_before: Option<i64> = sqlx::query_scalar(
        "UPDATE hospitals SET require_second_factor = require_second_factor WHERE id = $1 \
         RETURNING require_second_factor",
    )
    .bind(hospital_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(required_before) = required_before else {
        return Err(CoreError::NotFound(format!("hospital {hospital_id:?}")));
    };
    sqlx::query(
        "UPDATE hospitals SET require_second_factor = $1, signout_second_factor = $2 \
         WHERE id = $3",
    )
    .bind(i64::from(wanted.require_second_factor))
    .bind(i64::from(wanted.signout_second_factor))
    .bind(hospital_id)
    .execute(&mut *tx)
    .await?;
    if wanted.require_second_factor && required_before == 0 {
        sqlx::query(
            "DELETE FROM sessions WHERE user_id IN \
             (SELECT id FROM users WHERE hospital_id = $1 AND totp_enabled_at IS NULL)",
        )
        .bind(hospital_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether `user` may do what their hospital's `signout_second_factor` policy guards (signing
/// out a case or amending its report, electronic signatures) right now: always when the policy
/// is off; otherwise with a right `code` sent along, or when the session (`session_secret`, the
/// cookie) was given a code within `auth.fresh_second_factor_minutes` (only a session of `user`
/// counts). A right code also makes the session fresh. Refusals are
/// [`CoreError::FreshSecondFactorRequired`], saying why.
pub async fn check_fresh(
    platform: &Platform,
    user: &User,
    session_secret: Option<&str>,
    code: Option<&str>,
) -> CoreResult<()> {
    if !policy(&platform.db, &user.hospital.id)
        .await?
        .signout_second_factor
    {
        return Ok(());
    }
    if !is_enrolled(&platform.db, &user.id).await? {
        return Err(CoreError::FreshSecondFactorRequired(
            "your hospital asks for a second-factor code for this; set up a second factor on \
             the Security page first"
                .into(),
        ));
    }
    let minutes = platform.config.auth.fresh_second_factor_minutes;
    let now = crate::clock::now();
    if let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) {
        return match verify_throttled(platform, user, code).await? {
            Check::Accepted => {
                if let Some(secret) = session_secret {
                    crate::accounts::record_second_factor(&platform.db, secret, &user.id, now)
                        .await?;
                }
                Ok(())
            }
            Check::Wrong => Err(CoreError::FreshSecondFactorRequired(
                "the second-factor code is wrong or was already used".into(),
            )),
            Check::Locked(wait) => Err(CoreError::FreshSecondFactorRequired(format!(
                "too many wrong codes or passwords: try again in {} minute(s)",
                (wait + 59) / 60
            ))),
        };
    }
    if let Some(secret) = session_secret {
        // Only the user's own session counts: an API token's request may carry someone else's
        // session cookie.
        let at: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT second_factor_at FROM sessions WHERE token_hash = $1 AND user_id = $2",
        )
        .bind(hash_secret(secret))
        .bind(&user.id)
        .fetch_optional(platform.db.pool())
        .await?;
        let fresh_s = i64::try_from(minutes.saturating_mul(60)).unwrap_or(i64::MAX);
        if at.flatten().is_some_and(|at| now - at <= fresh_s) {
            return Ok(());
        }
    }
    Err(CoreError::FreshSecondFactorRequired(format!(
        "your hospital asks for a current second-factor code for this (one given in the last \
         {minutes} minute(s) counts): send the code from your authenticator app"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_generator() -> TOTP {
        // RFC 6238 appendix B: the SHA-1 secret is the ASCII of "12345678901234567890".
        generator(b"12345678901234567890".to_vec(), "alice").unwrap()
    }

    #[test]
    fn codes_follow_rfc_6238() {
        let totp = rfc_generator();
        // The RFC's 8-digit values, last six digits.
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_of_step(&totp, time / STEP_S), code, "at {time}");
        }
    }

    #[test]
    fn a_step_is_accepted_within_the_skew_and_once() {
        let totp = rfc_generator();
        let now = 1_111_111_111;
        let present = now / STEP_S;
        for step in [present - 1, present, present + 1] {
            let code = code_of_step(&totp, step);
            assert_eq!(matching_step(&totp, &code, now, None), Some(step));
            // The step already used, or a later one, blocks it.
            assert_eq!(matching_step(&totp, &code, now, Some(step)), None);
        }
        let stale = code_of_step(&totp, present - 2);
        assert_eq!(matching_step(&totp, &stale, now, None), None);
        let early = code_of_step(&totp, present + 2);
        assert_eq!(matching_step(&totp, &early, now, None), None);
    }

    #[test]
    fn the_uri_names_the_issuer_and_the_account() {
        let totp = generator(vec![7; SECRET_BYTES], "yamada:taro").unwrap();
        let uri = totp.get_url();
        assert!(
            uri.starts_with("otpauth://totp/pathfed:yamada_taro?secret="),
            "{uri}"
        );
        assert!(uri.contains("issuer=pathfed"), "{uri}");
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<path"), "{svg}");
    }

    #[test]
    fn recovery_codes_are_readable_and_typed_leniently() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 14);
        assert_eq!(code.matches('-').count(), 2);
        assert!(
            code.bytes()
                .all(|b| b == b'-' || RECOVERY_ALPHABET.contains(&b))
        );
        assert_ne!(code, new_recovery_code());
        let loose = format!(" {} ", code.replace('-', " ").to_uppercase());
        assert!(matches!(typed(&loose), Typed::Recovery(c) if c == code));
        assert!(matches!(typed("123 456"), Typed::Totp(c) if c == "123456"));
        assert!(matches!(typed("12345"), Typed::Other));
        assert!(matches!(typed("0000-0000-0000"), Typed::Other));
    }

    #[test]
    fn sealed_secrets_open_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let sealed = seal(&config, b"a secret of twenty b").unwrap();
        assert_ne!(sealed, seal(&config, b"a secret of twenty b").unwrap());
        assert_eq!(
            open(&config, "u", &sealed).unwrap(),
            b"a secret of twenty b"
        );
        let other = tempfile::tempdir().unwrap();
        let elsewhere = Config {
            data_dir: other.path().to_path_buf(),
            ..Config::default()
        };
        assert!(matches!(
            open(&elsewhere, "u", &sealed),
            Err(CoreError::Integrity(_))
        ));
    }
}
