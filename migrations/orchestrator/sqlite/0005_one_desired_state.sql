-- One desired state: deal properties live only in revisions, and reach portals only
-- through plans and rollouts.
DROP TABLE deal_properties;

-- Saved plans: what applying a revision (or a proposed document) would do, per company;
-- applying one performs exactly its actions.
CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    -- The revision planned; 0 for a proposed document.
    revision BIGINT NOT NULL,
    -- The latest revision when the plan was made.
    base_revision BIGINT NOT NULL,
    -- A proposed document (canonical JSON); it becomes a revision when the plan is applied.
    document TEXT,
    message TEXT NOT NULL DEFAULT '',
    rolled_back_to BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The plan as answered: gomark.orchestrator.v1.PlanResponse, protobuf-encoded.
    body BLOB NOT NULL,
    -- Set once applied: a plan applies once.
    rollout_id TEXT
);

ALTER TABLE rollouts ADD COLUMN plan_id TEXT NOT NULL DEFAULT '';
-- The action ids the saved plan approved for this company (JSON array); NULL when the
-- step plans as it runs.
ALTER TABLE rollout_steps ADD COLUMN approved TEXT;
-- The actions performed over every attempt: gomark.orchestrator.v1.RolloutStep, protobuf.
ALTER TABLE rollout_steps ADD COLUMN performed BLOB;
-- The replica running the step, and until when its lease holds.
ALTER TABLE rollout_steps ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE rollout_steps ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;

-- The drift's actions as gomark.orchestrator.v1.DriftRecord (protobuf); `actions` keeps
-- their ids for comparing one check with the next.
ALTER TABLE drift_records ADD COLUMN actions_pb BLOB;
