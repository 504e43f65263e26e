-- Migration 4: the coordinators' accounts, sessions, login throttling and the read model of
-- submissions (as SQLite's migration 6).

CREATE TABLE users (
    id            UUID   PRIMARY KEY,
    email         TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_ms    BIGINT NOT NULL
);

CREATE TABLE memberships (
    user_id UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project UUID NOT NULL REFERENCES projects (id),
    role    TEXT NOT NULL,
    PRIMARY KEY (user_id, project)
);

CREATE TABLE sessions (
    token_hash BYTEA  PRIMARY KEY,
    user_id    UUID   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf       TEXT   NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE login_failures (
    key      TEXT   PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_ms  BIGINT NOT NULL
);

CREATE TABLE submission_state (
    doc           UUID    PRIMARY KEY,
    project       UUID    NOT NULL,
    form_id       TEXT    NOT NULL,
    form_version  TEXT    NOT NULL,
    author_device UUID,
    review_state  TEXT    NOT NULL,
    finalized     BOOLEAN NOT NULL,
    deleted       BOOLEAN NOT NULL,
    conflicts     BIGINT  NOT NULL,
    flags         BIGINT  NOT NULL,
    duration_s    BIGINT,
    received_ms   BIGINT  NOT NULL,
    updated_ms    BIGINT  NOT NULL,
    answers       JSONB   NOT NULL
);
CREATE INDEX submission_state_received ON submission_state (project, received_ms DESC, doc DESC);
CREATE INDEX submission_state_form ON submission_state (project, form_id, review_state, received_ms DESC, doc DESC);
CREATE INDEX submission_state_review ON submission_state (project, review_state, received_ms DESC, doc DESC);

-- A document's changes, for when it first arrived and the order of a submission's comments.
CREATE INDEX changes_doc ON changes (doc, seq);

CREATE TABLE project_settings (
    project UUID NOT NULL REFERENCES projects (id),
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (project, key)
);
