-- A webhook delivery that exhausted its attempts (or its age) is marked failed and never due
-- again; before, deliveries were retried forever.
ALTER TABLE notifications ADD COLUMN failed_at_ms BIGINT;
