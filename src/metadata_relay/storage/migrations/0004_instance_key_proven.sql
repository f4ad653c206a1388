-- Pairing, relay protocol 1.1: set once an instance proved it holds the private key of its
-- public key; from then on every register for its id must prove it again.
ALTER TABLE relay_instances ADD COLUMN key_proven INTEGER NOT NULL DEFAULT 0;
