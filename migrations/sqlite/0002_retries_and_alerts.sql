-- Failed attempts per event, kept across restarts, so a poison event is
-- dead-lettered after N attempts however often its worker restarts.
CREATE TABLE event_attempts (
    group_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (group_name, event_id)
);

-- The dashboard's alert feed (alert.raised events).
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    raised_at INTEGER NOT NULL
);
CREATE INDEX alerts_by_time ON alerts (raised_at);
