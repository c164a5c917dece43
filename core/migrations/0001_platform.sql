-- Portable across SQLite and PostgreSQL: ids are TEXT (UUIDs), times are BIGINT unix seconds,
-- flags are BIGINT 0/1, so one set of queries serves both backends.

CREATE TABLE hospitals (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL REFERENCES hospitals (id),
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Only hashes of session and token secrets are stored: a copy of the database grants nothing.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Append-only; each row's hash covers its fields and the previous row's hash.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    hospital_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE slides (
    id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL REFERENCES hospitals (id),
    uploaded_by TEXT NOT NULL REFERENCES users (id),
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    main_file TEXT NOT NULL,
    files TEXT NOT NULL,
    format TEXT NOT NULL,
    vendor TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    levels BIGINT NOT NULL,
    mpp_x DOUBLE PRECISION,
    mpp_y DOUBLE PRECISION,
    objective_power DOUBLE PRECISION,
    has_label BIGINT NOT NULL,
    properties TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (hospital_id, sha256)
);

CREATE INDEX slides_by_hospital ON slides (hospital_id, created_at);

CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    hospital_id TEXT NOT NULL REFERENCES hospitals (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    length BIGINT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    slide_id TEXT
);
