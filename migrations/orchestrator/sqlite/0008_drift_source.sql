-- Who made a drift, where HubSpot said (`changeSource`/`sourceId`), classified as
-- user, integration, ai_agent, automation, gomark or unknown; '' when not reported.
ALTER TABLE drift_records ADD COLUMN source_kind TEXT NOT NULL DEFAULT '';
ALTER TABLE drift_records ADD COLUMN change_source TEXT NOT NULL DEFAULT '';
ALTER TABLE drift_records ADD COLUMN source_id TEXT NOT NULL DEFAULT '';
