-- Readiness gates: versioned policies, attested evidence, offline eval records, rollback drills.

-- Every applied policy version per agent and env; the highest version is in force.
CREATE TABLE readiness_policies (
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    policy        TEXT    NOT NULL,
    applied_at_ms INTEGER NOT NULL,
    applied_by    TEXT    NOT NULL,
    PRIMARY KEY (env, agent, version)
);

-- Every evidence record; the newest per key counts, the rest is history.
CREATE TABLE readiness_evidence (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    env            TEXT    NOT NULL,
    agent          TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    record         TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    recorded_by    TEXT    NOT NULL
);

CREATE INDEX readiness_evidence_by_key ON readiness_evidence (env, agent, key, id);

-- Offline eval results, tied to the digest of the bundle they ran on.
CREATE TABLE eval_records (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    agent          TEXT    NOT NULL,
    bundle         INTEGER NOT NULL,
    digest         TEXT    NOT NULL,
    set_name       TEXT    NOT NULL,
    record         TEXT    NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    recorded_by    TEXT    NOT NULL
);

CREATE INDEX eval_records_by_bundle ON eval_records (agent, bundle, id);

-- Policies, evidence and evals are records of what was said and when: never rewritten.
CREATE TRIGGER readiness_policies_no_update BEFORE UPDATE ON readiness_policies
BEGIN
    SELECT RAISE(ABORT, 'readiness policies are immutable');
END;

CREATE TRIGGER readiness_policies_no_delete BEFORE DELETE ON readiness_policies
BEGIN
    SELECT RAISE(ABORT, 'readiness policies are immutable');
END;

CREATE TRIGGER readiness_evidence_no_update BEFORE UPDATE ON readiness_evidence
BEGIN
    SELECT RAISE(ABORT, 'readiness evidence is immutable');
END;

CREATE TRIGGER readiness_evidence_no_delete BEFORE DELETE ON readiness_evidence
BEGIN
    SELECT RAISE(ABORT, 'readiness evidence is immutable');
END;

CREATE TRIGGER eval_records_no_update BEFORE UPDATE ON eval_records
BEGIN
    SELECT RAISE(ABORT, 'eval records are immutable');
END;

CREATE TRIGGER eval_records_no_delete BEFORE DELETE ON eval_records
BEGIN
    SELECT RAISE(ABORT, 'eval records are immutable');
END;

-- Rollback drills; state is opaque JSON owned by the server. running is 0 or 1.
CREATE TABLE drills (
    id            TEXT    NOT NULL PRIMARY KEY,
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    running       INTEGER NOT NULL CHECK (running IN (0, 1)),
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- At most one running drill per agent and env, even under races.
CREATE UNIQUE INDEX drills_one_running ON drills (env, agent) WHERE running = 1;

CREATE INDEX drills_by_agent ON drills (env, agent, created_at_ms);
