-- Request ids of acknowledged outcomes, so a batch retried after a restart (or to another
-- replica) counts as duplicates. Written in the transaction that acknowledges the batch;
-- rows older than the dedup window are pruned by the next write, so the table holds at most
-- one window of ids.
CREATE TABLE outcome_dedup (
    env        TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    PRIMARY KEY (env, request_id)
);

CREATE INDEX outcome_dedup_by_time ON outcome_dedup (seen_at_ms);
