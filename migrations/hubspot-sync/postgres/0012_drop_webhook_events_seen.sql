-- Replaced by change_events_seen (0007), which both feeds share; nothing has read or written
-- it since.
DROP TABLE IF EXISTS webhook_events_seen;
