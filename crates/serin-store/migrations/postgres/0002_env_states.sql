-- Versioned control state of each env (deploy stacks, releases' routing, kill switches, flags).
-- version is global across envs and only grows, so a version alone names one state of one env,
-- and every version is kept so any past routing decision can be replayed.
CREATE TABLE env_states (
    version       BIGINT NOT NULL PRIMARY KEY CHECK (version >= 1),
    env           TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL,
    created_by    TEXT   NOT NULL
);

CREATE INDEX env_states_by_env ON env_states (env, version);

CREATE TRIGGER env_states_no_update_delete BEFORE UPDATE OR DELETE ON env_states
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER env_states_no_truncate BEFORE TRUNCATE ON env_states
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();
