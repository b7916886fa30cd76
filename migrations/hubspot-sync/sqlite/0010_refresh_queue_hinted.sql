-- 1 while every change queued for the deal was a stage or pipeline move already published
-- as `deal.stage_changed`: its re-read only confirms what funnels show, so it waits to share
-- a read with more deals. Any other change makes it 0 (read at the usual pace).
ALTER TABLE deal_refresh_queue ADD COLUMN hinted BIGINT NOT NULL DEFAULT 0;
