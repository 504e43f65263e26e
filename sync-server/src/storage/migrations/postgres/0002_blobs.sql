-- Migration 2: blob bytes in the database, so every server process shares them. Chunks of at
-- most 256 KiB, by offset; an upload in progress is one device's own rows until it is verified.
CREATE TABLE blobs (
    sha256 TEXT   PRIMARY KEY,
    size   BIGINT NOT NULL
);
CREATE TABLE blob_chunks (
    sha256 TEXT   NOT NULL,
    off    BIGINT NOT NULL,
    data   BYTEA  NOT NULL,
    PRIMARY KEY (sha256, off)
);
CREATE TABLE partial_chunks (
    project UUID   NOT NULL,
    device  UUID   NOT NULL,
    sha256  TEXT   NOT NULL,
    off     BIGINT NOT NULL,
    data    BYTEA  NOT NULL,
    PRIMARY KEY (project, device, sha256, off)
);
-- Chunks are read and written whole; compressing them (photos are compressed already) would
-- only cost CPU.
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE partial_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
