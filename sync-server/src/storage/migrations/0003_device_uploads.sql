-- Migration 3: an upload in progress belongs to one device, and expires. Uploads in progress
-- under the old layout (one per project) are forgotten: their devices start them again.
DROP TABLE uploads;
CREATE TABLE uploads (
    project    BLOB    NOT NULL,
    device     BLOB    NOT NULL,
    sha256     TEXT    NOT NULL,
    length     INTEGER NOT NULL,
    media_type TEXT    NOT NULL,
    started_ms INTEGER NOT NULL,
    PRIMARY KEY (project, device, sha256)
) WITHOUT ROWID;
CREATE INDEX uploads_started ON uploads (started_ms);

-- A reference lets a device read a blob only when the blob's uploader (or a coordinator) wrote
-- it: forget references that a device made to a blob it never uploaded.
DELETE FROM blob_refs WHERE NOT EXISTS (
    SELECT 1 FROM documents d JOIN blob_owners o
        ON o.sha256 = blob_refs.sha256 AND o.project = d.project AND o.device = d.author_device
    WHERE d.doc = blob_refs.doc);
