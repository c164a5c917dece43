//! The append-only, keyed hash chain of the audit log, and its review (search, verification).
//!
//! Row `n` stores `hash = HMAC-SHA256(audit key, prev_hash ‖ NUL ‖ canonical JSON of its
//! fields and client address)` where `prev_hash` is row `n-1`'s hash, so editing, deleting or
//! reordering any row breaks every later link. The key (`keys::load_or_create(…, "audit")`)
//! lives outside the database: someone who can write to the database but has not got the key
//! cannot recompute the chain after an edit. Rows written before the chain was keyed
//! (`keyed = 0`) keep their plain SHA-256 (without the address) and still verify, but an
//! unkeyed row after a keyed one is a break: that is what recomputing without the key looks like.
//!
//! The chain alone cannot show that its newest rows were removed; signed checkpoints of its
//! head, written where the database cannot rewrite them ([`crate::audit_checkpoint`]), can.
//! [`verify`] walks the chain and then checks every checkpoint against it.
//!
//! [`search`] serves the admins' review: filters on actor, action, outcome, time and subject
//! (cases and slides), within a hospital's scope. The scope and the subjects read the tables
//! that say which hospital owns which case and slide (`cases`, `case_slides`, `slides`,
//! `users`), which live in this crate's migrations.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::Mutex;

use crate::accounts::User;
use crate::audit_checkpoint::{self, Checkpoint};
use crate::db::{Db, now};
use crate::error::CoreResult;
use crate::keys::SecretKey;
use crate::store::Store;

/// The hash before the first row.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The columns every read of rows selects.
const COLUMNS: &str =
    "seq, at, actor, hospital_id, action, target, outcome, detail, address, keyed, prev_hash, hash";

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
    /// The client's address (IPv4 or IPv6) when the event came from an HTTP request; empty for
    /// commands, workers and rows written before addresses were recorded.
    pub address: String,
    /// Whether the row's hash is keyed (HMAC with the audit key); false only for rows written
    /// before the chain was keyed.
    pub keyed: bool,
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// The canonical encoding of a row's fields: a JSON array has one spelling for given values.
fn fields_json(seq: i64, at: i64, event: &AuditEvent, address: Option<&str>) -> String {
    let mut fields = vec![
        serde_json::json!(seq),
        serde_json::json!(at),
        serde_json::json!(event.actor),
        serde_json::json!(event.hospital_id),
        serde_json::json!(event.action),
        serde_json::json!(event.target),
        serde_json::json!(event.outcome),
        serde_json::json!(event.detail),
    ];
    if let Some(address) = address {
        fields.push(serde_json::json!(address));
    }
    serde_json::Value::Array(fields).to_string()
}

/// The hash of a row written before the chain was keyed: SHA-256, without the address.
fn plain_hash(seq: i64, at: i64, event: &AuditEvent, prev_hash: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(fields_json(seq, at, event, None).as_bytes());
    hex::encode(hasher.finalize())
}

/// The hash of a keyed row: HMAC-SHA256 under the audit key of the previous hash and the
/// fields with the address.
fn keyed_hash(
    key: &SecretKey,
    seq: i64,
    at: i64,
    event: &AuditEvent,
    address: &str,
    prev_hash: &str,
) -> String {
    key.keyed_hash(&[prev_hash, &fields_json(seq, at, event, Some(address))])
}

/// Appends to the chain. Appends from this process queue on a lock; appends from other
/// processes (replicas) collide on the sequence number's uniqueness and retry.
#[derive(Debug)]
pub struct AuditLog {
    lock: Mutex<()>,
    key: SecretKey,
    /// The head (seq, hash) this process last checkpointed or found checkpointed, so the
    /// periodic checkpoint need not list the store to see that nothing moved.
    checkpointed: std::sync::Mutex<Option<(i64, String)>>,
}

impl AuditLog {
    /// A log writer that keys its rows with `key` (the `audit` key).
    pub fn new(key: SecretKey) -> Self {
        Self {
            lock: Mutex::new(()),
            key,
            checkpointed: std::sync::Mutex::new(None),
        }
    }

    /// The audit key, for checkpoints and verification.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The head last known to be checkpointed.
    pub(crate) fn checkpointed(&self) -> Option<(i64, String)> {
        self.checkpointed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remembers a checkpointed head.
    pub(crate) fn set_checkpointed(&self, head: (i64, String)) {
        *self.checkpointed.lock().unwrap_or_else(|p| p.into_inner()) = Some(head);
    }

    /// Records an event made from `address` (empty when not from a client); returns its
    /// sequence number.
    pub async fn append(&self, db: &Db, event: AuditEvent, address: &str) -> CoreResult<i64> {
        let _guard = self.lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match try_append(db, &self.key, &event, address).await {
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

async fn try_append(
    db: &Db,
    key: &SecretKey,
    event: &AuditEvent,
    address: &str,
) -> CoreResult<i64> {
    let mut tx = db.pool().begin().await?;
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (row.try_get::<i64, _>("seq")? + 1, row.try_get("hash")?),
        None => (1, GENESIS.to_string()),
    };
    let at = now();
    let hash = keyed_hash(key, seq, at, event, address, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, hospital_id, action, target, outcome, detail, \
         address, keyed, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)",
    )
    .bind(seq)
    .bind(at)
    .bind(&event.actor)
    .bind(&event.hospital_id)
    .bind(&event.action)
    .bind(&event.target)
    .bind(&event.outcome)
    .bind(&event.detail)
    .bind(address)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seq)
}

/// The newest row's sequence number and hash; `None` for an empty log.
pub async fn head(db: &Db) -> CoreResult<Option<(i64, String)>> {
    let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(row) => Ok(Some((row.try_get("seq")?, row.try_get("hash")?))),
        None => Ok(None),
    }
}

/// How many rows the log holds.
pub async fn count(db: &Db) -> CoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM audit_log")
        .fetch_one(db.pool())
        .await?
        .try_get("n")?)
}

/// Where the chain, or a checkpoint of it, does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit log broken at row {seq}: {reason}")]
pub struct ChainBreak {
    /// The first row that does not fit (for a checkpoint, the row it names).
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// Result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows walked (all of them when nothing is wrong).
    pub rows: u64,
    /// Checkpoints found in the object store.
    pub checkpoints: u64,
    /// The first problem, if any.
    pub problem: Option<ChainBreak>,
}

impl Verification {
    /// True when the chain and every checkpoint check out.
    pub fn intact(&self) -> bool {
        self.problem.is_none()
    }
}

fn record_from(row: &sqlx::any::AnyRow) -> CoreResult<AuditRecord> {
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
        address: row.try_get("address")?,
        keyed: row.try_get::<i64, _>("keyed")? != 0,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Reads rows in pages, in chain order.
async fn page(db: &Db, after: i64, limit: i64) -> CoreResult<Vec<AuditRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(record_from).collect()
}

/// The keyed-ness rule of a raw `keyed` column: 0 or 1, anything else is an edit.
async fn keyed_flags_are_valid(db: &Db) -> CoreResult<Option<i64>> {
    let row = sqlx::query("SELECT MIN(seq) AS s FROM audit_log WHERE keyed <> 0 AND keyed <> 1")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get::<Option<i64>, _>("s")?)
}

/// Walks the whole chain, then checks every checkpoint in `store` against it: names the first
/// row that was edited, removed, reordered or recomputed, a checkpoint that was not signed
/// with `key`, or the newest rows removed after a checkpoint recorded them.
pub async fn verify(db: &Db, store: &Store, key: &SecretKey) -> CoreResult<Verification> {
    let checkpoints = audit_checkpoint::list(store).await?;
    let mut verification = Verification {
        rows: 0,
        checkpoints: checkpoints.len() as u64,
        problem: None,
    };
    // The hashes of the rows checkpoints name, gathered during the walk.
    let mut wanted: HashMap<i64, Option<String>> = checkpoints
        .iter()
        .filter_map(|(_, c)| c.as_ref().ok().map(|c| (c.seq, None)))
        .collect();
    let (last_seq, problem) = walk(db, key, &mut wanted, &mut verification.rows).await?;
    if let Some(problem) = problem {
        verification.problem = Some(problem);
        return Ok(verification);
    }
    for (object, checkpoint) in &checkpoints {
        if let Some(problem) = check_checkpoint(key, object, checkpoint, last_seq, &wanted) {
            verification.problem = Some(problem);
            return Ok(verification);
        }
    }
    Ok(verification)
}

/// The chain walk: returns the last row's seq and the first break.
async fn walk(
    db: &Db,
    key: &SecretKey,
    wanted: &mut HashMap<i64, Option<String>>,
    count: &mut u64,
) -> CoreResult<(i64, Option<ChainBreak>)> {
    if let Some(seq) = keyed_flags_are_valid(db).await? {
        return Ok((
            0,
            Some(ChainBreak {
                seq,
                reason: "the row's keyed flag is neither 0 nor 1".into(),
            }),
        ));
    }
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_string();
    let mut seen_keyed = false;
    loop {
        let rows = page(db, expected_seq - 1, 1000).await?;
        if rows.is_empty() {
            return Ok((expected_seq - 1, None));
        }
        for record in rows {
            let broken = |reason: &str| {
                Ok((
                    expected_seq - 1,
                    Some(ChainBreak {
                        seq: record.seq,
                        reason: reason.to_string(),
                    }),
                ))
            };
            if record.seq != expected_seq {
                return broken(&format!("expected row {expected_seq}: rows are missing"));
            }
            if record.prev_hash != prev_hash {
                return broken("does not link to the previous row");
            }
            if record.keyed {
                let expected = keyed_hash(
                    key,
                    record.seq,
                    record.at,
                    &record.event,
                    &record.address,
                    &record.prev_hash,
                );
                if expected != record.hash {
                    return broken(
                        "contents do not match the row's keyed hash (edited, or the chain was \
                         recomputed without the audit key)",
                    );
                }
                seen_keyed = true;
            } else {
                if seen_keyed {
                    return broken(
                        "an unkeyed row after keyed rows: the chain was recomputed without the \
                         audit key",
                    );
                }
                // Rows from before the chain was keyed had no address to record.
                if !record.address.is_empty() {
                    return broken("an unkeyed row carries a client address");
                }
                if plain_hash(record.seq, record.at, &record.event, &record.prev_hash)
                    != record.hash
                {
                    return broken("contents do not match the row's hash");
                }
            }
            if let Some(slot) = wanted.get_mut(&record.seq) {
                *slot = Some(record.hash.clone());
            }
            prev_hash = record.hash;
            expected_seq += 1;
            *count += 1;
        }
    }
}

/// One checkpoint against the walked chain.
fn check_checkpoint(
    key: &SecretKey,
    object: &str,
    checkpoint: &Result<Checkpoint, String>,
    last_seq: i64,
    row_hashes: &HashMap<i64, Option<String>>,
) -> Option<ChainBreak> {
    let checkpoint = match checkpoint {
        Ok(c) => c,
        Err(why) => {
            return Some(ChainBreak {
                seq: audit_checkpoint::seq_of_key(object).unwrap_or(0),
                reason: format!("checkpoint {object} is unreadable ({why}): forged or altered"),
            });
        }
    };
    let when = audit_checkpoint::iso_time(checkpoint.at);
    if !checkpoint.is_signed_by(key) || !audit_checkpoint::key_matches(object, checkpoint) {
        return Some(ChainBreak {
            seq: checkpoint.seq,
            reason: format!(
                "checkpoint {object} does not carry a valid signature of the audit key: \
                 forged or altered"
            ),
        });
    }
    if checkpoint.seq > last_seq {
        return Some(ChainBreak {
            seq: last_seq + 1,
            reason: format!(
                "rows {}..{} are missing: the checkpoint of {when} recorded the log up to row \
                 {}, it now ends at row {last_seq} (its newest rows were removed)",
                last_seq + 1,
                checkpoint.seq,
                checkpoint.seq
            ),
        });
    }
    match row_hashes.get(&checkpoint.seq) {
        Some(Some(hash)) if *hash == checkpoint.hash => None,
        _ => Some(ChainBreak {
            seq: checkpoint.seq,
            reason: format!(
                "the row differs from the checkpoint of {when}: the chain was rewritten \
                 after it"
            ),
        }),
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

/// Cases and slides a filter stands for: a row matches when its target is any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subjects {
    /// Case ids: targets `case:ID` and `case:ID/…` (a case's slide, report or annotation).
    pub cases: Vec<String>,
    /// Slide ids: targets `slide:ID` and `case:…/slide:ID`.
    pub slides: Vec<String>,
}

impl Subjects {
    /// True when it stands for nothing (a patient with no cases): no row can match.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.slides.is_empty()
    }
}

/// What to look for in the log; every filter that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Only rows within this hospital's scope: rows by its people (`hospital_id`), and rows on
    /// the hospital, its users, its slides and the cases it referred or reads. `None`: all.
    pub hospital: Option<String>,
    /// The actor (a user name, `anonymous`, `cli:…`), exactly.
    pub actor: Option<String>,
    /// The action, exactly, or a prefix when it ends in `*` (`case.*`).
    pub action: Option<String>,
    /// `ok`, `denied`, `refused` or `failed`.
    pub outcome: Option<String>,
    /// Rows at or after this time (unix seconds).
    pub from: Option<i64>,
    /// Rows before this time (unix seconds).
    pub to: Option<i64>,
    /// Each group must match (a slide filter and a patient filter together: rows on that
    /// slide of that patient).
    pub subjects: Vec<Subjects>,
}

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newest first, from below `before` (all when `None`).
    NewestFirst {
        /// Only rows with a smaller sequence number.
        before: Option<i64>,
    },
    /// Oldest first, from above `after` (all when `None`).
    OldestFirst {
        /// Only rows with a larger sequence number.
        after: Option<i64>,
    },
}

/// A bound parameter of a dynamic query.
enum Param {
    Text(String),
    Int(i64),
}

/// A WHERE clause under construction, with its parameters in order.
#[derive(Default)]
struct Clauses {
    parts: Vec<String>,
    params: Vec<Param>,
}

impl Clauses {
    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn text(&mut self, value: impl Into<String>) -> String {
        self.param(Param::Text(value.into()))
    }
}

/// `text` with LIKE's wildcards and the escape character escaped (escape `\`).
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn subjects_clause(clauses: &mut Clauses, subjects: &Subjects) -> String {
    let mut alternatives = Vec::new();
    for case in &subjects.cases {
        let exact = clauses.text(format!("case:{case}"));
        let within = clauses.text(format!("case:{}/%", like_literal(case)));
        alternatives.push(format!(
            "target = {exact} OR target LIKE {within} ESCAPE '\\'"
        ));
    }
    for slide in &subjects.slides {
        let exact = clauses.text(format!("slide:{slide}"));
        let in_case = clauses.text(format!("case:%/slide:{}", like_literal(slide)));
        alternatives.push(format!(
            "target = {exact} OR target LIKE {in_case} ESCAPE '\\'"
        ));
    }
    if alternatives.is_empty() {
        "1 = 0".into()
    } else {
        format!("({})", alternatives.join(" OR "))
    }
}

fn where_clause(search: &Search, order: Order) -> Clauses {
    let mut clauses = Clauses::default();
    if let Some(hospital) = &search.hospital {
        let h = clauses.text(hospital.clone());
        let own = clauses.text(format!("hospital:{hospital}"));
        // Targets name users by name, slides and cases by id; a case's own rows may name one
        // of its slides or reports after the case (`case:ID/slide:ID`).
        let scope = format!(
            "(hospital_id = {h} OR target = {own} \
             OR (target LIKE 'user:%' AND substr(target, 6) IN \
                 (SELECT username FROM users WHERE hospital_id = {h})) \
             OR (target LIKE 'slide:%' AND substr(target, 7) IN \
                 (SELECT id FROM slides WHERE hospital_id = {h})) \
             OR (target LIKE 'case:%' AND EXISTS (SELECT 1 FROM cases c \
                 WHERE (c.spoke_id = {h} OR c.hub_id = {h}) \
                 AND (audit_log.target = ('case:' || c.id) \
                      OR audit_log.target LIKE ('case:' || c.id || '/%')))))"
        );
        clauses.parts.push(scope);
    }
    if let Some(actor) = &search.actor {
        let p = clauses.text(actor.clone());
        clauses.parts.push(format!("actor = {p}"));
    }
    if let Some(action) = &search.action {
        match action.strip_suffix('*') {
            Some(prefix) => {
                let p = clauses.text(format!("{}%", like_literal(prefix)));
                clauses.parts.push(format!("action LIKE {p} ESCAPE '\\'"));
            }
            None => {
                let p = clauses.text(action.clone());
                clauses.parts.push(format!("action = {p}"));
            }
        }
    }
    if let Some(outcome) = &search.outcome {
        let p = clauses.text(outcome.clone());
        clauses.parts.push(format!("outcome = {p}"));
    }
    if let Some(from) = search.from {
        let p = clauses.param(Param::Int(from));
        clauses.parts.push(format!("at >= {p}"));
    }
    if let Some(to) = search.to {
        let p = clauses.param(Param::Int(to));
        clauses.parts.push(format!("at < {p}"));
    }
    for subjects in &search.subjects {
        let clause = subjects_clause(&mut clauses, subjects);
        clauses.parts.push(clause);
    }
    match order {
        Order::NewestFirst {
            before: Some(before),
        } => {
            let p = clauses.param(Param::Int(before));
            clauses.parts.push(format!("seq < {p}"));
        }
        Order::OldestFirst { after: Some(after) } => {
            let p = clauses.param(Param::Int(after));
            clauses.parts.push(format!("seq > {p}"));
        }
        Order::NewestFirst { before: None } | Order::OldestFirst { after: None } => {}
    }
    clauses
}

/// Up to `limit` rows matching `search`, in `order`.
pub async fn search(
    db: &Db,
    search: &Search,
    order: Order,
    limit: i64,
) -> CoreResult<Vec<AuditRecord>> {
    let mut clauses = where_clause(search, order);
    let limit_param = clauses.param(Param::Int(limit.max(0)));
    let condition = if clauses.parts.is_empty() {
        "1 = 1".to_string()
    } else {
        clauses.parts.join(" AND ")
    };
    let direction = match order {
        Order::NewestFirst { .. } => "DESC",
        Order::OldestFirst { .. } => "ASC",
    };
    // Only this module's constants and parameter placeholders are formatted into the statement.
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE {condition} ORDER BY seq {direction} \
         LIMIT {limit_param}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for param in clauses.params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Int(n) => query.bind(n),
        };
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter().map(record_from).collect()
}

/// The cases of a patient of `hospital_id` (found by the keyed hash of the patient's id under
/// that hospital) and the slides in them.
pub async fn patient_subjects(
    db: &Db,
    hospital_id: &str,
    patient_hash: &str,
) -> CoreResult<Subjects> {
    let cases = sqlx::query(
        "SELECT id FROM cases WHERE spoke_id = $1 AND patient_hash = $2 ORDER BY created_at, id",
    )
    .bind(hospital_id)
    .bind(patient_hash)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| row.try_get::<String, _>("id"))
    .collect::<Result<Vec<_>, _>>()?;
    let slides = sqlx::query(
        "SELECT DISTINCT cs.slide_id AS slide_id FROM case_slides cs \
         JOIN cases c ON c.id = cs.case_id \
         WHERE c.spoke_id = $1 AND c.patient_hash = $2 ORDER BY slide_id",
    )
    .bind(hospital_id)
    .bind(patient_hash)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(|row| row.try_get::<String, _>("slide_id"))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Subjects { cases, slides })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_literals_escape_wildcards() {
        assert_eq!(like_literal("a_b%c\\d"), "a\\_b\\%c\\\\d");
    }

    #[test]
    fn keyed_and_plain_hashes_differ_and_cover_the_address() {
        let key = SecretKey::from_bytes([7; 32]);
        let event = AuditEvent::anonymous("login", "user:a", "denied");
        let a = keyed_hash(&key, 1, 10, &event, "127.0.0.1", GENESIS);
        let b = keyed_hash(&key, 1, 10, &event, "10.0.0.1", GENESIS);
        let other = SecretKey::from_bytes([8; 32]);
        assert_ne!(a, b);
        assert_ne!(a, keyed_hash(&other, 1, 10, &event, "127.0.0.1", GENESIS));
        assert_ne!(a, plain_hash(1, 10, &event, GENESIS));
    }

    #[test]
    fn clauses_number_their_parameters_in_order() {
        let search = Search {
            actor: Some("alice".into()),
            action: Some("case.*".into()),
            subjects: vec![Subjects {
                cases: vec!["c1".into()],
                slides: vec![],
            }],
            ..Search::default()
        };
        let clauses = where_clause(&search, Order::NewestFirst { before: Some(9) });
        assert_eq!(clauses.params.len(), 5);
        let joined = clauses.parts.join(" AND ");
        assert!(joined.contains("actor = $1"), "{joined}");
        assert!(joined.contains("action LIKE $2"), "{joined}");
        assert!(joined.contains("seq < $5"), "{joined}");
    }
}
