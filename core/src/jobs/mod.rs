//! The job queue: background work as database rows, shared by every worker process.
//!
//! A job is `queued` until a worker claims it, which takes a lease (`lease_until`) and counts an
//! attempt. While working, the holder calls [`Jobs::heartbeat`] to extend the lease and report
//! progress; the answer says whether someone asked to cancel. It ends the job with
//! [`Jobs::succeed`], [`Jobs::fail`] (queued again after an exponential backoff while attempts
//! remain, if the failure is retryable) or [`Jobs::acknowledge_cancel`]. A worker that dies
//! simply stops renewing its lease; once it runs out another worker claims the job again. An
//! admin queues a job that failed for good again once its cause is fixed ([`Jobs::retry`]).
//!
//! Claiming is one statement: on PostgreSQL the candidate row is locked with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never block on or share a job; SQLite has a
//! single writer, so the same statement is atomic there as it stands.
//!
//! What a kind is called, carries and how often it is tried is declared once in [`kinds`];
//! jobs are made only from those declarations ([`NewJob::of`]). Enqueueing can join the
//! caller's transaction ([`Jobs::enqueue_in`]), so a state change and the work it starts
//! commit together or not at all.

pub mod kinds;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use self::kinds::JobKind;

use crate::clock::Clock;
use crate::db::{Db, DbKind, new_id, placeholders};
use crate::error::{CoreError, CoreResult};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a worker (possibly until `run_after`).
    Queued,
    /// Held by a worker.
    Running,
    /// Done.
    Succeeded,
    /// Given up: not retryable, or out of attempts.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobStatus {
    /// The name stored and shown (`queued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `s` (`queued`, `running`, ...), as [`JobStatus::as_str`] writes it.
    pub fn parse(s: &str) -> CoreResult<Self> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| CoreError::Invalid(format!("unknown job status {s:?}")))
    }

    /// Finished one way or another.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Id.
    pub id: String,
    /// What kind of work (`curate`, `extract`, `train`, `infer`).
    pub kind: String,
    /// The work's parameters (JSON).
    pub payload: serde_json::Value,
    /// Status.
    pub status: JobStatus,
    /// Attempts started so far.
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// Not to be started before (unix seconds).
    pub run_after: i64,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// Lease end.
    pub lease_until: Option<i64>,
    /// 0.0–1.0.
    pub progress: f64,
    /// What the worker is doing now.
    pub progress_note: String,
    /// Someone asked to stop it.
    pub cancel_requested: bool,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// What the job produced (JSON).
    pub result: Option<serde_json::Value>,
    /// Who asked for it.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: i64,
    /// First started.
    pub started_at: Option<i64>,
    /// Finished.
    pub finished_at: Option<i64>,
}

/// A new job, made from its kind's declaration.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: serde_json::Value,
    dedupe_key: Option<String>,
    max_attempts: i64,
    created_by: Option<String>,
}

impl NewJob {
    /// A job of kind `K` with `payload`, its dedupe key and attempts as `K` declares them.
    pub fn of<K: JobKind>(payload: &K::Payload) -> Self {
        Self {
            kind: K::stored_kind(payload),
            // A payload is plain data (strings, numbers, flags): it always serialises.
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            dedupe_key: K::dedupe_key(payload),
            max_attempts: K::MAX_ATTEMPTS.max(1),
            created_by: None,
        }
    }

    /// Makes the key unique to this request (`{declared key}:{suffix}`), so the work runs again
    /// even though it ran before; a kind without a key gets none.
    pub fn repeat(mut self, suffix: &str) -> Self {
        self.dedupe_key = self.dedupe_key.map(|key| format!("{key}:{suffix}"));
        self
    }

    /// Drops the dedupe key: a finished job of the same work must not stop this one.
    pub fn always(mut self) -> Self {
        self.dedupe_key = None;
        self
    }

    /// Records who asked.
    pub fn by(mut self, user_id: &str) -> Self {
        self.created_by = Some(user_id.to_string());
        self
    }

    /// The stored kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The dedupe key, if any.
    pub fn dedupe_key(&self) -> Option<&str> {
        self.dedupe_key.as_deref()
    }
}

/// Queue timing.
#[derive(Debug, Clone, Copy)]
pub struct QueuePolicy {
    /// Seconds a claim or heartbeat holds the job.
    pub lease_s: i64,
    /// Backoff before the first retry; doubled for each further attempt.
    pub backoff_base_s: i64,
    /// Longest backoff.
    pub backoff_max_s: i64,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            lease_s: 60,
            backoff_base_s: 10,
            backoff_max_s: 3600,
        }
    }
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Carry on.
    Continue,
    /// Stop and call [`Jobs::acknowledge_cancel`].
    CancelRequested,
}

/// The queue over a database.
#[derive(Debug, Clone)]
pub struct Jobs {
    db: Db,
    policy: QueuePolicy,
    clock: Clock,
}

const COLUMNS: &str = "id, kind, payload, status, attempts, max_attempts, run_after, \
     lease_owner, lease_until, progress, progress_note, cancel_requested, last_error, result, \
     created_by, created_at, started_at, finished_at";

fn job_from_row(row: &AnyRow) -> CoreResult<Job> {
    let payload: String = row.try_get("payload")?;
    let result: Option<String> = row.try_get("result")?;
    let cancel: i64 = row.try_get("cancel_requested")?;
    Ok(Job {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        status: JobStatus::parse(&row.try_get::<String, _>("status")?)?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: row.try_get("run_after")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_until: row.try_get("lease_until")?,
        progress: row.try_get("progress")?,
        progress_note: row.try_get("progress_note")?,
        cancel_requested: cancel != 0,
        last_error: row.try_get("last_error")?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Inserts `job` at time `at` on `conn`; `None` when its dedupe key was used already.
async fn insert(
    conn: &mut sqlx::AnyConnection,
    job: &NewJob,
    at: i64,
) -> CoreResult<Option<String>> {
    let id = new_id();
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, kind, payload, dedupe_key, status, attempts, max_attempts, \
         run_after, progress, progress_note, cancel_requested, created_by, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, 0, '', 0, $7, $6, $6) \
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&id)
    .bind(&job.kind)
    .bind(job.payload.to_string())
    .bind(&job.dedupe_key)
    .bind(job.max_attempts.max(1))
    .bind(at)
    .bind(&job.created_by)
    .execute(&mut *conn)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(id))
}

/// The refusal when a worker acts on a job it no longer holds.
fn lease_lost(id: &str) -> CoreError {
    CoreError::Invalid(format!(
        "job {id} is no longer held by this worker (its lease ran out or it was cancelled)"
    ))
}

impl Jobs {
    /// The queue with the default policy.
    pub fn new(db: Db) -> Self {
        Self::with_policy(db, QueuePolicy::default())
    }

    /// The queue with explicit timing (tests use short leases).
    pub fn with_policy(db: Db, policy: QueuePolicy) -> Self {
        Self {
            db,
            policy,
            clock: Clock::system(),
        }
    }

    /// The same queue reading time from `clock` (tests move it instead of waiting).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The timing in force.
    pub fn policy(&self) -> QueuePolicy {
        self.policy
    }

    /// Adds a job; with a dedupe key already used, returns the existing job instead.
    pub async fn enqueue(&self, job: NewJob) -> CoreResult<Job> {
        let mut conn = self.db.pool().acquire().await?;
        match insert(&mut conn, &job, self.clock.now()).await? {
            Some(id) => self.get(&id).await,
            None => {
                let key = job.dedupe_key.unwrap_or_default();
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM jobs WHERE dedupe_key = $1"
                )))
                .bind(&key)
                .fetch_one(self.db.pool())
                .await?;
                job_from_row(&row)
            }
        }
    }

    /// Adds a job on `conn`, inside whatever transaction it holds, so the job exists exactly
    /// when the caller's change commits. Returns the new job's id, or `None` when its dedupe
    /// key was used already (the statement skips the row instead of failing, which would
    /// abort a PostgreSQL transaction).
    pub async fn enqueue_in(
        conn: &mut sqlx::AnyConnection,
        job: &NewJob,
    ) -> CoreResult<Option<String>> {
        insert(conn, job, crate::clock::now()).await
    }

    /// One job.
    pub async fn get(&self, id: &str) -> CoreResult<Job> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| CoreError::NotFound(format!("job {id}")))?;
        job_from_row(&row)
    }

    /// Jobs of `kind` (or all), newest first, at most `limit`.
    pub async fn list(&self, kind: Option<&str>, limit: i64) -> CoreResult<Vec<Job>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE ($1 = '' OR kind = $1) \
             ORDER BY created_at DESC, id LIMIT $2"
        )))
        .bind(kind.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Jobs in `status`, the most recently changed first, at most `limit`. With `hospital_id`,
    /// only the jobs that users of that hospital asked for (`created_by`): work the platform
    /// started by itself (curation, automatic AI runs) names nobody and belongs to no hospital.
    pub async fn list_by_status(
        &self,
        status: JobStatus,
        hospital_id: Option<&str>,
        limit: i64,
    ) -> CoreResult<Vec<Job>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE status = $1 AND ($2 = '' OR created_by IN \
             (SELECT id FROM users WHERE hospital_id = $2)) \
             ORDER BY updated_at DESC, id LIMIT $3"
        )))
        .bind(status.as_str())
        .bind(hospital_id.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queues a failed job again, to run now, with as many attempts as its kind first allowed
    /// (the count starts again from zero); the last error stays until an attempt ends. Only a
    /// failed job is retried: anything else is refused with its status. Returns the job as it
    /// now stands.
    pub async fn retry(&self, id: &str) -> CoreResult<Job> {
        let at = self.clock.now();
        // One statement that also checks the status, so a job two admins retry at once is
        // queued once, and a job that is no longer failed is left alone.
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_after = $1, lease_owner = NULL, \
             lease_until = NULL, progress = 0, progress_note = '', cancel_requested = 0, \
             finished_at = NULL, updated_at = $1 WHERE id = $2 AND status = 'failed'",
        )
        .bind(at)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        let job = self.get(id).await?;
        if done.rows_affected() != 1 {
            return Err(CoreError::Invalid(format!(
                "job {id} is {}: only a failed job can be retried",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    /// Jobs of `kind` whose dedupe key starts with `prefix` (one subject's jobs, when keys
    /// name their subject first), newest first, at most `limit`.
    pub async fn list_by_key_prefix(
        &self,
        kind: &str,
        prefix: &str,
        limit: i64,
    ) -> CoreResult<Vec<Job>> {
        // LIKE wildcards in the prefix would widen the match; keys name ids, never wildcards.
        if prefix.contains(['%', '_', '\\']) {
            return Err(CoreError::Invalid(format!("job key prefix {prefix:?}")));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE kind = $1 AND dedupe_key LIKE $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        )))
        .bind(kind)
        .bind(format!("{prefix}%"))
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// The payloads of `K`'s jobs that are queued or running: work under way, which a caller
    /// should not enqueue again. Only jobs stored under [`JobKind::NAME`] are read (not a
    /// kind's device variants, such as `train-cuda`); a payload that no longer decodes is left
    /// out.
    pub async fn active_payloads<K: JobKind>(&self) -> CoreResult<Vec<K::Payload>> {
        let rows = sqlx::query(
            "SELECT payload FROM jobs WHERE kind = $1 AND status IN ('queued', 'running') \
             ORDER BY created_at, id",
        )
        .bind(K::NAME)
        .fetch_all(self.db.pool())
        .await?;
        let mut payloads = Vec::with_capacity(rows.len());
        for row in &rows {
            let payload: String = row.try_get("payload")?;
            if let Ok(p) = serde_json::from_str::<K::Payload>(&payload) {
                payloads.push(p);
            }
        }
        Ok(payloads)
    }

    /// Claims the oldest ready job of one of `kinds` for `worker`, or `None`.
    pub async fn claim(&self, worker: &str, kinds: &[&str]) -> CoreResult<Option<Job>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let at = self.clock.now();
        // An idle poll only reads: on SQLite every UPDATE takes the single write lock, and
        // idle workers must not compete with the requests that write.
        let probe = format!(
            "SELECT 1 FROM jobs WHERE kind IN ({}) AND ((status = 'queued' AND run_after <= $1) \
             OR (status = 'running' AND lease_until < $1)) LIMIT 1",
            placeholders(2, kinds.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(probe)).bind(at);
        for kind in kinds {
            query = query.bind(*kind);
        }
        if query.fetch_optional(self.db.pool()).await?.is_none() {
            return Ok(None);
        }
        self.expire_exhausted().await?;
        // Parameters: $1 worker, $2 lease end, $3 now, then one per kind.
        let lock = match self.db.kind() {
            DbKind::Postgres => " FOR UPDATE SKIP LOCKED",
            DbKind::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_until = $2, \
             attempts = attempts + 1, started_at = COALESCE(started_at, $3), updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE kind IN ({}) AND cancel_requested = 0 \
             AND attempts < max_attempts AND ((status = 'queued' AND run_after <= $3) \
             OR (status = 'running' AND lease_until < $3)) \
             ORDER BY run_after, created_at LIMIT 1{lock}) \
             RETURNING {COLUMNS}",
            placeholders(4, kinds.len())
        );
        // Only our own parameter numbers and constants are formatted into the statement.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(at + self.policy.lease_s)
            .bind(at);
        for kind in kinds {
            query = query.bind(*kind);
        }
        let row = query.fetch_optional(self.db.pool()).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Jobs whose worker vanished after their last allowed attempt fail, and jobs cancelled
    /// while queued or abandoned are closed.
    async fn expire_exhausted(&self) -> CoreResult<()> {
        let at = self.clock.now();
        sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = $1, updated_at = $1, \
             lease_owner = NULL, last_error = COALESCE(last_error, 'the worker stopped \
             answering (lease expired) on the last allowed attempt') \
             WHERE status = 'running' AND lease_until < $1 AND attempts >= max_attempts",
        )
        .bind(at)
        .execute(self.db.pool())
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1, \
             lease_owner = NULL WHERE status = 'running' AND lease_until < $1 \
             AND cancel_requested = 1",
        )
        .bind(at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Extends the lease and records progress (0.0–1.0) with a note; says whether to stop.
    pub async fn heartbeat(
        &self,
        job: &Job,
        worker: &str,
        progress: f64,
        note: &str,
    ) -> CoreResult<Heartbeat> {
        let at = self.clock.now();
        // One round trip: the renewal also reads back whether someone asked to cancel.
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_until = $1, progress = $2, progress_note = $3, updated_at = $4 \
             WHERE id = $5 AND status = 'running' AND lease_owner = $6 \
             RETURNING cancel_requested",
        )
        .bind(at + self.policy.lease_s)
        .bind(progress.clamp(0.0, 1.0))
        .bind(note)
        .bind(at)
        .bind(&job.id)
        .bind(worker)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or_else(|| lease_lost(&job.id))?;
        let cancel: i64 = renewed.try_get("cancel_requested")?;
        Ok(if cancel != 0 {
            Heartbeat::CancelRequested
        } else {
            Heartbeat::Continue
        })
    }

    /// Finishes the job with its result.
    pub async fn succeed(
        &self,
        job: &Job,
        worker: &str,
        result: serde_json::Value,
    ) -> CoreResult<()> {
        let at = self.clock.now();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'succeeded', result = $1, progress = 1, finished_at = $2, \
             updated_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE id = $3 AND status = 'running' AND lease_owner = $4",
        )
        .bind(result.to_string())
        .bind(at)
        .bind(&job.id)
        .bind(worker)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Err(lease_lost(&job.id));
        }
        Ok(())
    }

    /// Records a failed attempt: queued again after a backoff if `retryable` and attempts
    /// remain, failed for good otherwise. Returns the new status.
    pub async fn fail(
        &self,
        job: &Job,
        worker: &str,
        error: &str,
        retryable: bool,
    ) -> CoreResult<JobStatus> {
        let current = self.get(&job.id).await?;
        if current.status != JobStatus::Running || current.lease_owner.as_deref() != Some(worker) {
            return Err(lease_lost(&job.id));
        }
        let at = self.clock.now();
        let again = retryable && current.attempts < current.max_attempts;
        let status = if again {
            JobStatus::Queued
        } else {
            JobStatus::Failed
        };
        let exponent = (current.attempts - 1).clamp(0, 30) as u32;
        let backoff = self
            .policy
            .backoff_base_s
            .saturating_mul(1_i64 << exponent)
            .min(self.policy.backoff_max_s);
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, last_error = $2, run_after = $3, lease_owner = NULL, \
             lease_until = NULL, finished_at = $4, updated_at = $5 \
             WHERE id = $6 AND status = 'running' AND lease_owner = $7",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(if again {
            at + backoff
        } else {
            current.run_after
        })
        .bind(if again { None } else { Some(at) })
        .bind(at)
        .bind(&job.id)
        .bind(worker)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Err(lease_lost(&job.id));
        }
        Ok(status)
    }

    /// Asks a job to stop: a queued job is cancelled at once, a running one when its worker
    /// next checks in. Returns the job as it now stands; finished jobs are left as they are.
    pub async fn cancel(&self, id: &str) -> CoreResult<Job> {
        let at = self.clock.now();
        sqlx::query(
            "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = $1, \
             updated_at = $1 WHERE id = $2 AND status = 'queued'",
        )
        .bind(at)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $1 \
             WHERE id = $2 AND status = 'running'",
        )
        .bind(at)
        .bind(id)
        .execute(self.db.pool())
        .await?;
        self.get(id).await
    }

    /// The worker confirms it stopped a job whose cancellation was requested.
    pub async fn acknowledge_cancel(&self, job: &Job, worker: &str) -> CoreResult<()> {
        let at = self.clock.now();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $1, \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $2 AND status = 'running' AND lease_owner = $3 AND cancel_requested = 1",
        )
        .bind(at)
        .bind(&job.id)
        .bind(worker)
        .execute(self.db.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Err(lease_lost(&job.id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(JobStatus::parse(status.as_str()).unwrap(), status);
        }
        assert!(JobStatus::parse("nope").is_err());
        assert!(JobStatus::Cancelled.is_final() && !JobStatus::Queued.is_final());
    }
}
