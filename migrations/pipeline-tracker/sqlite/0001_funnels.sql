-- pipeline-tracker's own schema: the deal read model, every deal version seen (the
-- stage-transition log derives from it), the stage catalog, and the companies.

-- Every version of every deal, keyed by its modification time: a late or repeated event
-- inserts nothing new, so any delivery order leaves the same history.
CREATE TABLE deal_history (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    amount REAL NOT NULL,
    close_date_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    PRIMARY KEY (company_id, deal_id, modified_ms)
);

-- The newest version of each deal (the read model): newer modification time wins.
CREATE TABLE deals (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    amount REAL NOT NULL,
    close_date_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    name TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    PRIMARY KEY (company_id, deal_id)
);
CREATE INDEX deals_by_pipeline ON deals (company_id, pipeline_id, stage_id);

-- The stage-transition log: (deal, from stage, to stage, at, amount), one row per
-- change of stage, in modification-time order.
CREATE VIEW stage_transitions AS
SELECT company_id, deal_id, pipeline_id, from_stage, stage_id AS to_stage, modified_ms AS at_ms, amount
FROM (
    SELECT h.*, LAG(stage_id) OVER (PARTITION BY company_id, deal_id ORDER BY modified_ms) AS from_stage
    FROM deal_history h
) t
WHERE from_stage IS NULL OR from_stage <> stage_id;

-- Stages as the portal's pipeline configuration last said; a stage gone from it is kept
-- (removed = 1) so history keeps its label.
CREATE TABLE stages (
    company_id TEXT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    pipeline_label TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    is_closed BIGINT NOT NULL,
    display_order BIGINT NOT NULL,
    removed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, pipeline_id, stage_id)
);

-- Companies known from events; `version` moves with every ingested batch that touched
-- the company, so watchers on any replica see the change.
CREATE TABLE companies (
    company_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL DEFAULT 0
);
