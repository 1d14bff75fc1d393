-- The side-effect ledger: one row per tool call with side effects, keyed by the idempotency key
-- the client derived from (agent, bundle, request id, tool, arguments digest). Status goes
-- intent -> committed | failed | unknown; the leader's sweep marks intents past deadline_ms
-- (created_at_ms + timeout_ms) unknown. Times are Unix ms. Every write is audited.
CREATE TABLE effects (
    key            TEXT PRIMARY KEY,
    agent          TEXT NOT NULL,
    bundle         BIGINT NOT NULL,
    request_id     TEXT NOT NULL,
    tool           TEXT NOT NULL,
    args_digest    TEXT NOT NULL,
    timeout_ms     BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('intent', 'committed', 'failed', 'unknown')),
    detail         TEXT,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    resolved_at_ms BIGINT,
    deadline_ms    BIGINT NOT NULL
);

CREATE INDEX effects_agent_bundle ON effects (agent, bundle, created_at_ms);
-- The sweep reads only open intents, oldest deadline first.
CREATE INDEX effects_open ON effects (deadline_ms) WHERE status = 'intent';
