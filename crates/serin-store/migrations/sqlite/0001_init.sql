-- Serin store schema, SQLite flavour. Keep in step with ../postgres/0001_init.sql:
-- same tables, same column names, same semantics. Integers are 64-bit; times are unix ms.

-- Immutable, content-addressed bundle versions. (agent, number) is the identity users see
-- (`support@5`); (agent, digest) makes a re-push of identical content return the same number.
CREATE TABLE bundles (
    agent         TEXT    NOT NULL,
    number        INTEGER NOT NULL CHECK (number >= 1),
    digest        TEXT    NOT NULL,
    content       TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL CHECK (size_bytes >= 0),
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    PRIMARY KEY (agent, number),
    UNIQUE (agent, digest)
);

CREATE TRIGGER bundles_no_update BEFORE UPDATE ON bundles
BEGIN
    SELECT RAISE(ABORT, 'bundles are immutable');
END;

CREATE TRIGGER bundles_no_delete BEFORE DELETE ON bundles
BEGIN
    SELECT RAISE(ABORT, 'bundles are immutable');
END;

-- API tokens. Only sha256(secret) is kept; the secret itself is shown once at creation.
CREATE TABLE tokens (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT    NOT NULL,
    revoked_at_ms INTEGER
);

-- Hash-chained, append-only audit log. id is assigned by the store (previous id + 1) under the
-- single writer, so it is dense and part of the hashed content.
CREATE TABLE audit (
    id        INTEGER NOT NULL PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    details   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL UNIQUE,
    hash      TEXT    NOT NULL UNIQUE
);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit entries are append-only');
END;

-- One-shot facts about this store (e.g. 'tokens_initialized'), decided by INSERT .. ON CONFLICT.
CREATE TABLE store_meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
