-- The integration feed (GET /api/feed, webhooks) pages the archive by seq
-- and promises never to skip an event. A BIGSERIAL is taken when a row is
-- inserted, not when it commits: two batches committing in the other order
-- let a reader see the later seq first and page past the earlier one. From
-- now on a batch numbers its archive rows itself, max(seq) + 1 onwards,
-- under a transaction-scoped advisory lock it holds until it commits, so
-- seq is in commit order and dense (a rolled-back batch takes no numbers).
-- The numbers already given stay as they are.
ALTER TABLE event_archive ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE IF EXISTS event_archive_seq_seq;
DROP INDEX IF EXISTS event_archive_by_seq;
CREATE UNIQUE INDEX event_archive_by_seq ON event_archive (seq);
