-- Hospital-grade security (issue 19): second factor, session timeouts, policies, quotas, the
-- client address and key of each audit row.

-- TOTP: the shared secret sealed with the `totp` key (never stored in clear), set when enrolment
-- starts and in force once confirmed (totp_enabled_at); the last accepted time step, so a code
-- is accepted once only. Read and written through `core/src/second_factor.rs`.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_enabled_at BIGINT;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;
ALTER TABLE users ADD COLUMN password_changed_at BIGINT;

-- One-time recovery codes, only their hashes.
CREATE TABLE recovery_codes (
    code_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

-- Sessions end after `auth.idle_minutes` without a request (last_seen_at) and after
-- `auth.session_hours` in any case (expires_at). A session of a user who must enrol a second
-- factor first is stage 'enrol' until they do; second_factor_at is when a code was last given.
ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;
ALTER TABLE sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full';
ALTER TABLE sessions ADD COLUMN second_factor_at BIGINT;
ALTER TABLE sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';

-- Per-hospital policy: every user needs a second factor (admins always do); signing out a case
-- asks for a fresh code. Upload quota in bytes (NULL: none).
ALTER TABLE hospitals ADD COLUMN require_second_factor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hospitals ADD COLUMN signout_second_factor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hospitals ADD COLUMN upload_quota_bytes BIGINT;

-- The client address of each audit row, and whether its hash is keyed (HMAC with the `audit`
-- key kept outside the database). Rows written before this migration keep their plain SHA-256.
ALTER TABLE audit_log ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_log ADD COLUMN keyed BIGINT NOT NULL DEFAULT 0;
CREATE INDEX audit_by_actor ON audit_log (actor, seq);
CREATE INDEX audit_by_target ON audit_log (target, seq);
