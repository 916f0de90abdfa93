-- 0002 (PostgreSQL dialect of ../0002_queue_claims.sql): queue entries are
-- claimed by one node at a time, for a lease, so that several nodes sharing
-- one database never run the same job twice at once, and a node that dies
-- mid-job leaves work another node takes over.
ALTER TABLE queue ADD COLUMN claimed_by TEXT COLLATE "C";
ALTER TABLE queue ADD COLUMN claimed_until DOUBLE PRECISION;
CREATE INDEX queue_key ON queue(key, id);
