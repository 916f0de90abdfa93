-- 0001 (PostgreSQL dialect of ../0001_initial.sql): the whole SMDP data model.
-- Same tables, columns, keys and constraints as the SQLite migration, so the
-- same SQL reads either store. Only the types differ:
--   INTEGER PRIMARY KEY -> BIGSERIAL PRIMARY KEY (SQLite integers are 64-bit)
--   INTEGER             -> BIGINT (flags stay INTEGER 0/1, as in SQLite)
--   REAL                -> DOUBLE PRECISION (SQLite REAL is an 8-byte float)
--   BLOB                -> BYTEA
-- Text columns use the "C" collation: SQLite compares text byte by byte
-- (BINARY), and "C" gives the same equality and ORDER BY whatever locale the
-- database was created with.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    main_address  TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT COLLATE "C" NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL
);

-- Assumption 1: a main identity and any number of secondary identities.
CREATE TABLE identities (
    address  TEXT COLLATE "C" PRIMARY KEY,
    user_id  BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    is_main  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX identities_user ON identities(user_id);

-- Origin: a submitted message, held until every recipient has decided.
CREATE TABLE out_messages (
    id            BIGSERIAL PRIMARY KEY,
    msgid         TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender        TEXT COLLATE "C" NOT NULL,
    size          BIGINT NOT NULL,
    subject       TEXT COLLATE "C" NOT NULL,
    summary       TEXT COLLATE "C" NOT NULL,   -- the envelope block (contract 2.3)
    body          BYTEA,                       -- NULL once every recipient decided
    created_at    DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION NOT NULL
);

-- Origin: one envelope (or direct send) per destination domain.
CREATE TABLE out_envelopes (
    envid       TEXT COLLATE "C" PRIMARY KEY,
    message_id  BIGINT NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    domain      TEXT COLLATE "C" NOT NULL,
    mode        TEXT COLLATE "C" NOT NULL CHECK (mode IN ('envelope', 'direct'))
);
CREATE INDEX out_envelopes_message ON out_envelopes(message_id);

-- Origin: the status of one recipient of one message, shown to the sender.
CREATE TABLE out_recipients (
    id          BIGSERIAL PRIMARY KEY,
    message_id  BIGINT NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    envid       TEXT COLLATE "C" REFERENCES out_envelopes(envid),
    recipient   TEXT COLLATE "C" NOT NULL,
    domain      TEXT COLLATE "C" NOT NULL,
    state       TEXT COLLATE "C" NOT NULL,
    detail      TEXT COLLATE "C" NOT NULL DEFAULT '',
    updated_at  DOUBLE PRECISION NOT NULL,
    UNIQUE (message_id, recipient)
);
CREATE INDEX out_recipients_envid ON out_recipients(envid);

-- Destination: an envelope (or a directly sent message) received from a peer.
CREATE TABLE in_envelopes (
    id             BIGSERIAL PRIMARY KEY,
    envid          TEXT COLLATE "C" NOT NULL UNIQUE,
    origin_server  TEXT COLLATE "C" NOT NULL,
    sender         TEXT COLLATE "C" NOT NULL,
    size           BIGINT NOT NULL,
    block          TEXT COLLATE "C" NOT NULL,  -- the envelope fields (contract 2.3)
    subject        TEXT COLLATE "C" NOT NULL,
    received_at    DOUBLE PRECISION NOT NULL,
    body           BYTEA                       -- assumption 5: one copy per destination
);

-- Destination: one mailbox entry per local recipient of an envelope.
CREATE TABLE mailbox (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    envelope_id BIGINT NOT NULL REFERENCES in_envelopes(id) ON DELETE CASCADE,
    recipient   TEXT COLLATE "C" NOT NULL,
    state       TEXT COLLATE "C" NOT NULL,
    decision    TEXT COLLATE "C",
    reason      TEXT COLLATE "C" NOT NULL DEFAULT '',
    decided_at  DOUBLE PRECISION,
    deleted     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (envelope_id, recipient)
);
CREATE INDEX mailbox_user_state ON mailbox(user_id, state);

-- Section 5.3: Quality(X) = Votes(X) / Messages(X) per peer server X.
CREATE TABLE peer_quality (
    server    TEXT COLLATE "C" PRIMARY KEY,
    messages  BIGINT NOT NULL DEFAULT 0,
    votes     BIGINT NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL
);

-- At most one vote per mailbox entry: a reject after an accept replaces it.
CREATE TABLE votes (
    mailbox_id BIGINT PRIMARY KEY REFERENCES mailbox(id) ON DELETE CASCADE,
    server     TEXT COLLATE "C" NOT NULL,
    vote       INTEGER NOT NULL CHECK (vote IN (-1, 1))
);

-- Inbound lists: (address, SMDP server) pairs per user (Table 1, Table 3).
CREATE TABLE inbound_lists (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('white', 'black')),
    address    TEXT COLLATE "C" NOT NULL,
    server     TEXT COLLATE "C" NOT NULL,
    how        TEXT COLLATE "C" NOT NULL,
    added_at   DOUBLE PRECISION NOT NULL,
    last_used  DOUBLE PRECISION,
    uses       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, address, server)
);

-- Outbound lists: addresses only, per user (Table 2, origin side).
CREATE TABLE outbound_lists (
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('white', 'black')),
    address    TEXT COLLATE "C" NOT NULL,
    how        TEXT COLLATE "C" NOT NULL,
    added_at   DOUBLE PRECISION NOT NULL,
    last_used  DOUBLE PRECISION,
    uses       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, address)
);

-- Table 2, SPAM at the origin: "investigate with sender".
CREATE TABLE spam_reports (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender     TEXT COLLATE "C" NOT NULL,
    recipient  TEXT COLLATE "C" NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    envid      TEXT COLLATE "C" NOT NULL,
    reported_at DOUBLE PRECISION NOT NULL,
    UNIQUE (envid, recipient)
);

-- Work that crosses the network, written in the same transaction as its cause.
CREATE TABLE queue (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,   -- serialises jobs on one envelope
    payload      TEXT COLLATE "C" NOT NULL,
    next_attempt DOUBLE PRECISION NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX queue_due ON queue(next_attempt);
