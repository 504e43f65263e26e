-- Migration 3: the outbox keeps what the server acknowledged (acked = 1) instead of deleting
-- it, so that a server restored from an older backup (a new epoch) can be sent this device's
-- whole history again. Changes acknowledged before this migration were already deleted.
ALTER TABLE outbox ADD COLUMN acked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outbox_pending ON outbox (seq) WHERE acked = 0;
