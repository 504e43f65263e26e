-- The device store's first schema: the replica's identity and clock, documents, every op of
-- every field, the outbox of unacknowledged local changes, and sync state.

CREATE TABLE replica (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    replica_id BLOB    NOT NULL CHECK (length(replica_id) = 16),
    clock      INTEGER NOT NULL,          -- the last HLC issued or observed (order-preserving i64)
    created_ms INTEGER NOT NULL
);

CREATE TABLE documents (
    doc        BLOB    PRIMARY KEY CHECK (length(doc) = 16),
    collection TEXT    NOT NULL,
    draft      INTEGER NOT NULL DEFAULT 0  -- 1: a local draft, whose ops never leave the device
) WITHOUT ROWID;

-- Every op of every field. A row with known = 0 is a placeholder for an op that another op has
-- seen but that has not arrived yet: when it arrives it fills the row and stays a non-leaf.
CREATE TABLE field_ops (
    doc     BLOB    NOT NULL REFERENCES documents (doc) ON DELETE CASCADE,
    field   TEXT    NOT NULL,
    hlc     INTEGER NOT NULL,
    replica BLOB    NOT NULL,
    value   TEXT,                          -- JSON; NULL in a placeholder
    known   INTEGER NOT NULL,
    leaf    INTEGER NOT NULL,
    PRIMARY KEY (doc, field, hlc, replica)
) WITHOUT ROWID;

-- Local changes not yet acknowledged by the server, in the order they were made.
CREATE TABLE outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    doc    BLOB    NOT NULL REFERENCES documents (doc) ON DELETE CASCADE,
    change TEXT    NOT NULL                -- the change as wire JSON
);

CREATE TABLE sync_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
