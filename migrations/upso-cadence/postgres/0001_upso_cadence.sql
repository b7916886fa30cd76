-- upso-cadence's own schema: Upso accounts (sealed tokens), the outreach configuration
-- last applied, the cadences GoMark manages in Upso, the customers read model (from
-- deal events), every enrollment decision, the guard against double enrollment, audit,
-- outbox and processed events.
CREATE TABLE accounts (
    company_id TEXT PRIMARY KEY,
    upso_account_id TEXT NOT NULL,
    sealed_token TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The outreach part of the effective configuration last applied (the engine's rules).
CREATE TABLE outreach_config (
    company_id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    config TEXT NOT NULL,
    applied_at BIGINT NOT NULL
);

-- Cadences GoMark created in Upso, with the definition and Upso version it last wrote:
-- a different version in Upso means somebody edited it there.
CREATE TABLE managed_cadences (
    company_id TEXT NOT NULL,
    cadence_key TEXT NOT NULL,
    upso_cadence_id TEXT NOT NULL,
    definition TEXT NOT NULL,
    upso_version BIGINT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    revision BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (company_id, cadence_key)
);

-- One row per deal that names a customer contact; newest version wins.
CREATE TABLE customer_deals (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    email TEXT NOT NULL,
    deal_name TEXT NOT NULL,
    stage TEXT NOT NULL,
    amount DOUBLE PRECISION,
    close_date_ms BIGINT NOT NULL,
    owner_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (company_id, deal_id)
);
CREATE INDEX customer_deals_by_email ON customer_deals (company_id, email);

-- Every enrollment and every skip, with its reason and the score's explanation.
CREATE TABLE decisions (
    id TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    rule_key TEXT NOT NULL,
    cadence_key TEXT NOT NULL,
    email TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    reasons TEXT NOT NULL,
    decision TEXT NOT NULL,
    skip_reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    upso_enrollment_id TEXT NOT NULL,
    mailbox_id TEXT NOT NULL,
    decided_at BIGINT NOT NULL
);
CREATE INDEX decisions_by_company ON decisions (company_id, decided_at);
CREATE INDEX decisions_by_email ON decisions (company_id, email, decided_at);

-- At most one running enrollment per (company, cadence, contact): the primary key is the
-- guard, so two engine runs racing cannot both enroll.
CREATE TABLE running_enrollments (
    company_id TEXT NOT NULL,
    cadence_key TEXT NOT NULL,
    email TEXT NOT NULL,
    upso_enrollment_id TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    PRIMARY KEY (company_id, cadence_key, email)
);

CREATE TABLE audit_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX audit_by_company ON audit_log (company_id, seq);

CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    envelope BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
