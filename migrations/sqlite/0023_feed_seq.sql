-- The integration feed (GET /api/feed, webhooks) pages the archive by its
-- order and promises the positions never change. The order was the
-- implicit rowid, which VACUUM may renumber in a table without an INTEGER
-- PRIMARY KEY; it becomes an explicit column, seq, that is the rowid (so
-- the order and every position are kept as they were). SQLite's single
-- writer already makes insertion order commit order, and a rolled-back
-- batch takes no numbers. The table is copied once, in this migration.
CREATE TABLE event_archive_by_seq (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    payload TEXT NOT NULL,
    partition_no INTEGER NOT NULL,
    entry_id TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    error TEXT,
    actor TEXT,
    lease_epoch BIGINT
);
INSERT INTO event_archive_by_seq (seq, event_id, event_type, event_key, version, occurred_at,
    payload, partition_no, entry_id, processed_at, error, actor, lease_epoch)
SELECT rowid, event_id, event_type, event_key, version, occurred_at,
    payload, partition_no, entry_id, processed_at, error, actor, lease_epoch
FROM event_archive ORDER BY rowid;
DROP TABLE event_archive;
ALTER TABLE event_archive_by_seq RENAME TO event_archive;
CREATE INDEX event_archive_by_key ON event_archive (event_key, occurred_at);
CREATE INDEX event_archive_by_type ON event_archive (event_type);
