-- Consultation: cases from spokes to hubs, the two reads, reports and annotations.

-- The hub a spoke's cases go to unless the submitter chooses another.
ALTER TABLE hospitals ADD COLUMN default_hub_id TEXT;

CREATE TABLE cases (
    id TEXT PRIMARY KEY,
    spoke_id TEXT NOT NULL REFERENCES hospitals (id),
    hub_id TEXT REFERENCES hospitals (id),
    created_by TEXT NOT NULL REFERENCES users (id),
    -- The patient's local id: HMAC for matching, AES-GCM for display; never in clear.
    patient_hash TEXT NOT NULL,
    patient_cipher TEXT NOT NULL,
    age_band TEXT NOT NULL,
    sex TEXT NOT NULL,
    organ TEXT NOT NULL,
    specimen TEXT NOT NULL,
    clinical_question TEXT NOT NULL,
    urgency TEXT NOT NULL,
    taxonomy TEXT NOT NULL,
    status TEXT NOT NULL,
    primary_reader TEXT REFERENCES users (id),
    second_reader TEXT REFERENCES users (id),
    concordant BIGINT,
    final_code TEXT,
    final_findings TEXT,
    final_by TEXT REFERENCES users (id),
    final_note TEXT,
    report_version BIGINT NOT NULL DEFAULT 0,
    report_seen_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    submitted_at BIGINT,
    closed_at BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX cases_by_spoke ON cases (spoke_id, created_at);
CREATE INDEX cases_by_hub ON cases (hub_id, status, submitted_at);
CREATE INDEX cases_by_patient ON cases (spoke_id, patient_hash);

CREATE TABLE case_slides (
    case_id TEXT NOT NULL REFERENCES cases (id),
    slide_id TEXT NOT NULL REFERENCES slides (id),
    position BIGINT NOT NULL,
    PRIMARY KEY (case_id, slide_id)
);

CREATE INDEX case_slides_by_slide ON case_slides (slide_id);

-- One row per read: 'primary' (the assigned pathologist) and 'second' (the blind check).
CREATE TABLE case_reads (
    case_id TEXT NOT NULL REFERENCES cases (id),
    kind TEXT NOT NULL,
    reader_id TEXT NOT NULL REFERENCES users (id),
    code TEXT NOT NULL,
    findings TEXT NOT NULL,
    slides TEXT NOT NULL,
    entered_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, kind)
);

-- Every issued report version; older versions stay when a case is amended.
CREATE TABLE case_reports (
    case_id TEXT NOT NULL REFERENCES cases (id),
    version BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    pdf_sha256 TEXT NOT NULL,
    signed_by TEXT NOT NULL REFERENCES users (id),
    signed_at BIGINT NOT NULL,
    amendment_reason TEXT,
    PRIMARY KEY (case_id, version)
);

CREATE INDEX case_reports_by_pdf ON case_reports (pdf_sha256);

CREATE TABLE annotations (
    id TEXT PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES cases (id),
    slide_id TEXT NOT NULL REFERENCES slides (id),
    author_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    geometry TEXT NOT NULL,
    label_code TEXT,
    note TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX annotations_by_slide ON annotations (case_id, slide_id);
