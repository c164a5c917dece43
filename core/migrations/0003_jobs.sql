-- Background work (curation, patch extraction, training, inference) as rows: any worker
-- process claims a job with a lease, reports progress while it holds it, and either finishes
-- it, fails it (retried later with backoff) or stops it when cancellation is requested.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- Enqueueing the same work twice (e.g. curate this slide) yields the first job.
    dedupe_key TEXT UNIQUE,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_after BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    progress_note TEXT NOT NULL DEFAULT '',
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    result TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX jobs_ready ON jobs (status, kind, run_after);
