-- Approvals: each env's approval policy (every applied version kept; the highest is in force)
-- and the queue of requests. A request is stored whole as JSON in `record` (its model is
-- serin_core::approvals::ApprovalRequest); the other columns index it. Every write is audited.
CREATE TABLE approval_policies (
    env           TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    policy        TEXT    NOT NULL,
    applied_at_ms INTEGER NOT NULL,
    applied_by    TEXT    NOT NULL,
    PRIMARY KEY (env, version)
);

CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    env           TEXT    NOT NULL,
    agent         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    record        TEXT    NOT NULL,
    -- 1 while an agent-side request owes the leader a guardrail signal (filed, denied or
    -- expired, overdue); the leader counts it into the release's monitor and clears it in
    -- one transaction.
    owes_signal   INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX approvals_by_env ON approvals (env, created_at_ms);
-- The sweep and the pending caps read only pending requests.
CREATE INDEX approvals_pending ON approvals (expires_at_ms) WHERE status = 'pending';
CREATE INDEX approvals_pending_agent ON approvals (env, agent, kind) WHERE status = 'pending';
CREATE INDEX approvals_owing ON approvals (created_at_ms) WHERE owes_signal = 1;
