-- 0017 (PostgreSQL dialect of ../0017_mailbox_counts.sql): each entry's size
-- as RETR sends it, and per user the counts STAT and the login read, kept by
-- a trigger in the same transaction as every change that alters them.
-- smdp_delivery_octets is smdp.mail.trace.delivery_fields's length: the
-- SQLite store gives its connection the Python function, PostgreSQL has this
-- one (tests/unit/test_store.py compares the two).
CREATE FUNCTION smdp_delivery_octets(sender TEXT, recipient TEXT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT 33
        + CASE WHEN sender = '' THEN 0 ELSE length(COALESCE(NULLIF(
              regexp_replace(sender, '[^!-~]|[();]', '', 'g'), ''), 'unknown')) END
        + length(COALESCE(NULLIF(
              regexp_replace(recipient, '[^!-~]|[();]', '', 'g'), ''), 'unknown'))
$$;
ALTER TABLE mailbox ADD COLUMN octets BIGINT NOT NULL DEFAULT 0;
UPDATE mailbox m SET octets = e.size
    + smdp_delivery_octets(COALESCE(e.mail_from, e.sender), m.recipient)
FROM in_envelopes e WHERE e.id = m.envelope_id;
CREATE TABLE mailbox_counts (
    user_id  BIGINT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    pending  BIGINT NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    octets   BIGINT NOT NULL DEFAULT 0,
    serial   BIGINT NOT NULL DEFAULT 0
);
INSERT INTO mailbox_counts (user_id, pending, messages, octets)
SELECT user_id, COUNT(*) FILTER (WHERE state = 'pending'),
       COUNT(*) FILTER (WHERE state = 'accepted'),
       COALESCE(SUM(octets) FILTER (WHERE state = 'accepted'), 0)
FROM mailbox WHERE deleted = 0 GROUP BY user_id;
-- Paging ENVS and ENVS ALL by entry id reads mailbox_user_id (migration 0016).
CREATE INDEX mailbox_user_state_id ON mailbox(user_id, state, id);
CREATE FUNCTION smdp_mailbox_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_pending  BIGINT := 0;
    d_messages BIGINT := 0;
    d_octets   BIGINT := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.deleted = 0 AND OLD.state = 'pending' THEN d_pending := -1; END IF;
        IF OLD.deleted = 0 AND OLD.state = 'accepted' THEN
            d_messages := -1; d_octets := -OLD.octets;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.deleted = 0 AND NEW.state = 'pending' THEN d_pending := d_pending + 1; END IF;
        IF NEW.deleted = 0 AND NEW.state = 'accepted' THEN
            d_messages := d_messages + 1; d_octets := d_octets + NEW.octets;
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO mailbox_counts AS c (user_id, pending, messages, octets, serial)
        VALUES (NEW.user_id, d_pending, d_messages, d_octets, d_messages)
        ON CONFLICT (user_id) DO UPDATE SET pending = c.pending + excluded.pending,
            messages = c.messages + excluded.messages, octets = c.octets + excluded.octets,
            serial = c.serial + excluded.serial;
    ELSIF d_pending <> 0 OR d_messages <> 0 OR d_octets <> 0 THEN
        UPDATE mailbox_counts SET pending = pending + d_pending,
            messages = messages + d_messages, octets = octets + d_octets,
            serial = serial + CASE WHEN d_messages <> 0 OR d_octets <> 0 THEN 1 ELSE 0 END
        WHERE user_id = OLD.user_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER mailbox_counts AFTER INSERT OR UPDATE OF state, deleted, octets OR DELETE
ON mailbox FOR EACH ROW EXECUTE FUNCTION smdp_mailbox_counts();
