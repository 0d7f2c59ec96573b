-- The event archive's primary key now records which events the read model
-- has applied (the archive row is written in the same transaction as the
-- effects), so the separate inbox table is no longer written.
DROP TABLE processed_events;
