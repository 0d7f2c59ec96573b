-- Fencing (see src/stream/lease.rs): the latest lease epoch under which a
-- batch of each partition was committed. A batch's transaction records its
-- epoch here and aborts if a newer one is already recorded, so a worker
-- that lost its partition (paused past its lease) can never commit for it
-- once the new owner has. Not a projection: `rebuild` leaves it alone.
CREATE TABLE partition_epochs (
    group_name TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (group_name, partition_id)
);
