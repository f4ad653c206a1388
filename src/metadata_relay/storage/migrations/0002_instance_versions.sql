-- Pairing: the protocol versions an instance announced at register (sent to clients in
-- `connected` as instance_versions), and an index for the silent-instance sweep.
ALTER TABLE relay_instances ADD COLUMN protocol_versions TEXT NOT NULL DEFAULT '{}';
CREATE INDEX relay_instances_online ON relay_instances(online, last_seen_at);
CREATE INDEX relay_claims_consumed ON relay_claims(consumed_at);
