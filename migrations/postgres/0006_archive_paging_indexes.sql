-- The audit trail (GET /api/events) pages the archive in seq order. With the
-- BRIN index of 0005, a page of the unfiltered archive meant a scan and a
-- sort of everything after the cursor; a B-tree answers it with a range
-- scan of one page's rows, whatever the archive's size. seq only grows, so
-- the index is appended at its right edge (measured: no change in drain
-- throughput within noise).
DROP INDEX IF EXISTS event_archive_by_seq;
CREATE INDEX event_archive_by_seq ON event_archive (seq);
-- The type filter pages in seq order too.
DROP INDEX IF EXISTS event_archive_by_type;
CREATE INDEX event_archive_by_type ON event_archive (event_type, seq);
