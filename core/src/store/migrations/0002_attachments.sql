-- Attachments (photos, audio, signatures): content-addressed files beside the database.
CREATE TABLE attachments (
    sha256     TEXT    PRIMARY KEY CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    uploaded   INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
