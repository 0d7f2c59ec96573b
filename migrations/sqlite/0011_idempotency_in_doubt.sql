-- A key whose request ended without knowing whether its event was
-- recorded (the log did not confirm the append, or the request was cut
-- off): kept, with its fingerprint, so that only the same request can
-- claim it again. Its ids derive from the key, so the retry appends the
-- same events under the same ids and the worker keeps one copy.
ALTER TABLE idempotency_keys ADD COLUMN in_doubt INTEGER NOT NULL DEFAULT 0;
