-- 0014 (issue 16 item 1, docs/protocol.md 11.3): quality that ages, needs
-- several deciders, does not flap and lets a blocked peer prove itself.
-- recent_messages and recent_votes are Messages(X) and Votes(X) aged to
-- recent_at (each weighs half as much after every half-life); standing is the
-- last verdict (the hysteresis reads it); probation_* count the envelopes a
-- blocked peer sent on probation on day probation_day (Unix days);
-- quality_deciders holds, per key, each local user's latest rejection.
ALTER TABLE peer_quality ADD COLUMN recent_messages DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE peer_quality ADD COLUMN recent_votes DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE peer_quality ADD COLUMN recent_at DOUBLE PRECISION NOT NULL DEFAULT 0;
UPDATE peer_quality SET recent_messages = messages, recent_votes = votes, recent_at = updated_at;
ALTER TABLE peer_quality ADD COLUMN standing TEXT NOT NULL DEFAULT 'new';
ALTER TABLE peer_quality ADD COLUMN standing_at DOUBLE PRECISION;
ALTER TABLE peer_quality ADD COLUMN probation_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE peer_quality ADD COLUMN probation_used BIGINT NOT NULL DEFAULT 0;
CREATE TABLE quality_deciders (
    server  TEXT COLLATE "C" NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (server, user_id)
);
CREATE INDEX quality_deciders_at ON quality_deciders(server, at);
INSERT INTO quality_deciders (server, user_id, at)
    SELECT v.server, m.user_id, MAX(e.received_at) FROM votes v
    JOIN mailbox m ON m.id = v.mailbox_id JOIN in_envelopes e ON e.id = m.envelope_id
    WHERE v.vote < 0 GROUP BY v.server, m.user_id;
-- What a weight keeps after dt seconds: half per half_life (0: nothing
-- ages); the same as smdp.store.sqlite.decay. power() would raise on
-- underflow, hence the cut-off.
CREATE FUNCTION smdp_decay(dt DOUBLE PRECISION, half_life DOUBLE PRECISION)
    RETURNS DOUBLE PRECISION LANGUAGE SQL IMMUTABLE AS
    $$ SELECT CASE WHEN half_life <= 0 OR dt <= 0 THEN 1.0::DOUBLE PRECISION
                   WHEN dt / half_life > 1000 THEN 0.0::DOUBLE PRECISION
                   ELSE power(0.5::DOUBLE PRECISION, dt / half_life) END $$;
