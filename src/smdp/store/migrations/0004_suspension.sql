-- 0004: outgoing abuse (issue 4). A local sender whom recipients report as
-- spam too often is suspended (Table 2, SPAM: "investigate with sender");
-- the reason is kept until an administrator lifts it.
ALTER TABLE users ADD COLUMN suspended TEXT;
CREATE INDEX spam_reports_user_time ON spam_reports(user_id, reported_at);
