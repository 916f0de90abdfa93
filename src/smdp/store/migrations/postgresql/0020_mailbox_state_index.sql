-- 0020 (issue 14 item 6): IMAP's SELECT and every IDLE poll count a
-- mailbox's entries by state and sum their ids (store/sql.py
-- imap_view_signature): with the deleted flag and the id in the index the
-- count can be an index-only scan.
DROP INDEX mailbox_user_state;
CREATE INDEX mailbox_user_state ON mailbox(user_id, state, deleted, id);
