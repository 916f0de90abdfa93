-- 0012 (issue 16 item 2): every automatic verdict says why, with its
-- evidence. An inbound list entry made by a decision remembers which
-- mailbox entry and which option made it, so that the envelopes it then
-- decides read "on your black list since 2026-11-02 (your REJECT&SPAMMER on
-- envelope 14)". NULL for entries the user made by hand and for older rows.
ALTER TABLE inbound_lists ADD COLUMN source_entry BIGINT;
ALTER TABLE inbound_lists ADD COLUMN source_decision TEXT;
