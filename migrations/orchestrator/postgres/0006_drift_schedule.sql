-- When each company's next drift check is due. Any replica claims a due check by moving
-- its time forward in one conditional update, so each check runs once however many
-- replicas there are; activity in a portal pulls the time in (not before the cooldown).
CREATE TABLE drift_schedule (
    company_id TEXT PRIMARY KEY,
    next_check_at BIGINT NOT NULL,
    last_checked_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX drift_schedule_due ON drift_schedule (next_check_at);
