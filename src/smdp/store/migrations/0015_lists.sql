-- 0015 (issue 16 item 3): unsubscribing from lists, and local lists and
-- aliases at the origin (docs/lists.md).
--
-- One unsubscribe request per mailbox entry (UNSUB, protocol.md 12.5): how
-- it is carried out (an RFC 8058 one-click POST or a mail to the list's
-- mailto: address), where to, and what came of it.
CREATE TABLE unsubscribes (
    id           INTEGER PRIMARY KEY,
    entry_id     INTEGER NOT NULL UNIQUE REFERENCES mailbox(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    method       TEXT NOT NULL,           -- 'one-click' or 'mailto'
    target       TEXT NOT NULL,           -- the https: URL or the mail address
    state        TEXT NOT NULL,           -- 'pending', 'done' or 'failed'
    detail       TEXT NOT NULL DEFAULT '',
    requested_at REAL NOT NULL,
    updated_at   REAL NOT NULL
);

-- An address of one of our domains that expands, at submission, to its
-- members: an alias (anyone of this server may write to it) or a list
-- (only its members and its owner may; posts carry List-Id and
-- List-Unsubscribe). A member may be another group: expansion follows it,
-- once, to a depth limit.
CREATE TABLE groups (
    id         INTEGER PRIMARY KEY,
    address    TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,             -- 'alias' or 'list'
    owner_id   INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at REAL NOT NULL
);
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    address  TEXT NOT NULL,
    added_at REAL NOT NULL,
    PRIMARY KEY (group_id, address)
);
-- Each message a group expanded: the owner's view of who got it.
CREATE TABLE group_posts (
    message_id INTEGER NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    group_id   INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, group_id)
);
CREATE INDEX group_posts_group ON group_posts(group_id, message_id);
