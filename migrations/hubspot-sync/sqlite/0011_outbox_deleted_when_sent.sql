-- The relay now deletes what it published instead of marking it, and event ids are UUIDv7s
-- made once: the index of unpublished rows and the event id's uniqueness only cost writes.
-- SQLite cannot drop a column's UNIQUE, so the table is built again.
DELETE FROM outbox WHERE published_at IS NOT NULL;
CREATE TABLE outbox_sent_deleted (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    published_at BIGINT
);
INSERT INTO outbox_sent_deleted (seq, event_id, envelope, created_at, published_at)
    SELECT seq, event_id, envelope, created_at, published_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_sent_deleted RENAME TO outbox;
