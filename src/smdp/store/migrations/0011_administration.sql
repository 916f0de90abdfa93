-- 0011 (issue 13 item 3, the administrator's pages): who administers this
-- server; a peer blocked or allowed by hand, whatever its quality says
-- (override 'blocked' or 'allowed', NULL: the formula decides); and samples
-- of each peer's counters over time, for the quality chart.
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE peer_quality ADD COLUMN override TEXT;
ALTER TABLE peer_quality ADD COLUMN override_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE peer_quality ADD COLUMN override_at REAL;
CREATE TABLE quality_samples (
    server   TEXT NOT NULL,
    at       REAL NOT NULL,
    messages INTEGER NOT NULL,
    votes    INTEGER NOT NULL,
    PRIMARY KEY (server, at)
);
