-- Money is exact and typed (the Postgres twin has NUMERIC): SQLite has no decimal type,
-- so amounts become TEXT holding the decimal exactly ("1234.50"); each company has a
-- currency; dated exchange rates convert the portfolio roll-up.
-- SQLite cannot change a column's type: the two deal tables are rebuilt.

DROP VIEW stage_transitions;

CREATE TABLE deal_history_new (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    close_date_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    -- ISO 4217 code; '' for versions stored before currencies were known.
    currency TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (company_id, deal_id, modified_ms)
);
INSERT INTO deal_history_new (company_id, deal_id, modified_ms, pipeline_id, stage_id, amount, close_date_ms,
    created_ms, deleted)
SELECT company_id, deal_id, modified_ms, pipeline_id, stage_id, CAST(amount AS TEXT), close_date_ms, created_ms,
    deleted
FROM deal_history;
DROP TABLE deal_history;
ALTER TABLE deal_history_new RENAME TO deal_history;

CREATE TABLE deals_new (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    close_date_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    name TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    currency TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (company_id, deal_id)
);
INSERT INTO deals_new (company_id, deal_id, modified_ms, pipeline_id, stage_id, amount, close_date_ms, created_ms,
    deleted, name, owner_id)
SELECT company_id, deal_id, modified_ms, pipeline_id, stage_id, CAST(amount AS TEXT), close_date_ms, created_ms,
    deleted, name, owner_id
FROM deals;
DROP TABLE deals;
ALTER TABLE deals_new RENAME TO deals;
CREATE INDEX deals_by_pipeline ON deals (company_id, pipeline_id, stage_id);

CREATE VIEW stage_transitions AS
SELECT company_id, deal_id, pipeline_id, from_stage, stage_id AS to_stage, modified_ms AS at_ms, amount, currency
FROM (
    SELECT h.*, LAG(stage_id) OVER (PARTITION BY company_id, deal_id ORDER BY modified_ms) AS from_stage
    FROM deal_history h
) t
WHERE from_stage IS NULL OR from_stage <> stage_id;

-- rate is TEXT holding the decimal exactly; see the Postgres twin.
CREATE TABLE fx_rates (
    from_currency TEXT NOT NULL,
    to_currency TEXT NOT NULL,
    rate_date TEXT NOT NULL,
    rate TEXT NOT NULL,
    PRIMARY KEY (from_currency, to_currency, rate_date)
);
