-- Webhook events already taken (HubSpot redelivers; eventId alone is not unique).
CREATE TABLE webhook_events_seen (
    portal_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (portal_id, subscription_id, event_id, occurred_at)
);
CREATE INDEX webhook_events_seen_by_age ON webhook_events_seen (seen_at);

-- Deals to re-read from HubSpot (webhooks are hints, never applied as is).
CREATE TABLE deal_refresh_queue (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    PRIMARY KEY (company_id, deal_id)
);

-- The newest version of each deal already published; only newer ones are published.
CREATE TABLE deal_versions (
    company_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (company_id, deal_id)
);

-- Per company: the backfill's progress and the incremental sync's cursor.
CREATE TABLE deal_sync_state (
    company_id TEXT PRIMARY KEY,
    backfill_state TEXT NOT NULL,
    backfill_deals BIGINT NOT NULL DEFAULT 0,
    backfill_after TEXT NOT NULL DEFAULT '',
    cursor_ms BIGINT NOT NULL DEFAULT 0,
    last_sync_at_ms BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
