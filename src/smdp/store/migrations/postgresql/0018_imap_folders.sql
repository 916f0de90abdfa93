-- 0018 (issue 14, IMAP; docs/imap.md "Mailboxes"): where a message a user
-- moved by hand lives. INBOX, Pending, Junk and Trash show entries by their
-- state; an entry moved to Trash or to a folder of the user's own (or an
-- accepted message moved to Junk, which keeps its body there) has a row
-- here naming that mailbox, and shows there instead. ``body`` says whether
-- it shows the real message (1) or the Pending summary (0), fixed when it
-- is placed, so that its octets never change under its UID. And the
-- folders each user created (CREATE, RENAME, DELETE).
CREATE TABLE imap_placements (
    entry_id BIGINT PRIMARY KEY REFERENCES mailbox(id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    folder   TEXT COLLATE "C" NOT NULL,
    body     INTEGER NOT NULL
);
CREATE INDEX imap_placements_folder ON imap_placements (user_id, folder);
CREATE TABLE imap_folders (
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (user_id, name)
);
-- Sent shows each message the user sent with each recipient's state, as a
-- summary whose octets must not change under its UID: the states it was
-- written with are kept here, and a change of state gives it a new UID.
CREATE TABLE imap_sent (
    message_id BIGINT PRIMARY KEY REFERENCES out_messages(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    uid        BIGINT NOT NULL,
    states     TEXT NOT NULL,
    UNIQUE (user_id, uid)
);
