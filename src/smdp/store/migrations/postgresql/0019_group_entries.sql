-- 0019 (PostgreSQL dialect of ../0019_group_entries.sql): a local group's
-- members each get an entry under the group's address (docs/lists.md), so
-- one envelope recipient may be several users' entries.
ALTER TABLE mailbox DROP CONSTRAINT mailbox_envelope_id_recipient_key;
ALTER TABLE mailbox ADD CONSTRAINT mailbox_envelope_id_recipient_user_id_key
    UNIQUE (envelope_id, recipient, user_id);
