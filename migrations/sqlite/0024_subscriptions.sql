-- Webhook subscriptions. `subscriptions` is a projection: written from the
-- subscription.* events, rebuilt from the archive like any other.
-- `subscription_progress` is the deliverers' own state: the secret (never
-- in an event: events are readable with `read`), the cursor (the last seq
-- delivered or passed over), the last rewind taken up, and the counters.
-- `rebuild` leaves it alone, so a rebuild sends nothing again.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    start_after BIGINT NOT NULL,
    state TEXT NOT NULL,
    paused_reason TEXT,
    rewind_to BIGINT,
    rewind_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE subscription_progress (
    subscription_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    rewind_id TEXT,
    delivered BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at BIGINT,
    failing_since BIGINT,
    last_delivered_at BIGINT
);

-- The recent attempts, a bounded number per subscription (the deliverer
-- prunes the rest).
CREATE TABLE subscription_deliveries (
    subscription_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    status BIGINT,
    error TEXT,
    latency_ms BIGINT NOT NULL,
    attempted_at BIGINT NOT NULL
);
CREATE INDEX subscription_deliveries_recent ON subscription_deliveries (subscription_id, attempted_at);
