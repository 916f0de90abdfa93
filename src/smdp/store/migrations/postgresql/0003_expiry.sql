-- 0003 (PostgreSQL dialect of ../0003_expiry.sql): expiry of held mail (the
-- envelope says when it expires; the origin deletes what nobody decided in
-- time, the destination shows it).
ALTER TABLE in_envelopes ADD COLUMN expires_at DOUBLE PRECISION;
CREATE INDEX in_envelopes_expiry ON in_envelopes(expires_at);
CREATE INDEX out_messages_expiry ON out_messages(expires_at);
