-- Pairing for current mydia (iroh era): a claim code that resolves to the server's iroh node
-- address (`POST /pairing/claim`, `GET`/`DELETE /pairing/claim/{code}`), live 300 s. The
-- address names the server's IPs: rows go at `DELETE` or with the clean-up once expired.
CREATE TABLE node_claims (
    code       TEXT PRIMARY KEY,
    node_addr  TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX node_claims_expires ON node_claims(expires_at);
