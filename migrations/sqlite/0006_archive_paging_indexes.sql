-- The audit trail (GET /api/events) pages the archive in rowid order. The
-- unfiltered archive is the rowid B-tree itself; the type filter gets an
-- index whose entries end in the rowid, so a page is a range scan of its
-- own rows, whatever the archive's size.
DROP INDEX IF EXISTS event_archive_by_type;
CREATE INDEX event_archive_by_type ON event_archive (event_type);
