-- Serin store schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_init.sql:
-- same tables, same column names, same semantics. Integers are BIGINT; times are unix ms.
-- Objects are created unqualified, i.e. in the first schema of the connection's search_path.

-- Immutable, content-addressed bundle versions. (agent, number) is the identity users see
-- (`support@5`); (agent, digest) makes a re-push of identical content return the same number.
CREATE TABLE bundles (
    agent         TEXT   NOT NULL,
    number        BIGINT NOT NULL CHECK (number >= 1),
    digest        TEXT   NOT NULL,
    content       TEXT   NOT NULL,
    size_bytes    BIGINT NOT NULL CHECK (size_bytes >= 0),
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    PRIMARY KEY (agent, number),
    UNIQUE (agent, digest)
);

CREATE FUNCTION serin_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are immutable', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER bundles_no_update_delete BEFORE UPDATE OR DELETE ON bundles
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER bundles_no_truncate BEFORE TRUNCATE ON bundles
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();

-- API tokens. Only sha256(secret) is kept; the secret itself is shown once at creation.
CREATE TABLE tokens (
    id            TEXT   NOT NULL PRIMARY KEY,
    name          TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    secret_sha256 TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT   NOT NULL,
    revoked_at_ms BIGINT
);

-- Hash-chained, append-only audit log. id is assigned by the store (previous id + 1) while the
-- transaction holds the store's advisory lock, so it is dense and part of the hashed content.
CREATE TABLE audit (
    id        BIGINT NOT NULL PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    subject   TEXT   NOT NULL,
    details   TEXT   NOT NULL,
    prev_hash TEXT   NOT NULL UNIQUE,
    hash      TEXT   NOT NULL UNIQUE
);

CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();

-- One-shot facts about this store (e.g. 'tokens_initialized'), decided by INSERT .. ON CONFLICT.
CREATE TABLE store_meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
