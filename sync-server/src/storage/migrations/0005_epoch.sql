-- Migration 5: the server's epoch, a random id devices see on every push and pull. A server
-- restored from a backup takes a new one (`tejido-server restored`), and devices then send their
-- whole history again.
INSERT INTO meta (key, value) SELECT 'epoch', lower(hex(randomblob(16)))
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'epoch');
