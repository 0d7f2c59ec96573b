-- The lease epoch a consumed event was applied under (NULL for follow-ups,
-- which are archived by the batch that decided them, and for events
-- applied without fencing, by the operator's tools). Epochs of one
-- partition never go down in the order of the archive: the audit of the
-- fence, which the fault tests check after each run.
ALTER TABLE event_archive ADD COLUMN lease_epoch BIGINT;
