-- Desired-state documents: every accepted change is a new, immutable, numbered revision.
CREATE TABLE revisions (
    number BIGINT PRIMARY KEY,
    author TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- sha256 of the canonical JSON: equal documents have equal hashes.
    content_hash TEXT NOT NULL,
    -- The canonical JSON of the whole document.
    document TEXT NOT NULL,
    -- Set when this revision restores an earlier one.
    rolled_back_to BIGINT
);
