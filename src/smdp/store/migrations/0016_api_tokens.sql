-- 0016 (issue 13 items 4 and 7, the web API): tokens for clients that are
-- not browsers (Authorization: Bearer). Only a hash of each token is kept
-- (SHA-256 of 256 random bits: nothing to guess, so no slow hash is needed),
-- with the name its owner gave it and when it was last used; a password
-- change deletes them all. And two indexes for the web app's pages, newest
-- first (bench/web.py, docs/benchmarks.md): a user's mailbox entries in id
-- order, for a page of several states (all, accepted, rejected), which
-- otherwise sorts the whole mailbox to show 50; a user's sent messages, for
-- the Sent view and its live event.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    last_used  REAL
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);
CREATE INDEX mailbox_user_id ON mailbox(user_id, id);
CREATE INDEX out_messages_user ON out_messages(user_id, id);
