-- 0017 (issue 15, item 6; docs/protocol.md 12.4): a login must not read the
-- whole mailbox. Each entry keeps its size as RETR sends it (the stored
-- message and the delivery fields of section 8.4, which depend on the sender
-- and the recipient only), and each user a row of counts that triggers keep in
-- the same transaction as every change of an entry's state, deleted flag or
-- existence: STAT and the login's line read that row. smdp_delivery_octets is
-- a function the store gives its connection (smdp.mail.trace.delivery_fields).
ALTER TABLE mailbox ADD COLUMN octets INTEGER NOT NULL DEFAULT 0;
UPDATE mailbox SET octets = (
    SELECT e.size + smdp_delivery_octets(COALESCE(e.mail_from, e.sender), mailbox.recipient)
    FROM in_envelopes e WHERE e.id = mailbox.envelope_id);
CREATE TABLE mailbox_counts (
    user_id  INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    pending  INTEGER NOT NULL DEFAULT 0,  -- entries pending, not deleted
    messages INTEGER NOT NULL DEFAULT 0,  -- entries accepted, not deleted: the maildrop
    octets   INTEGER NOT NULL DEFAULT 0,  -- the maildrop's size as RETR sends it
    serial   INTEGER NOT NULL DEFAULT 0   -- bumped whenever the maildrop changes
);
INSERT INTO mailbox_counts (user_id, pending, messages, octets)
SELECT user_id, SUM(state = 'pending'), SUM(state = 'accepted'),
       SUM(CASE WHEN state = 'accepted' THEN octets ELSE 0 END)
FROM mailbox WHERE deleted = 0 GROUP BY user_id;
-- Paging ENVS ALL by entry id reads mailbox_user_id (migration 0016); ENVS
-- without ALL pages on mailbox_user_state, whose entries SQLite keeps in
-- rowid order.
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
