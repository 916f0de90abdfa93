-- 0001: the whole SMDP data model. One statement per line group; ';' ends each.
-- Origin side (assumption 4: the origin holds each message) and destination
-- side (mailboxes of envelopes) live in one database: every server is both.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    main_address  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    REAL NOT NULL
);

-- Assumption 1: a main identity and any number of secondary identities.
CREATE TABLE identities (
    address  TEXT PRIMARY KEY,
    user_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    is_main  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX identities_user ON identities(user_id);

-- Origin: a submitted message, held until every recipient has decided.
CREATE TABLE out_messages (
    id            INTEGER PRIMARY KEY,
    msgid         TEXT NOT NULL UNIQUE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    subject       TEXT NOT NULL,
    summary       TEXT NOT NULL,          -- the envelope block (contract 2.3)
    body          BLOB,                   -- NULL once every recipient decided
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL
);

-- Origin: one envelope (or direct send) per destination domain.
CREATE TABLE out_envelopes (
    envid       TEXT PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    domain      TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('envelope', 'direct'))
);
CREATE INDEX out_envelopes_message ON out_envelopes(message_id);

-- Origin: the status of one recipient of one message, shown to the sender.
CREATE TABLE out_recipients (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    envid       TEXT REFERENCES out_envelopes(envid),
    recipient   TEXT NOT NULL,
    domain      TEXT NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    updated_at  REAL NOT NULL,
    UNIQUE (message_id, recipient)
);
CREATE INDEX out_recipients_envid ON out_recipients(envid);

-- Destination: an envelope (or a directly sent message) received from a peer.
CREATE TABLE in_envelopes (
    id             INTEGER PRIMARY KEY,
    envid          TEXT NOT NULL UNIQUE,
    origin_server  TEXT NOT NULL,
    sender         TEXT NOT NULL,
    size           INTEGER NOT NULL,
    block          TEXT NOT NULL,         -- the envelope fields (contract 2.3)
    subject        TEXT NOT NULL,
    received_at    REAL NOT NULL,
    body           BLOB                   -- assumption 5: one copy per destination
);

-- Destination: one mailbox entry per local recipient of an envelope.
CREATE TABLE mailbox (
    id          INTEGER PRIMARY KEY,
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
CREATE INDEX mailbox_user_state ON mailbox(user_id, state);

-- Section 5.3: Quality(X) = Votes(X) / Messages(X) per peer server X.
CREATE TABLE peer_quality (
    server    TEXT PRIMARY KEY,
    messages  INTEGER NOT NULL DEFAULT 0,
    votes     INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);

-- At most one vote per mailbox entry: a reject after an accept replaces it.
CREATE TABLE votes (
    mailbox_id INTEGER PRIMARY KEY REFERENCES mailbox(id) ON DELETE CASCADE,
    server     TEXT NOT NULL,
    vote       INTEGER NOT NULL CHECK (vote IN (-1, 1))
);

-- Inbound lists: (address, SMDP server) pairs per user (Table 1, Table 3).
CREATE TABLE inbound_lists (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('white', 'black')),
    address    TEXT NOT NULL,
    server     TEXT NOT NULL,
    how        TEXT NOT NULL,
    added_at   REAL NOT NULL,
    last_used  REAL,
    uses       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, address, server)
);

-- Outbound lists: addresses only, per user (Table 2, origin side).
CREATE TABLE outbound_lists (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('white', 'black')),
    address    TEXT NOT NULL,
    how        TEXT NOT NULL,
    added_at   REAL NOT NULL,
    last_used  REAL,
    uses       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, address)
);

-- Table 2, SPAM at the origin: "investigate with sender".
CREATE TABLE spam_reports (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    envid      TEXT NOT NULL,
    reported_at REAL NOT NULL,
    UNIQUE (envid, recipient)
);

-- Work that crosses the network, written in the same transaction as its cause.
CREATE TABLE queue (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,           -- serialises jobs on one envelope
    payload      TEXT NOT NULL,
    next_attempt REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL
);
CREATE INDEX queue_due ON queue(next_attempt);
