-- Migration 6: the coordinators' accounts, their sessions and login throttling, and the read
-- model of submissions (one row per submission: its current state, kept up to date as changes
-- are applied, indexed for the list's filters).

CREATE TABLE users (
    id            BLOB    PRIMARY KEY CHECK (length(id) = 16),
    email         TEXT    NOT NULL UNIQUE,
    -- An argon2id hash in PHC form; the password itself is never kept.
    password_hash TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE memberships (
    user_id BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project BLOB NOT NULL REFERENCES projects (id),
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, project)
) WITHOUT ROWID;

-- Session tokens are kept only as their SHA-256.
CREATE TABLE sessions (
    token_hash BLOB    PRIMARY KEY,
    user_id    BLOB    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (user_id);

-- Failed logins in a row, per account ('email:…') and per address ('addr:…').
CREATE TABLE login_failures (
    key      TEXT    PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- The read model: answers is a JSON object of every answer's winning value (by field path).
CREATE TABLE submission_state (
    doc           BLOB    PRIMARY KEY CHECK (length(doc) = 16),
    project       BLOB    NOT NULL,
    form_id       TEXT    NOT NULL,
    form_version  TEXT    NOT NULL,
    author_device BLOB,
    review_state  TEXT    NOT NULL,
    finalized     INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    conflicts     INTEGER NOT NULL,
    flags         INTEGER NOT NULL,
    duration_s    INTEGER,
    received_ms   INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    answers       TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX submission_state_received ON submission_state (project, received_ms DESC, doc DESC);
CREATE INDEX submission_state_form ON submission_state (project, form_id, review_state, received_ms DESC, doc DESC);
CREATE INDEX submission_state_review ON submission_state (project, review_state, received_ms DESC, doc DESC);

-- A document's changes, for when it first arrived and the order of a submission's comments.
CREATE INDEX changes_doc ON changes (doc, seq);

-- A project's settings, by key: 'review_gate' ('approved_only' holds exports and the read API
-- to approved submissions), 'indicators/<form id>' (the form's indicator definitions, JSON).
CREATE TABLE project_settings (
    project BLOB NOT NULL REFERENCES projects (id),
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (project, key)
) WITHOUT ROWID;
