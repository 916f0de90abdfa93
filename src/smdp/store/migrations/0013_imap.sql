-- 0013 (issue 14, IMAP; docs/imap.md "UIDs, UIDVALIDITY and flags"): each
-- IMAP mailbox of a user keeps the next UID it will hand out, so that a UID,
-- once given, is never given again even after its message is purged, and a
-- counter of flag changes, so that a session polls for news cheaply; and
-- each mailbox entry a client has seen has its UID there and its flags (a
-- bit set: 1 \Seen, 2 \Deleted, 4 \Flagged, 8 \Answered, 16 \Draft), per
-- mailbox: an envelope shown in Pending and, once accepted, in INBOX has a
-- UID in each.
CREATE TABLE imap_mailboxes (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    uidnext INTEGER NOT NULL,
    modseq  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE imap_messages (
    entry_id INTEGER NOT NULL REFERENCES mailbox(id) ON DELETE CASCADE,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mailbox  TEXT NOT NULL,
    uid      INTEGER NOT NULL,
    flags    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entry_id, mailbox),
    UNIQUE (user_id, mailbox, uid)
);
