-- Leadership of the release controller across replicas sharing one database. The leader holds
-- a session advisory lock (PostgreSQL) and, on taking it, raises the epoch here in a
-- transaction; every release write the controller makes carries its epoch and is refused when
-- it is no longer the current one, so a deposed leader's late write changes nothing. SQLite
-- has one process per data directory, which raises the epoch when it starts.
CREATE TABLE leadership (
    id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch    INTEGER NOT NULL CHECK (epoch >= 0),
    holder   TEXT,
    since_ms INTEGER
);

INSERT INTO leadership (id, epoch) VALUES (1, 0);

-- revision: raised by every write, compared by the next one (compare-and-swap), so two writers
-- that read the same state cannot both apply a transition to it. Rows written before this
-- migration start at 0.
ALTER TABLE releases ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

-- The epoch of the controller that last wrote the row (NULL: an operator's command).
ALTER TABLE releases ADD COLUMN leader_epoch INTEGER;
