-- Patient ids keyed the way staff type them, and opt-outs that say what they matched.

-- Whether the hospital's patient ids distinguish letter case: 'sensitive' (the default) or
-- 'insensitive' (ids are folded to upper case before they are hashed). Read and written
-- through `accounts::{patient_id_case, set_patient_id_case}`; the rule itself is
-- `contracts::consent::PatientId::normalise`.
ALTER TABLE hospitals ADD COLUMN patient_id_case TEXT NOT NULL DEFAULT 'sensitive';

-- The normalised patient id, AES-GCM under the patient-id key as on `cases`, so the
-- hospital's own staff can read their list of opt-outs. NULL for rows recorded before this
-- migration (only the keyed hash was kept); recording the opt-out again fills it in.
ALTER TABLE opt_outs ADD COLUMN patient_cipher TEXT;

-- What the opt-out matched when it was (last) recorded: the hospital's cases of the patient
-- and the slides of those cases that had been handed to the research tier. NULL for rows
-- recorded before this migration.
ALTER TABLE opt_outs ADD COLUMN matched_cases BIGINT;
ALTER TABLE opt_outs ADD COLUMN matched_research_slides BIGINT;
