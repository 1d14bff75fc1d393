-- Guardrail evidence. Unlike bundles and env states these rows are rewritten as outcomes arrive:
-- each holds the latest merged aggregate, written in the transaction that acknowledges the batch.

-- Sequential-test state of one canary bundle against its control (opaque JSON of serin-core's Monitor).
CREATE TABLE guardrail_monitors (
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    candidate     TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (env, agent, candidate)
);

-- Per-minute aggregates by bundle and arm, for reports and burn rates.
CREATE TABLE outcome_rollups (
    env       TEXT    NOT NULL,
    agent     TEXT    NOT NULL,
    bundle    TEXT    NOT NULL,
    arm       TEXT    NOT NULL,
    minute_ms BIGINT  NOT NULL,
    data      TEXT    NOT NULL,
    PRIMARY KEY (env, agent, bundle, arm, minute_ms)
);

CREATE INDEX outcome_rollups_by_time ON outcome_rollups (env, agent, minute_ms);

-- Guardrail thresholds per agent and env (opaque JSON of serin-core's GuardrailConfig).
CREATE TABLE guardrail_configs (
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    config        TEXT    NOT NULL,
    updated_at_ms BIGINT  NOT NULL,
    updated_by    TEXT    NOT NULL,
    PRIMARY KEY (env, agent)
);
