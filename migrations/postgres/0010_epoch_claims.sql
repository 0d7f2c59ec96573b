-- Fencing across a Valkey failover: the highest lease epoch each partition
-- was claimed under, and by whom. A worker that takes a lease claims its
-- epoch here before it works under it, and the claim succeeds only above
-- the highest one recorded; new leases are issued above both this and the
-- committed epoch (partition_epochs). A failed-over Valkey whose epoch
-- counter went back can then never hand two holders the same epoch. Not a
-- projection: `rebuild` leaves it alone.
CREATE TABLE epoch_claims (
    group_name TEXT NOT NULL,
    partition_id INTEGER NOT NULL,
    epoch BIGINT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (group_name, partition_id)
);
