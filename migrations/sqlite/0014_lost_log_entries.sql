-- Events the read model applied and the log then lost: a Valkey failover
-- to a replica that had not received them yet, or a server restarted from
-- an AOF that missed its last writes. The workers audit the entries they
-- applied recently against the log at start and after every reconnect,
-- and record here each one the log no longer has (and never trimmed). One
-- row per event, however many workers find it; the newest 100,000 are
-- kept (listed, and pruned, by the time they were found).
CREATE TABLE lost_log_entries (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    event_key TEXT NOT NULL,
    partition_no BIGINT NOT NULL,
    entry_id TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    detected_at BIGINT NOT NULL
);
CREATE INDEX lost_log_entries_by_detection ON lost_log_entries (detected_at);
