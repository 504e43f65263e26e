-- tejido-server PostgreSQL schema, migration 1: the schema of SQLite's migrations 1 to 4.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE projects (
    id         UUID   PRIMARY KEY,
    name       TEXT   NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);

-- Codes are kept only as their SHA-256.
CREATE TABLE enrollment_codes (
    code_hash  BYTEA  PRIMARY KEY,
    project    UUID   NOT NULL REFERENCES projects (id),
    role       TEXT   NOT NULL,
    uses_left  BIGINT NOT NULL,
    expires_ms BIGINT,
    created_ms BIGINT NOT NULL
);

-- Tokens are kept only as their SHA-256.
CREATE TABLE devices (
    id            UUID   PRIMARY KEY,
    project       UUID   NOT NULL REFERENCES projects (id),
    role          TEXT   NOT NULL,
    replica       UUID   NOT NULL,
    name          TEXT,
    token_hash    BYTEA  NOT NULL UNIQUE,
    code_hash     BYTEA,
    created_ms    BIGINT NOT NULL,
    revoked_ms    BIGINT,
    far_future_ms BIGINT
);
CREATE INDEX devices_project ON devices (project);
CREATE UNIQUE INDEX devices_active_replica ON devices (replica) WHERE revoked_ms IS NULL;

-- Every document: its project, collection, the device that created it, the submission a
-- comment is about, for forms the roles that receive it (',enumerator,youth,'), and its size.
CREATE TABLE documents (
    doc           UUID   PRIMARY KEY,
    project       UUID   NOT NULL REFERENCES projects (id),
    collection    TEXT   NOT NULL,
    author_device UUID,
    parent        UUID,
    audience      TEXT,
    ops           BIGINT NOT NULL DEFAULT 0,
    bytes         BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX documents_project ON documents (project, doc);
CREATE INDEX documents_author ON documents (author_device) WHERE author_device IS NOT NULL;
CREATE INDEX documents_parent ON documents (parent) WHERE parent IS NOT NULL;

-- The append-only log, in commit order: positions are handed out under a lock held until the
-- transaction commits, so no reader ever sees a later position before an earlier one.
CREATE TABLE changes (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project     UUID   NOT NULL,
    doc         UUID   NOT NULL,
    hlc         BIGINT NOT NULL,
    replica     UUID   NOT NULL,
    device      UUID,
    body        TEXT   NOT NULL,
    received_ms BIGINT NOT NULL
);
CREATE INDEX changes_project_seq ON changes (project, seq);

-- Every op of every field: known = false is a placeholder for an op another op has seen
-- before it arrived. Stamps are stored with the sign bit flipped, so they order as unsigned.
CREATE TABLE field_ops (
    doc     UUID    NOT NULL,
    field   TEXT    NOT NULL,
    hlc     BIGINT  NOT NULL,
    replica UUID    NOT NULL,
    value   TEXT,
    known   BOOLEAN NOT NULL,
    leaf    BOOLEAN NOT NULL,
    PRIMARY KEY (doc, field, hlc, replica)
);

-- Published forms: a version is immutable.
CREATE TABLE forms (
    project      UUID   NOT NULL,
    form_id      TEXT   NOT NULL,
    version      TEXT   NOT NULL,
    content_hash TEXT   NOT NULL,
    doc          UUID   NOT NULL,
    published_ms BIGINT NOT NULL,
    PRIMARY KEY (project, form_id, version)
);

CREATE TABLE blob_owners (
    sha256     TEXT   NOT NULL,
    project    UUID   NOT NULL,
    device     UUID   NOT NULL,
    size       BIGINT NOT NULL,
    media_type TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (sha256, project, device)
);

CREATE TABLE blob_refs (
    sha256 TEXT NOT NULL,
    doc    UUID NOT NULL,
    PRIMARY KEY (sha256, doc)
);

CREATE TABLE uploads (
    project    UUID   NOT NULL,
    device     UUID   NOT NULL,
    sha256     TEXT   NOT NULL,
    length     BIGINT NOT NULL,
    media_type TEXT   NOT NULL,
    started_ms BIGINT NOT NULL,
    PRIMARY KEY (project, device, sha256)
);
CREATE INDEX uploads_started ON uploads (started_ms);
CREATE INDEX uploads_device ON uploads (device);

CREATE TABLE upload_leases (
    project  UUID   NOT NULL,
    device   UUID   NOT NULL,
    sha256   TEXT   NOT NULL,
    holder   UUID   NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (project, device, sha256)
);
