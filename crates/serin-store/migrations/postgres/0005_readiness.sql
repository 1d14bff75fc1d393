-- Readiness gates: versioned policies, attested evidence, offline eval records, rollback drills.

-- Every applied policy version per agent and env; the highest version is in force.
CREATE TABLE readiness_policies (
    env           TEXT   NOT NULL,
    agent         TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    policy        TEXT   NOT NULL,
    applied_at_ms BIGINT NOT NULL,
    applied_by    TEXT   NOT NULL,
    PRIMARY KEY (env, agent, version)
);

-- Every evidence record; the newest per key counts, the rest is history.
CREATE TABLE readiness_evidence (
    id             BIGSERIAL PRIMARY KEY,
    env            TEXT   NOT NULL,
    agent          TEXT   NOT NULL,
    key            TEXT   NOT NULL,
    record         TEXT   NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    recorded_by    TEXT   NOT NULL
);

CREATE INDEX readiness_evidence_by_key ON readiness_evidence (env, agent, key, id);

-- Offline eval results, tied to the digest of the bundle they ran on.
CREATE TABLE eval_records (
    id             BIGSERIAL PRIMARY KEY,
    agent          TEXT   NOT NULL,
    bundle         BIGINT NOT NULL,
    digest         TEXT   NOT NULL,
    set_name       TEXT   NOT NULL,
    record         TEXT   NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    recorded_by    TEXT   NOT NULL
);

CREATE INDEX eval_records_by_bundle ON eval_records (agent, bundle, id);

-- Policies, evidence and evals are records of what was said and when: never rewritten.
CREATE TRIGGER readiness_policies_no_update_delete BEFORE UPDATE OR DELETE ON readiness_policies
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER readiness_policies_no_truncate BEFORE TRUNCATE ON readiness_policies
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER readiness_evidence_no_update_delete BEFORE UPDATE OR DELETE ON readiness_evidence
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER readiness_evidence_no_truncate BEFORE TRUNCATE ON readiness_evidence
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER eval_records_no_update_delete BEFORE UPDATE OR DELETE ON eval_records
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER eval_records_no_truncate BEFORE TRUNCATE ON eval_records
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();

-- Rollback drills; state is opaque JSON owned by the server. running is 0 or 1.
CREATE TABLE drills (
    id            TEXT   NOT NULL PRIMARY KEY,
    env           TEXT   NOT NULL,
    agent         TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    running       BIGINT NOT NULL CHECK (running IN (0, 1)),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- At most one running drill per agent and env, even under races.
CREATE UNIQUE INDEX drills_one_running ON drills (env, agent) WHERE running = 1;

CREATE INDEX drills_by_agent ON drills (env, agent, created_at_ms);
