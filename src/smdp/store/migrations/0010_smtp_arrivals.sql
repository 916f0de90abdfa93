-- 0010 (issue 12, item 3): mail that arrived by SMTP at the MX is held as an
-- envelope like an SMDP one, with its bytes already here. smtp_auth is the
-- value of the Authentication-Results field the MX wrote for it (RFC 8601);
-- NULL marks an envelope that came over the peer port. verified_domain is
-- the From domain SPF/DKIM/DMARC verified (NULL: unverified, or SMDP), the
-- only thing a white-list entry may match for SMTP mail (docs/smtp.md, "The MX").
-- mail_from is the SMTP reverse-path ("" for <>), the Return-Path a reader
-- sees; sender stays the From address, as Table 3 knows the SMTP sender.
-- client_prefix is the SMTP client's network (IPv4 /24, IPv6 /48), whose
-- quality counts beside the verified domain's (issue 12 item 4).
ALTER TABLE in_envelopes ADD COLUMN smtp_auth TEXT;
ALTER TABLE in_envelopes ADD COLUMN verified_domain TEXT;
ALTER TABLE in_envelopes ADD COLUMN mail_from TEXT;
ALTER TABLE in_envelopes ADD COLUMN client_prefix TEXT;
