-- 0008 (issue 11, item 3): transport security of outbound SMTP.
-- mta_sts_policies: each SMTP domain's MTA-STS policy (RFC 8461) as last
-- fetched, kept until fetched_at + max_age (expires_at) so that a policy
-- keeps applying while its host or DNS cannot be reached (RFC 8461 5.1, 10.2);
-- policy_id is the TXT record's id it was fetched under: a new id refetches.
-- The body is kept as served and parsed again when read.
CREATE TABLE mta_sts_policies (
    domain      TEXT PRIMARY KEY,
    policy_id   TEXT NOT NULL,
    policy      TEXT NOT NULL,
    fetched_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
-- How each SMTP delivery was protected (core/mta_sts.py Verdict.record:
-- "verified (mta-sts enforce)", "not-offered (opportunistic)", ...); empty
-- until the SMTP sender records it, and for SMDP recipients.
ALTER TABLE out_recipients ADD COLUMN tls TEXT NOT NULL DEFAULT '';
