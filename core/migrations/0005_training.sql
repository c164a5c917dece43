-- Training runs, the model registry and deployments. A run is a row plus a `train` job; its
-- per-epoch metrics are kept here so the UI can draw curves while it runs. A model version is
-- registered only once every object under models/{name}/{version}/ is written: the row is the
-- commit point, so a failed run leaves nothing half-registered.

CREATE TABLE training_runs (
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    dataset_version BIGINT NOT NULL,
    -- The request as JSON (architecture, epochs, batch, lr, seeds, device, ...).
    request TEXT NOT NULL,
    device TEXT NOT NULL,
    job_id TEXT,
    -- Per-epoch metrics, JSON list of {seed, epoch, split, name, value}.
    history TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version BIGINT,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);

CREATE INDEX training_runs_by_time ON training_runs (created_at);

CREATE TABLE models (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    architecture TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_version BIGINT NOT NULL,
    dataset_hash TEXT NOT NULL,
    taxonomy TEXT NOT NULL,
    organ TEXT,
    -- JSON list of class codes, index order; the positive class scores a slide.
    classes TEXT NOT NULL,
    positive TEXT NOT NULL,
    code_version TEXT NOT NULL,
    -- Headline metrics as JSON (the full set is metrics.json in the object store).
    summary TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    -- registered | retired
    status TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    PRIMARY KEY (name, version)
);

-- The model inference uses for an organ's slides labelled in a taxonomy.
CREATE TABLE deployments (
    organ TEXT NOT NULL,
    taxonomy TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version BIGINT NOT NULL,
    deployed_by TEXT NOT NULL REFERENCES users (id),
    deployed_at BIGINT NOT NULL,
    PRIMARY KEY (organ, taxonomy)
);
