-- Failed sign-ins, counted per typed user name (known or not, so both answer alike) and per
-- client address; a key that reaches its limit within the window is locked until locked_until.
-- Read and written through `core/src/throttle.rs`.
CREATE TABLE login_attempts (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    first_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0
);
