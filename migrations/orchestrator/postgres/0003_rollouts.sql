-- Applying a revision to many companies: a durable job with one step per company.
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    -- running, paused, halted, cancelled, completed
    state TEXT NOT NULL,
    concurrency BIGINT NOT NULL,
    failure_threshold_pct BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);

CREATE TABLE rollout_steps (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    company_id TEXT NOT NULL,
    company_key TEXT NOT NULL,
    wave BIGINT NOT NULL,
    -- pending, running, done, failed, cancelled
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    applied BIGINT NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, company_id)
);
CREATE INDEX rollout_steps_by_state ON rollout_steps (rollout_id, state, wave);
