-- The replica registry: every server process upserts its row every couple of seconds (a random
-- id per process start), so an operator can see which replicas are up, which one leads, and
-- whether each has published the store's newest env versions (`serin status`,
-- `GET /v1/system/replicas`). Operational state, not audited. A row whose replica stopped
-- heartbeating is reported gone by readers and deleted after an hour; a replica shutting down
-- cleanly sets gone_ms. Booleans are 0/1 integers; behind is a JSON array of env names and
-- published a JSON object of env name to the version this replica publishes.
CREATE TABLE replicas (
    id                 TEXT NOT NULL PRIMARY KEY,
    host               TEXT NOT NULL,
    pid                INTEGER NOT NULL,
    version            TEXT NOT NULL,
    started_ms         INTEGER NOT NULL,
    last_seen_ms       INTEGER NOT NULL,
    is_leader          INTEGER NOT NULL CHECK (is_leader IN (0, 1)),
    epoch              INTEGER NOT NULL,
    listener_connected INTEGER CHECK (listener_connected IN (0, 1)),
    caught_up          INTEGER NOT NULL CHECK (caught_up IN (0, 1)),
    behind             TEXT NOT NULL,
    published          TEXT NOT NULL,
    sdk_streams        INTEGER NOT NULL,
    gone_ms            INTEGER
);

CREATE INDEX replicas_last_seen ON replicas (last_seen_ms);
