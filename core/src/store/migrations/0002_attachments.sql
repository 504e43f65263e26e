-- Attachments (photos, audio, signatures): content-addressed files beside the database.
CREATE TABLE attachments (
    sha256     TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    uploaded   INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Open values per field, for listing conflicts without scanning every op.
CREATE INDEX field_ops_leaves ON field_ops (doc, field) WHERE leaf = 1;
