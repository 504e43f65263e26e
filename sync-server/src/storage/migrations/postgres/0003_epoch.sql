-- Migration 3: the server's epoch (as SQLite's migration 5).
INSERT INTO meta (key, value) VALUES ('epoch', md5(random()::TEXT || clock_timestamp()::TEXT))
    ON CONFLICT (key) DO NOTHING;
