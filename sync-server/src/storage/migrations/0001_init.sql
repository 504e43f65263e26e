-- tejido-server SQLite schema, migration 1: the first schema.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE projects (
    id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Codes are kept only as their SHA-256.
CREATE TABLE enrollment_codes (
    code_hash  BLOB    PRIMARY KEY,
    project    BLOB    NOT NULL REFERENCES projects (id),
    role       TEXT    NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_ms INTEGER,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Tokens are kept only as their SHA-256.
CREATE TABLE devices (
    id            BLOB    PRIMARY KEY CHECK (length(id) = 16),
    project       BLOB    NOT NULL REFERENCES projects (id),
    role          TEXT    NOT NULL,
    replica       BLOB    NOT NULL,
    name          TEXT,
    token_hash    BLOB    NOT NULL UNIQUE,
    code_hash     BLOB,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER,
    far_future_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX devices_project ON devices (project);
CREATE UNIQUE INDEX devices_active_replica ON devices (replica) WHERE revoked_ms IS NULL;

-- Every document: its project, collection, the device that created it, the submission a
-- comment is about, and for forms the roles that receive it (',enumerator,youth,').
CREATE TABLE documents (
    doc           BLOB PRIMARY KEY CHECK (length(doc) = 16),
    project       BLOB NOT NULL REFERENCES projects (id),
    collection    TEXT NOT NULL,
    author_device BLOB,
    parent        BLOB,
    audience      TEXT
) WITHOUT ROWID;
CREATE INDEX documents_project ON documents (project, doc);
CREATE INDEX documents_author ON documents (author_device) WHERE author_device IS NOT NULL;
CREATE INDEX documents_parent ON documents (parent) WHERE parent IS NOT NULL;

-- The append-only log: every accepted change (its new ops only), in server order.
CREATE TABLE changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    project     BLOB    NOT NULL,
    doc         BLOB    NOT NULL,
    hlc         INTEGER NOT NULL,
    replica     BLOB    NOT NULL,
    device      BLOB,
    body        TEXT    NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX changes_project_seq ON changes (project, seq);

-- Every op of every field, with the device store's leaf rules: known = 0 is a placeholder for an
-- op another op has seen before it arrived.
CREATE TABLE field_ops (
    doc     BLOB    NOT NULL,
    field   TEXT    NOT NULL,
    hlc     INTEGER NOT NULL,
    replica BLOB    NOT NULL,
    value   TEXT,
    known   INTEGER NOT NULL,
    leaf    INTEGER NOT NULL,
    PRIMARY KEY (doc, field, hlc, replica)
) WITHOUT ROWID;

-- (No index on leaves: every read of a field's state goes through the primary key's prefix, and
-- a second index would cost every push an extra b-tree write per op.)
-- Open conflicts: fields with more than one value nobody has replaced.
CREATE VIEW conflicts AS
    SELECT doc, field, count(*) AS open_values FROM field_ops
    WHERE leaf = 1 AND known = 1 GROUP BY doc, field HAVING count(*) > 1;

-- Published forms: a version is immutable.
CREATE TABLE forms (
    project      BLOB    NOT NULL,
    form_id      TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    doc          BLOB    NOT NULL,
    published_ms INTEGER NOT NULL,
    PRIMARY KEY (project, form_id, version)
) WITHOUT ROWID;

-- Blobs: complete uploads held for a project (and who uploaded them), the documents that refer
-- to them, and uploads in progress.
CREATE TABLE blob_owners (
    sha256     TEXT    NOT NULL,
    project    BLOB    NOT NULL,
    device     BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (sha256, project, device)
) WITHOUT ROWID;

CREATE TABLE blob_refs (
    sha256 TEXT NOT NULL,
    doc    BLOB NOT NULL,
    PRIMARY KEY (sha256, doc)
) WITHOUT ROWID;

CREATE TABLE uploads (
    project BLOB    NOT NULL,
    sha256  TEXT    NOT NULL,
    length     INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    PRIMARY KEY (project, sha256)
) WITHOUT ROWID;
