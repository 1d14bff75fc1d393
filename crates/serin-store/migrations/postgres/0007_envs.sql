-- Environments exist only once created, so a typo (`prdo`) is refused instead of becoming a
-- new env. strict is the pin policy: 1 refuses moving model aliases and direct deploys without
-- force, 0 (lenient, the default of `dev` only) warns.
CREATE TABLE envs (
    name          TEXT    NOT NULL PRIMARY KEY,
    strict        BIGINT  NOT NULL CHECK (strict IN (0, 1)),
    created_at_ms BIGINT  NOT NULL,
    created_by    TEXT    NOT NULL
);

-- Every env an older store already used is registered, strict unless it is named dev (the
-- policy those envs had by name), dated by its first recorded use.
INSERT INTO envs (name, strict, created_at_ms, created_by)
SELECT env, CASE WHEN env = 'dev' THEN 0 ELSE 1 END, MIN(at_ms), 'migration'
FROM (
    SELECT env, created_at_ms AS at_ms FROM env_states
    UNION ALL SELECT env, created_at_ms FROM releases
    UNION ALL SELECT env, created_at_ms FROM drills
    UNION ALL SELECT env, applied_at_ms FROM readiness_policies
    UNION ALL SELECT env, recorded_at_ms FROM readiness_evidence
) used
GROUP BY env;

INSERT INTO envs (name, strict, created_at_ms, created_by)
VALUES ('dev', 0, 0, 'serin')
ON CONFLICT (name) DO NOTHING;

CREATE TRIGGER envs_no_delete BEFORE DELETE ON envs
    FOR EACH ROW EXECUTE FUNCTION serin_reject_mutation();
CREATE TRIGGER envs_no_truncate BEFORE TRUNCATE ON envs
    FOR EACH STATEMENT EXECUTE FUNCTION serin_reject_mutation();
