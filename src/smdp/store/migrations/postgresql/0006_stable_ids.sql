-- 0006 (PostgreSQL dialect of ../0006_stable_ids.sql): a mailbox entry's id
-- is the one id a user names it by, so an id must never be handed out twice.
-- Here the ids come from the BIGSERIAL sequences, which never give a value
-- twice (nextval is not rolled back, and a sequence does not wrap unless told
-- to CYCLE): nothing to rebuild. This migration states it explicitly, so a
-- later change of the sequences cannot undo it unnoticed; the store's tests
-- prove it on both backends (tests/unit/test_store.py).

ALTER SEQUENCE in_envelopes_id_seq NO CYCLE;
ALTER SEQUENCE mailbox_id_seq NO CYCLE;
