-- The Japanese workstation: who people are on a report, which language and time zone each
-- hospital works in, slide labels as the report names them, in-app notifications and the
-- e-mail switch. Read and written through `core/src/accounts.rs` (people, hospitals),
-- `consult` (slide labels, notifications).

-- A pathologist's name and qualification as the report prints them (e.g. 山田 太郎,
-- 病理専門医); the language the user chose (NULL: the browser's); where e-mail notices go.
ALTER TABLE users ADD COLUMN display_name TEXT;
ALTER TABLE users ADD COLUMN qualification TEXT;
ALTER TABLE users ADD COLUMN language TEXT;
ALTER TABLE users ADD COLUMN email TEXT;

-- Times are shown in the hospital's zone (IANA name); a hub's reports use its language.
ALTER TABLE hospitals ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'Asia/Tokyo';
ALTER TABLE hospitals ADD COLUMN language TEXT NOT NULL DEFAULT 'ja';
-- E-mail notices are off until a hospital turns them on (and the operator configures SMTP).
ALTER TABLE hospitals ADD COLUMN email_notifications BIGINT NOT NULL DEFAULT 0;

-- The specimen/block label the spoke gives each slide of a case (e.g. "A1", "#2 HE").
ALTER TABLE case_slides ADD COLUMN label TEXT;

-- One row per user and event; read_at is set when that user marks it read.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    case_id TEXT,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);

CREATE INDEX notifications_by_user ON notifications (user_id, read_at, created_at);
