-- API tokens expire: new ones at creation + `auth.token_days` (or what `--expires-days` asks);
-- tokens made before this column existed keep working until revoked (NULL).
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
