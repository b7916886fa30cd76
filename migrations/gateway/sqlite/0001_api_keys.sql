-- The gateway's own schema: API keys (hashed) and idempotency records.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- sha256 of the whole key, hex; the key itself is shown once and never stored.
    key_hash TEXT NOT NULL UNIQUE,
    -- The first characters of the key, so people can tell their keys apart.
    key_prefix TEXT NOT NULL,
    role TEXT NOT NULL,
    -- Empty for a portfolio-wide grant.
    company_id TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE idempotency_keys (
    actor TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    -- 0 while the first request is still running.
    status BIGINT NOT NULL,
    response_body TEXT NOT NULL DEFAULT '',
    response_headers TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (actor, idem_key)
);
