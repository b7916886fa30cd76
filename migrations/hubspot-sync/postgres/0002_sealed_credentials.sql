-- Credentials are sealed (AES-256-GCM, see credentials.rs); key_id says which key sealed
-- them, so rows can be re-sealed after a rotation. expires_at lets the OAuth refresher
-- find what to refresh without opening every credential.
ALTER TABLE portals RENAME COLUMN token TO credential;
ALTER TABLE portals ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE portals ADD COLUMN expires_at BIGINT;
CREATE INDEX portals_by_portal_id ON portals (portal_id);
