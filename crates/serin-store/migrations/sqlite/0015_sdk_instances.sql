-- Shared fleet state: the SDK instances each replica's in-memory registry knows, published so a
-- replica can describe (and a rollback drill wait for) SDKs connected to the other replicas.
-- Each replica writes only the rows of instances it serves, coalesced by a background flusher,
-- and refreshes last_seen_ms of its connected rows every few seconds; readers treat a connected
-- row not refreshed for 30 s as gone (its replica died), and rows not seen for the registry's
-- retention (10 minutes) are deleted. Operational state, not audited. connected is a 0/1
-- integer; versions are snapshot versions (non-negative); times are Unix ms. SQLite (one server
-- per data directory) keeps the registry in memory only; the table exists there too so both
-- schemas stay parallel.
CREATE TABLE sdk_instances (
    env             TEXT NOT NULL,
    instance        TEXT NOT NULL,
    replica_id      TEXT NOT NULL,
    token_id        TEXT NOT NULL,
    sdk             TEXT,
    connected       INTEGER NOT NULL CHECK (connected IN (0, 1)),
    applied_version INTEGER CHECK (applied_version >= 0),
    applied_at_ms   INTEGER,
    last_seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (env, instance)
);

CREATE INDEX sdk_instances_last_seen ON sdk_instances (last_seen_ms);
CREATE INDEX sdk_instances_token ON sdk_instances (token_id);
