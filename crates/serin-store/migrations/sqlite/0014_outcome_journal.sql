-- Shared evidence across replicas. A replica that does not lead appends the outcomes it accepted
-- here (in the transaction that records their dedup keys and merges their rollups) instead of
-- writing monitor rows from its own, possibly stale, copy; the leader applies the rows to the one
-- set of monitors in id order and stores them with the new cursor in one transaction fenced by
-- its epoch. Rows are appended under the store's write lock, so ids become visible in id order
-- and a consumer reading past its cursor never skips a row that commits late. Consumed rows are
-- pruned after an hour. SQLite (one server per data directory) never journals; the tables exist
-- there too so both schemas stay parallel.
CREATE TABLE outcome_journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    -- A JSON array of the batch's accepted, validated outcome events (serin-core OutcomeEvent).
    events      TEXT    NOT NULL
);

-- consumed: the id of the last journal row applied to the stored monitors (0: none).
-- monitors_rev: raised by every transaction that writes guardrail_monitors, and stamped on the
-- rows it writes, so a replica that does not lead reads only the monitors changed since it last
-- looked.
CREATE TABLE outcome_journal_cursor (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    consumed     INTEGER NOT NULL CHECK (consumed >= 0),
    monitors_rev INTEGER NOT NULL CHECK (monitors_rev >= 0)
);

INSERT INTO outcome_journal_cursor (id, consumed, monitors_rev) VALUES (1, 0, 0);

ALTER TABLE guardrail_monitors ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
CREATE INDEX guardrail_monitors_by_rev ON guardrail_monitors (rev);
