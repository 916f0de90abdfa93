-- 0005: message bodies move out of their rows into chunk tables, so a body is
-- written and read a chunk (smdp.mail.body.CHUNK_SIZE, 256 KiB) at a time and
-- the server never holds a whole message in memory. A body is the chunks of
-- its id in seq order (0, 1, ...); a reader accepts chunks of any size. An
-- empty body is has_body = 1 with no chunk; no body at all is has_body = 0.
-- Dropping a body deletes its chunks (secure_delete zeroes their pages).

CREATE TABLE out_body_chunks (
    message_id  INTEGER NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (message_id, seq)
);

CREATE TABLE in_body_chunks (
    envelope_id INTEGER NOT NULL REFERENCES in_envelopes(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (envelope_id, seq)
);

ALTER TABLE out_messages ADD COLUMN has_body INTEGER NOT NULL DEFAULT 0;
ALTER TABLE in_envelopes ADD COLUMN has_body INTEGER NOT NULL DEFAULT 0;

-- Existing bodies, cut into 262144-octet (CHUNK_SIZE) pieces.
INSERT INTO out_body_chunks (message_id, seq, data)
WITH RECURSIVE piece(id, seq, len) AS (
    SELECT id, 0, length(CAST(body AS BLOB)) FROM out_messages
    WHERE body IS NOT NULL AND length(CAST(body AS BLOB)) > 0
    UNION ALL
    SELECT id, seq + 1, len FROM piece WHERE (seq + 1) * 262144 < len
)
SELECT p.id, p.seq, substr(CAST(m.body AS BLOB), p.seq * 262144 + 1, 262144)
FROM piece p JOIN out_messages m ON m.id = p.id;

INSERT INTO in_body_chunks (envelope_id, seq, data)
WITH RECURSIVE piece(id, seq, len) AS (
    SELECT id, 0, length(CAST(body AS BLOB)) FROM in_envelopes
    WHERE body IS NOT NULL AND length(CAST(body AS BLOB)) > 0
    UNION ALL
    SELECT id, seq + 1, len FROM piece WHERE (seq + 1) * 262144 < len
)
SELECT p.id, p.seq, substr(CAST(e.body AS BLOB), p.seq * 262144 + 1, 262144)
FROM piece p JOIN in_envelopes e ON e.id = p.id;

UPDATE out_messages SET has_body = 1 WHERE body IS NOT NULL;
-- A stored body's size is the body's own (the envelope only announced one).
UPDATE in_envelopes SET has_body = 1, size = length(CAST(body AS BLOB)) WHERE body IS NOT NULL;

ALTER TABLE out_messages DROP COLUMN body;
ALTER TABLE in_envelopes DROP COLUMN body;
