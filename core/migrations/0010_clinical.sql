-- What a referring hospital shows the hub pathologists reading its cases, so that they can
-- check the patient's identity: the slide label image (which may carry the patient's name and
-- id) and the patient's local id in the case panel. Both on unless the referring hospital
-- turns them off (`pathfed admin hospital share-with-hub`); read and written through
-- `core/src/hospital_settings.rs`.
ALTER TABLE hospitals ADD COLUMN share_label_with_hub BIGINT NOT NULL DEFAULT 1;
ALTER TABLE hospitals ADD COLUMN share_patient_id_with_hub BIGINT NOT NULL DEFAULT 1;
