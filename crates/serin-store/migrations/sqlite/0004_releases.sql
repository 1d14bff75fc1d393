-- Releases of an agent in an env, and the webhook outbox their transitions fill.

-- One row per release; state is opaque JSON owned by the server and rewritten as the release
-- progresses. active is 0 or 1.
CREATE TABLE releases (
    id            TEXT    NOT NULL PRIMARY KEY,
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- At most one active release per agent and env, even under races.
CREATE UNIQUE INDEX releases_one_active ON releases (env, agent) WHERE active = 1;

CREATE INDEX releases_by_agent ON releases (env, agent, created_at_ms);

-- Outbox of webhook deliveries, queued in the transaction of the release change that causes
-- them and delivered (with retries) afterwards.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    release_id      TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER,
    last_error      TEXT
);

CREATE INDEX notifications_due ON notifications (delivered_at_ms, next_attempt_ms);

CREATE INDEX notifications_by_release ON notifications (release_id, id);
