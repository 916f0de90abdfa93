-- 0008 (issue 11, item 1): how each outbound recipient's mail leaves,
-- 'smdp' (an envelope to the domain's SMDP server) or 'smtp' (the whole
-- message to the domain's MX hosts, when the domain has no SMDP server).
-- Every recipient starts on the SMDP path; delivery moves those of an SMTP
-- domain to an SMTP envelope and sets 'smtp' in the same transaction.
ALTER TABLE out_recipients ADD COLUMN route TEXT NOT NULL DEFAULT 'smdp';
