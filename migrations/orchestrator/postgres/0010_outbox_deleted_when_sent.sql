-- The relay now deletes what it published instead of marking it, and event ids are UUIDv7s
-- made once: the index of unpublished rows and the event id's uniqueness only cost writes.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_unpublished;
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_event_id_key;
