-- The research tier: de-identified slides under pseudonyms, patients' opt-outs, and
-- immutable dataset versions. Nothing here names a patient, a slide or a case of the clinical
-- tier: research ids are keyed hashes that only the holder of the pseudonym key can recompute.

-- A patient's refusal of research use, per hospital (the patient id as the cases' HMAC).
CREATE TABLE opt_outs (
    hospital_id TEXT NOT NULL REFERENCES hospitals (id),
    patient_hash TEXT NOT NULL,
    recorded_by TEXT NOT NULL REFERENCES users (id),
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (hospital_id, patient_hash)
);

CREATE TABLE research_slides (
    id TEXT PRIMARY KEY,
    research_patient TEXT NOT NULL,
    research_hospital TEXT NOT NULL,
    taxonomy TEXT NOT NULL,
    label_code TEXT NOT NULL,
    organ TEXT NOT NULL,
    age_band TEXT NOT NULL,
    sex TEXT NOT NULL,
    year BIGINT NOT NULL,
    object_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    mpp_x DOUBLE PRECISION,
    mpp_y DOUBLE PRECISION,
    objective_power DOUBLE PRECISION,
    vendor TEXT NOT NULL,
    pixel_path TEXT NOT NULL,
    -- Region labels from annotations, JSON, in the research slide's level-0 pixels.
    regions TEXT NOT NULL,
    report_version BIGINT NOT NULL,
    curated_at BIGINT NOT NULL,
    -- Tombstone: the object is gone, the row says when and why.
    deleted_at BIGINT,
    deleted_reason TEXT
);

CREATE INDEX research_slides_by_patient ON research_slides (research_patient);
CREATE INDEX research_slides_by_organ ON research_slides (organ, deleted_at);

CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE dataset_versions (
    name TEXT NOT NULL REFERENCES datasets (name),
    version BIGINT NOT NULL,
    -- building → published | failed
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    job_id TEXT,
    manifest_key TEXT,
    content_hash TEXT,
    summary TEXT,
    error TEXT,
    created_by TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    published_at BIGINT,
    PRIMARY KEY (name, version)
);
