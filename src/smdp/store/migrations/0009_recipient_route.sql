-- 0009 (issue 11, item 1): how each outbound recipient's mail leaves,
-- 'smdp' (an envelope to the domain's SMDP server) or 'smtp' (the whole
-- message to the domain's MX hosts, when the domain has no SMDP server).
-- Every recipient starts on the SMDP path; delivery moves those of an SMTP
-- domain to an envelope of mode 'smtp' and sets 'smtp' in the same
-- transaction (docs/smtp.md, "Routing").
ALTER TABLE out_recipients ADD COLUMN route TEXT NOT NULL DEFAULT 'smdp';

-- The envelope's mode takes 'smtp'. SQLite cannot change a CHECK: the table
-- is rebuilt as in 0006 (foreign keys are off during migrations, so the drop
-- cascades nothing; out_recipients' references are checked before commit).
CREATE TABLE out_envelopes_0009 (
    envid       TEXT PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES out_messages(id) ON DELETE CASCADE,
    domain      TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('envelope', 'direct', 'smtp'))
);
INSERT INTO out_envelopes_0009 (envid, message_id, domain, mode)
SELECT envid, message_id, domain, mode FROM out_envelopes;
DROP TABLE out_envelopes;
ALTER TABLE out_envelopes_0009 RENAME TO out_envelopes;
CREATE INDEX out_envelopes_message ON out_envelopes(message_id);
