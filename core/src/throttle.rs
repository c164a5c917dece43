//! Sign-in throttling: failed attempts are counted per typed user name and per client address
//! in the database (so every replica sees them); a key that fails `limit` times within the
//! window is locked for a while, and every attempt on it is answered 429 with `Retry-After`,
//! the right password included. Unknown names are counted like known ones, so the answers do
//! not tell which names exist.

use sqlx::Row;

use crate::db::Db;
use crate::error::CoreResult;

/// The throttle key of a typed user name (case-folded: `Alice` and `alice` are one).
pub fn account_key(username: &str) -> String {
    format!("user:{}", username.trim().to_lowercase())
}

/// The throttle key of a client address.
pub fn address_key(address: &std::net::IpAddr) -> String {
    format!("addr:{address}")
}

/// How many failures lock a key, within what window, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Failures that lock the key.
    pub failures: u32,
    /// Seconds over which they are counted.
    pub window_s: i64,
    /// Seconds the key stays locked.
    pub lock_s: i64,
}

/// Seconds until the first of `keys` that is locked opens again, if any is locked at `now`.
pub async fn retry_after(db: &Db, keys: &[String], now: i64) -> CoreResult<Option<i64>> {
    let mut longest: Option<i64> = None;
    for key in keys {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE key = $1")
                .bind(key)
                .fetch_optional(db.pool())
                .await?;
        if let Some(until) = until.filter(|until| *until > now) {
            longest = Some(longest.map_or(until - now, |l| l.max(until - now)));
        }
    }
    Ok(longest)
}

/// Counts a failure against `key`; true when this failure locked it.
pub async fn failed(db: &Db, key: &str, limit: Limit, now: i64) -> CoreResult<bool> {
    let mut tx = db.pool().begin().await?;
    let row = sqlx::query("SELECT failures, first_at FROM login_attempts WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
    let (failures, first_at) = match row {
        Some(row) => {
            let failures: i64 = row.try_get("failures")?;
            let first_at: i64 = row.try_get("first_at")?;
            if now - first_at >= limit.window_s {
                (1, now)
            } else {
                (failures + 1, first_at)
            }
        }
        None => (1, now),
    };
    let locks = failures >= i64::from(limit.failures);
    // A lock starts the count afresh once it ends.
    let (stored_failures, locked_until) = if locks {
        (0, now + limit.lock_s)
    } else {
        (failures, 0)
    };
    sqlx::query(
        "INSERT INTO login_attempts (key, failures, first_at, locked_until) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET failures = $2, first_at = $3, locked_until = $4",
    )
    .bind(key)
    .bind(stored_failures)
    .bind(if locks { now } else { first_at })
    .bind(locked_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(locks)
}

/// Forgets the failures of `key` (after a successful sign-in, or an admin's unlock); true when
/// the key was locked.
pub async fn clear(db: &Db, key: &str, now: i64) -> CoreResult<bool> {
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT locked_until FROM login_attempts WHERE key = $1")
            .bind(key)
            .fetch_optional(db.pool())
            .await?;
    sqlx::query("DELETE FROM login_attempts WHERE key = $1")
        .bind(key)
        .execute(db.pool())
        .await?;
    Ok(locked.is_some_and(|until| until > now))
}
