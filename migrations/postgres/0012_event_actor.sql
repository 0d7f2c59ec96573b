-- Who sent the command an event records: the name of the gateway token it
-- came with (NULL without tokens, and on the workers' decisions).
ALTER TABLE event_archive ADD COLUMN actor TEXT;
