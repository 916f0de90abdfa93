-- 0019 (issue 16 item 3): mail from other servers to a local group
-- (docs/lists.md). Each local member gets an entry of its own, under the
-- group's address: the address the origin sent to, which its decisions
-- name and the member's Delivered-To shows. One envelope recipient may so
-- be several users' entries: the key takes the user in. SQLite cannot
-- change a table's key in place: the table is rebuilt (as in 0006), with
-- the indexes and 0017's triggers that went with it.
CREATE TABLE mailbox_0019 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    envelope_id INTEGER NOT NULL REFERENCES in_envelopes(id) ON DELETE CASCADE,
    recipient   TEXT NOT NULL,
    state       TEXT NOT NULL,
    decision    TEXT,
    reason      TEXT NOT NULL DEFAULT '',
    decided_at  REAL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    octets      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (envelope_id, recipient, user_id)
);
INSERT INTO mailbox_0019 (id, user_id, envelope_id, recipient, state, decision, reason,
                          decided_at, deleted, octets)
SELECT id, user_id, envelope_id, recipient, state, decision, reason, decided_at, deleted,
       octets
FROM mailbox;
-- An id is never handed out twice (0006): the new table goes on from the
-- highest id the old one ever gave, not from the highest still there.
DELETE FROM sqlite_sequence WHERE name = 'mailbox_0019';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'mailbox_0019', seq FROM sqlite_sequence WHERE name = 'mailbox';
-- Keys are off while migrations run (SqliteStore.migrate): the drop takes
-- no row of another table with it, and fires no trigger.
DROP TABLE mailbox;
ALTER TABLE mailbox_0019 RENAME TO mailbox;
CREATE INDEX mailbox_user_state ON mailbox(user_id, state);
CREATE INDEX mailbox_user_id ON mailbox(user_id, id);
CREATE TRIGGER mailbox_counts_insert AFTER INSERT ON mailbox BEGIN
    INSERT INTO mailbox_counts (user_id, pending, messages, octets, serial)
    VALUES (NEW.user_id, NEW.state = 'pending' AND NEW.deleted = 0,
            NEW.state = 'accepted' AND NEW.deleted = 0,
            CASE WHEN NEW.state = 'accepted' AND NEW.deleted = 0 THEN NEW.octets ELSE 0 END,
            NEW.state = 'accepted' AND NEW.deleted = 0)
    ON CONFLICT (user_id) DO UPDATE SET pending = pending + excluded.pending,
        messages = messages + excluded.messages, octets = octets + excluded.octets,
        serial = serial + excluded.serial;
END;
CREATE TRIGGER mailbox_counts_update AFTER UPDATE OF state, deleted, octets ON mailbox
WHEN OLD.state <> NEW.state OR OLD.deleted <> NEW.deleted OR OLD.octets <> NEW.octets BEGIN
    UPDATE mailbox_counts SET
        pending = pending - (OLD.state = 'pending' AND OLD.deleted = 0)
                          + (NEW.state = 'pending' AND NEW.deleted = 0),
        messages = messages - (OLD.state = 'accepted' AND OLD.deleted = 0)
                            + (NEW.state = 'accepted' AND NEW.deleted = 0),
        octets = octets
            - CASE WHEN OLD.state = 'accepted' AND OLD.deleted = 0 THEN OLD.octets ELSE 0 END
            + CASE WHEN NEW.state = 'accepted' AND NEW.deleted = 0 THEN NEW.octets ELSE 0 END,
        serial = serial + ((OLD.state = 'accepted' AND OLD.deleted = 0)
                           OR (NEW.state = 'accepted' AND NEW.deleted = 0))
    WHERE user_id = NEW.user_id;
END;
CREATE TRIGGER mailbox_counts_delete AFTER DELETE ON mailbox BEGIN
    UPDATE mailbox_counts SET
        pending = pending - (OLD.state = 'pending' AND OLD.deleted = 0),
        messages = messages - (OLD.state = 'accepted' AND OLD.deleted = 0),
        octets = octets
            - CASE WHEN OLD.state = 'accepted' AND OLD.deleted = 0 THEN OLD.octets ELSE 0 END,
        serial = serial + (OLD.state = 'accepted' AND OLD.deleted = 0)
    WHERE user_id = OLD.user_id;
END;
