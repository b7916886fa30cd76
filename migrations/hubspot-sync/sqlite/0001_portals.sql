-- hubspot-sync's own schema: portals and their credentials, what was applied, outbox.
CREATE TABLE portals (
    company_id TEXT PRIMARY KEY,
    portal_id TEXT NOT NULL,
    token TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The newest desired version of each property that has been made true in HubSpot;
-- older or repeated change requests are recognised here and skipped.
CREATE TABLE applied_property_versions (
    company_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (company_id, name)
);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    envelope BLOB NOT NULL,
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
