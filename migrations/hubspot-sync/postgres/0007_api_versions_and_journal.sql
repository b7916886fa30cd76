-- Each portal's pinned HubSpot API version. Portals registered before pins existed keep
-- what they were called with (v3); a revision declaring hubspot.apiVersion moves them.
ALTER TABLE portals ADD COLUMN api_version TEXT NOT NULL DEFAULT 'v3';
-- The portal's client credentials for the webhooks journal, sealed like `credential`
-- (same key_id); NULL when the portal is not read through a journal.
ALTER TABLE portals ADD COLUMN journal_credential TEXT;

-- Per company: where its journal reader stands and which replica holds the reading lease.
CREATE TABLE journal_state (
    company_id TEXT PRIMARY KEY,
    -- The offset of the last entry taken ('' before the first read).
    journal_offset TEXT NOT NULL DEFAULT '',
    -- When the reader last found nothing after its offset: the offset is at most this old.
    caught_up_at_ms BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    -- Expired offsets recovered with a full read.
    recoveries BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);

-- Change events taken from either feed (journal or push webhooks), keyed alike so an event
-- that arrives both ways is taken once (HubSpot's eventId alone is not unique).
CREATE TABLE change_events_seen (
    portal_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (portal_id, object_id, event_id, occurred_at)
);
CREATE INDEX change_events_seen_by_age ON change_events_seen (seen_at);
