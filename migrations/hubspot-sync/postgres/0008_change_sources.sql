-- Who last changed each thing in a portal, as HubSpot's events say (`changeSource`,
-- `sourceId`): per property name, and portal-wide under target ''. Drift records show it.
CREATE TABLE change_sources (
    company_id TEXT NOT NULL,
    target TEXT NOT NULL,
    change_source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (company_id, target)
);
