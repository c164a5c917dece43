-- Roles scoped to their hospital. `admin` now administers its own hospital only; the new
-- `platform-admin` runs the platform: the research tier, the model registry and what is
-- deployed. The role column is free text, so the new role needs no schema change; the user
-- `pathfed admin init` created (named in the audit log's `admin.init` row) becomes the platform
-- admin, so an existing platform keeps one operator who can deploy models.
UPDATE users SET role = 'platform-admin'
WHERE role = 'admin'
  AND 'user:' || username IN (
      SELECT target FROM audit_log WHERE action = 'admin.init' AND outcome = 'ok'
  );

-- Why a model was deployed although its test metrics do not show it does better than chance
-- (required then, optional otherwise); NULL when none was given.
ALTER TABLE deployments ADD COLUMN reason TEXT;
