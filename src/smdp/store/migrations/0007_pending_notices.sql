-- 0007 (issue 10, item 7): when each user last got a notice of the envelopes
-- waiting for their decision, and the newest mailbox entry it listed, so a
-- notice goes at most once per [notices] pending_interval and only when
-- something new waits. Delivery status notifications need no table: each is
-- stored in the transaction that records the failures it reports.
CREATE TABLE pending_notices (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    sent_at     REAL NOT NULL,
    last_entry  INTEGER NOT NULL
);
