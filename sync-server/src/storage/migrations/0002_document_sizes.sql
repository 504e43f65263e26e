-- Migration 2: every document's size (ops and bytes of wire JSON, history included), so a push
-- that would grow one past the bound is refused.
ALTER TABLE documents ADD COLUMN ops INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE documents SET
    ops = (SELECT count(*) FROM field_ops f WHERE f.doc = documents.doc AND f.known = 1),
    bytes = (SELECT coalesce(sum(length(c.body)), 0) FROM changes c WHERE c.doc = documents.doc);
