-- Migration 4: one writer at a time per upload, across every server process. A request holds
-- the lease while it appends; a process that dies leaves a lease that expires on its own.
CREATE TABLE upload_leases (
    project  BLOB    NOT NULL,
    device   BLOB    NOT NULL,
    sha256   TEXT    NOT NULL,
    holder   BLOB    NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (project, device, sha256)
) WITHOUT ROWID;
