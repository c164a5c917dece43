//! Sign-in throttling: failed attempts are counted per typed user name and per client address
//! in the database (so every replica sees them); a key that fails `limit` times within the
//! window is locked for a while, and every attempt on it is answered 429 with `Retry-After`,
//! the right password included. Unknown names are counted like known ones, so the answers do
//! not tell which names exist.
//!
//! An attempt is counted ([`reserve`]) before the password or code is checked, in one
//! statement, and refused when it is over the limit: a check made first and a count made after
//! would let a burst of parallel guesses all pass the check. An attempt that turns out right
//! gives its count back ([`undo`]) or clears the key ([`clear`]).

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

/// What [`reserve`] made of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Counted and within the limit: check it. `locks` when this attempt reached the limit and
    /// so locked the key (it stays locked unless the attempt turns out right).
    Allowed {
        /// This attempt locked the key.
        locks: bool,
    },
    /// Over the limit: not to be checked; seconds until the key opens again.
    Refused(i64),
}

/// Counts an attempt against `key` before it is checked, atomically: of any number of parallel
/// attempts at most `limit.failures` are allowed within the window. The attempt that reaches
/// the limit locks the key; every attempt while it is locked is refused. A window older than
/// `limit.window_s`, or a lock that has ended, starts the count again at this attempt. An
/// allowed attempt that turns out right is given back with [`undo`] (or the key [`clear`]ed).
pub async fn reserve(db: &Db, key: &str, limit: Limit, now: i64) -> CoreResult<Reservation> {
    let max = i64::from(limit.failures);
    let lock_until = now.saturating_add(limit.lock_s);
    // The lock a count that starts again at 1 sets (a limit of one attempt).
    let first_lock = if max <= 1 { lock_until } else { 0 };
    // Every right-hand side reads the row as it was, in SQLite and PostgreSQL alike. While
    // locked, the count is kept above the limit, so each attempt is refused.
    let row = sqlx::query(
        "INSERT INTO login_attempts (key, failures, first_at, locked_until) \
         VALUES ($1, 1, $2, $6) \
         ON CONFLICT (key) DO UPDATE SET \
         failures = CASE \
           WHEN login_attempts.locked_until > $2 THEN \
             (CASE WHEN login_attempts.failures > $4 THEN login_attempts.failures ELSE $4 END) + 1 \
           WHEN login_attempts.locked_until > 0 OR $2 - login_attempts.first_at >= $3 THEN 1 \
           ELSE login_attempts.failures + 1 END, \
         first_at = CASE \
           WHEN login_attempts.locked_until > $2 THEN login_attempts.first_at \
           WHEN login_attempts.locked_until > 0 OR $2 - login_attempts.first_at >= $3 THEN $2 \
           ELSE login_attempts.first_at END, \
         locked_until = CASE \
           WHEN login_attempts.locked_until > $2 THEN login_attempts.locked_until \
           WHEN login_attempts.locked_until > 0 OR $2 - login_attempts.first_at >= $3 THEN $6 \
           WHEN login_attempts.failures + 1 >= $4 THEN $5 \
           ELSE 0 END \
         RETURNING failures, locked_until",
    )
    .bind(key)
    .bind(now)
    .bind(limit.window_s)
    .bind(max)
    .bind(lock_until)
    .bind(first_lock)
    .fetch_one(db.pool())
    .await?;
    let failures: i64 = row.try_get("failures")?;
    let locked_until: i64 = row.try_get("locked_until")?;
    if failures > max {
        return Ok(Reservation::Refused((locked_until - now).max(1)));
    }
    Ok(Reservation::Allowed {
        locks: failures >= max,
    })
}

/// Gives back an attempt [`reserve`] allowed that turned out right (or was not a guess): the
/// count goes down by one, and a lock that attempt set is lifted.
pub async fn undo(db: &Db, key: &str, limit: Limit) -> CoreResult<()> {
    // A count at or under the limit while locked means the lock is the one the attempt being
    // given back set: every attempt refused under a lock pushes the count over it.
    sqlx::query(
        "UPDATE login_attempts SET failures = failures - 1, \
         locked_until = CASE WHEN failures <= $2 THEN 0 ELSE locked_until END \
         WHERE key = $1 AND failures > 0",
    )
    .bind(key)
    .bind(i64::from(limit.failures))
    .execute(db.pool())
    .await?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        failures: 3,
        window_s: 900,
        lock_s: 900,
    };

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn the_attempt_that_reaches_the_limit_locks_and_later_ones_are_refused() {
        let (_dir, db) = db().await;
        let t = 1_000_000;
        let allowed = |locks| Reservation::Allowed { locks };
        assert_eq!(reserve(&db, "k", LIMIT, t).await.unwrap(), allowed(false));
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 1).await.unwrap(),
            allowed(false)
        );
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 2).await.unwrap(),
            allowed(true)
        );
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 3).await.unwrap(),
            Reservation::Refused(899)
        );
        assert_eq!(
            retry_after(&db, &["k".to_string()], t + 3).await.unwrap(),
            Some(899)
        );
        // The lock ends by itself and the count starts again.
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 2 + 900).await.unwrap(),
            allowed(false)
        );
        // A window older than `window_s` starts again too.
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 2000).await.unwrap(),
            allowed(false)
        );
        assert_eq!(
            reserve(&db, "k", LIMIT, t + 3000).await.unwrap(),
            allowed(false)
        );
    }

    #[tokio::test]
    async fn an_attempt_given_back_lifts_the_lock_it_set() {
        let (_dir, db) = db().await;
        let t = 1_000_000;
        for _ in 0..2 {
            reserve(&db, "k", LIMIT, t).await.unwrap();
        }
        assert_eq!(
            reserve(&db, "k", LIMIT, t).await.unwrap(),
            Reservation::Allowed { locks: true }
        );
        undo(&db, "k", LIMIT).await.unwrap();
        assert_eq!(retry_after(&db, &["k".to_string()], t).await.unwrap(), None);
        // The two failures still count: the next attempt locks again.
        assert_eq!(
            reserve(&db, "k", LIMIT, t).await.unwrap(),
            Reservation::Allowed { locks: true }
        );
        assert!(clear(&db, "k", t).await.unwrap(), "it was locked");
        assert_eq!(
            reserve(&db, "k", LIMIT, t).await.unwrap(),
            Reservation::Allowed { locks: false }
        );
    }

    #[tokio::test]
    async fn parallel_attempts_get_no_more_than_the_limit() {
        let (_dir, db) = db().await;
        let t = 1_000_000;
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..30 {
            let db = db.clone();
            attempts.spawn(async move { reserve(&db, "k", LIMIT, t).await.unwrap() });
        }
        let mut allowed = 0;
        while let Some(answer) = attempts.join_next().await {
            if matches!(answer.unwrap(), Reservation::Allowed { .. }) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 3);
    }
}
