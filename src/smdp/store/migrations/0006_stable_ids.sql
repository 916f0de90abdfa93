-- 0006: a mailbox entry's id is the one id a user names it by (ENV, the
-- options, the client's read and delete), so an id must never be handed out
-- twice. A plain INTEGER PRIMARY KEY gives the next row max(id) + 1, which is
-- the id of the newest row once housekeeping has purged it: a stale id would
-- then act on newer mail. AUTOINCREMENT keeps the highest id ever used in
-- sqlite_sequence and never goes below it. The envelopes the entries point
-- at get the same, so a stale reference can never find another message's
-- body either.
--
-- SQLite cannot add AUTOINCREMENT to a table: each table is rebuilt (the
-- procedure of https://www.sqlite.org/lang_altertable.html section 7). The
-- store runs migrations with foreign keys off, so dropping the old table
-- cascades nothing (votes, chunks and entries keep their rows), and checks
-- every key before the migration commits. Ids freed before this migration
-- above the highest id still in use were never recorded anywhere; they may
-- be handed out once more, never after.

CREATE TABLE in_envelopes_0006 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    envid          TEXT NOT NULL UNIQUE,
    origin_server  TEXT NOT NULL,
    sender         TEXT NOT NULL,
    size           INTEGER NOT NULL,
    block          TEXT NOT NULL,
    subject        TEXT NOT NULL,
    received_at    REAL NOT NULL,
    expires_at     REAL,
    has_body       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO in_envelopes_0006 (id, envid, origin_server, sender, size, block, subject,
                               received_at, expires_at, has_body)
SELECT id, envid, origin_server, sender, size, block, subject, received_at, expires_at, has_body
FROM in_envelopes;
DROP TABLE in_envelopes;
ALTER TABLE in_envelopes_0006 RENAME TO in_envelopes;
CREATE INDEX in_envelopes_expiry ON in_envelopes(expires_at);

CREATE TABLE mailbox_0006 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    envelope_id INTEGER NOT NULL REFERENCES in_envelopes(id) ON DELETE CASCADE,
    recipient   TEXT NOT NULL,
    state       TEXT NOT NULL,
    decision    TEXT,
    reason      TEXT NOT NULL DEFAULT '',
    decided_at  REAL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (envelope_id, recipient)
);
INSERT INTO mailbox_0006 (id, user_id, envelope_id, recipient, state, decision, reason,
                          decided_at, deleted)
SELECT id, user_id, envelope_id, recipient, state, decision, reason, decided_at, deleted
FROM mailbox;
DROP TABLE mailbox;
ALTER TABLE mailbox_0006 RENAME TO mailbox;
CREATE INDEX mailbox_user_state ON mailbox(user_id, state);
