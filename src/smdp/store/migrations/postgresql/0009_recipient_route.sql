-- 0009 (issue 11, item 1): how each outbound recipient's mail leaves,
-- 'smdp' (an envelope to the domain's SMDP server) or 'smtp' (the whole
-- message to the domain's MX hosts, when the domain has no SMDP server).
-- Every recipient starts on the SMDP path; delivery moves those of an SMTP
-- domain to an envelope of mode 'smtp' and sets 'smtp' in the same
-- transaction (docs/smtp.md, "Routing").
ALTER TABLE out_recipients ADD COLUMN route TEXT COLLATE "C" NOT NULL DEFAULT 'smdp';

-- The envelope's mode takes 'smtp' (0001's unnamed CHECK has PostgreSQL's
-- default name).
ALTER TABLE out_envelopes DROP CONSTRAINT out_envelopes_mode_check;
ALTER TABLE out_envelopes ADD CONSTRAINT out_envelopes_mode_check
    CHECK (mode IN ('envelope', 'direct', 'smtp'));
