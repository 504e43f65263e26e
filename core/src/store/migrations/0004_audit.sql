-- Migration 4: ODK's audit log. The timeline of a draft's form sessions (opened, answered,
-- rows added and removed, checks failed, finalized), kept on the device only. Finalizing writes
-- it into the draft's `audit` attachment (audit.csv) and deletes it here.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc       BLOB    NOT NULL REFERENCES documents (doc) ON DELETE CASCADE,
    event     TEXT    NOT NULL,
    node      TEXT    NOT NULL DEFAULT '',
    start_ms  INTEGER NOT NULL,
    end_ms    INTEGER,
    old_value TEXT,
    new_value TEXT,
    user      TEXT
);
CREATE INDEX audit_events_doc ON audit_events (doc, seq);
