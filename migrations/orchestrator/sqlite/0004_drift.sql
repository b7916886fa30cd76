-- The revision last applied to each company without failures: drift is measured against it.
CREATE TABLE applied_revisions (
    company_id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    applied_at BIGINT NOT NULL
);

-- Every drift found: what changed by hand, and what the company's policy did about it.
CREATE TABLE drift_records (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    detected_at BIGINT NOT NULL,
    -- The plan that would undo it, as JSON.
    actions TEXT NOT NULL,
    -- enforce, alert or adopt
    policy TEXT NOT NULL,
    -- What was done: a rollout id, a revision number, or nothing (alert).
    resolution TEXT NOT NULL DEFAULT ''
);
CREATE INDEX drift_records_by_company ON drift_records (company_id, detected_at);
