-- 0005 (PostgreSQL dialect of ../0005_body_chunks.sql): message bodies move
-- out of their rows into chunk tables, so a body is written and read a chunk
-- (smdp.mail.body.CHUNK_SIZE, 256 KiB) at a time and the server never holds a
-- whole message in memory. A body is the chunks of its id in seq order
-- (0, 1, ...); a reader accepts chunks of any size. An empty body is
-- has_body = 1 with no chunk; no body at all is has_body = 0.

CREATE TABLE out_body_chunks (
    message_id  BIGINT NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (message_id, seq)
);

CREATE TABLE in_body_chunks (
    envelope_id BIGINT NOT NULL REFERENCES in_envelopes(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (envelope_id, seq)
);

ALTER TABLE out_messages ADD COLUMN has_body INTEGER NOT NULL DEFAULT 0;
ALTER TABLE in_envelopes ADD COLUMN has_body INTEGER NOT NULL DEFAULT 0;

-- Existing bodies, cut into 262144-octet (CHUNK_SIZE) pieces.
INSERT INTO out_body_chunks (message_id, seq, data)
SELECT m.id, s.seq, substring(m.body FROM s.seq * 262144 + 1 FOR 262144)
FROM out_messages m
CROSS JOIN LATERAL generate_series(0, (length(m.body) - 1) / 262144) AS s(seq)
WHERE m.body IS NOT NULL AND length(m.body) > 0;

INSERT INTO in_body_chunks (envelope_id, seq, data)
SELECT e.id, s.seq, substring(e.body FROM s.seq * 262144 + 1 FOR 262144)
FROM in_envelopes e
CROSS JOIN LATERAL generate_series(0, (length(e.body) - 1) / 262144) AS s(seq)
WHERE e.body IS NOT NULL AND length(e.body) > 0;

UPDATE out_messages SET has_body = 1 WHERE body IS NOT NULL;
-- A stored body's size is the body's own (the envelope only announced one).
UPDATE in_envelopes SET has_body = 1, size = length(body) WHERE body IS NOT NULL;

ALTER TABLE out_messages DROP COLUMN body;
ALTER TABLE in_envelopes DROP COLUMN body;
