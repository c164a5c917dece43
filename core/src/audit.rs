//! The append-only, hash-chained audit log.
//!
//! Row `n` stores `hash = SHA-256(prev_hash ‖ canonical JSON of its fields)` where `prev_hash`
//! is row `n-1`'s hash, so editing, deleting or reordering any row breaks every later link
//! and [`verify`] names the first row that no longer fits.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::accounts::User;
use crate::db::{Db, now};
use crate::error::{CoreError, CoreResult};

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event to record.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// User name, or `anonymous`.
    pub actor: String,
    /// The actor's hospital id, empty when unknown.
    pub hospital_id: String,
    /// What was attempted, e.g. `slide.view`, `login`, `admin.user.create`.
    pub action: String,
    /// The object acted on, e.g. `slide:ID`.
    pub target: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// Free-form detail (never a secret).
    pub detail: String,
}

impl AuditEvent {
    /// An event by a signed-in user.
    pub fn by(user: &User, action: &str, target: &str, outcome: &str) -> Self {
        Self {
            actor: user.username.clone(),
            hospital_id: user.hospital.id.clone(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            detail: String::new(),
        }
    }

    /// An event by someone not signed in.
    pub fn anonymous(action: &str, target: &str, outcome: &str) -> Self {
        Self {
            actor: "anonymous".into(),
            hospital_id: String::new(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            detail: String::new(),
        }
    }

    /// Adds detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A stored row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

fn row_hash(seq: i64, at: i64, event: &AuditEvent, prev_hash: &str) -> String {
    // A JSON array has one spelling for given values, which makes it a canonical encoding.
    let fields = serde_json::json!([
        seq,
        at,
        event.actor,
        event.hospital_id,
        event.action,
        event.target,
        event.outcome,
        event.detail
    ]);
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(fields.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// Appends to the chain. Appends from this process queue on a lock; appends from other
/// processes (replicas) collide on the sequence number's uniqueness and retry.
#[derive(Debug, Default)]
pub struct AuditLog {
    lock: Mutex<()>,
}

impl AuditLog {
    /// A log writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an event; returns its sequence number.
    pub async fn append(&self, db: &Db, event: AuditEvent) -> CoreResult<i64> {
        let _guard = self.lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match try_append(db, &event).await {
                Ok(seq) => return Ok(seq),
                // Another writer got in between this entry's read of the chain head and its
                // insert: read the new head and try again.
                Err(e) if (e.is_unique_violation() || e.is_busy()) && attempt < 20 => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn try_append(db: &Db, event: &AuditEvent) -> CoreResult<i64> {
    let mut tx = db.pool().begin().await?;
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get("hash")?),
        None => (1, GENESIS.to_string()),
    };
    let at = now();
    let hash = row_hash(seq, at, event, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, hospital_id, action, target, outcome, detail, \
         prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(seq)
    .bind(at)
    .bind(&event.actor)
    .bind(&event.hospital_id)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.outcome)
    .bind(&event.detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seq)
}

/// Where the chain broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at row {seq}: {reason}")]
pub struct ChainBreak {
    /// The first row that does not fit.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// Result of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every row checks out; the count of rows.
    Intact(u64),
    /// The first break.
    Broken(ChainBreak),
}

/// Reads rows in pages, in chain order.
async fn page(db: &Db, after: i64, limit: i64) -> CoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, hospital_id, action, target, outcome, detail, prev_hash, hash \
         FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditRecord {
                seq: row.try_get("seq")?,
                at: row.try_get("at")?,
                event: AuditEvent {
                    actor: row.try_get("actor")?,
                    hospital_id: row.try_get("hospital_id")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                },
                prev_hash: row.try_get("prev_hash")?,
                hash: row.try_get("hash")?,
            })
        })
        .collect::<Result<_, CoreError>>()
}

/// Walks the whole chain.
pub async fn verify(db: &Db) -> CoreResult<Verification> {
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_string();
    let mut count = 0u64;
    loop {
        let rows = page(db, expected_seq - 1, 1000).await?;
        if rows.is_empty() {
            return Ok(Verification::Intact(count));
        }
        for record in rows {
            let broken = |reason: String| {
                Ok(Verification::Broken(ChainBreak {
                    seq: record.seq,
                    reason,
                }))
            };
            if record.seq != expected_seq {
                return broken(format!("expected row {expected_seq}: rows are missing"));
            }
            if record.prev_hash != prev_hash {
                return broken("does not link to the previous row".into());
            }
            if row_hash(record.seq, record.at, &record.event, &record.prev_hash) != record.hash {
                return broken("contents do not match the row's hash".into());
            }
            prev_hash = record.hash;
            expected_seq += 1;
            count += 1;
        }
    }
}

/// The most recent rows, newest first (for admins).
pub async fn recent(db: &Db, limit: i64) -> CoreResult<Vec<AuditRecord>> {
    let last: Option<i64> = sqlx::query("SELECT MAX(seq) AS m FROM audit_log")
        .fetch_one(db.pool())
        .await?
        .try_get("m")?;
    let start = (last.unwrap_or(0) - limit).max(0);
    let mut rows = page(db, start, limit).await?;
    rows.reverse();
    Ok(rows)
}
