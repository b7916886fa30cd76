-- A deal queued again while its re-read is in flight bumps its generation: the re-read then
-- removes only the generation it picked, so the newer change is read again, not dropped.
ALTER TABLE deal_refresh_queue ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
