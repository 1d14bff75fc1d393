-- Versioned control state of each env (deploy stacks, releases' routing, kill switches, flags).
-- version is global across envs and only grows, so a version alone names one state of one env,
-- and every version is kept so any past routing decision can be replayed.
CREATE TABLE env_states (
    version       INTEGER NOT NULL PRIMARY KEY CHECK (version >= 1),
    env           TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    created_by    TEXT    NOT NULL
);

CREATE INDEX env_states_by_env ON env_states (env, version);

CREATE TRIGGER env_states_no_update BEFORE UPDATE ON env_states
BEGIN
    SELECT RAISE(ABORT, 'env states are append-only');
END;

CREATE TRIGGER env_states_no_delete BEFORE DELETE ON env_states
BEGIN
    SELECT RAISE(ABORT, 'env states are append-only');
END;
