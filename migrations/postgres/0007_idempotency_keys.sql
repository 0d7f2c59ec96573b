-- Idempotency-Key: the first answer to a POST, replayed to its retries.
-- `status` is NULL while the first request is being handled.
CREATE TABLE idempotency_keys (
    idem_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER,
    location TEXT,
    body TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
