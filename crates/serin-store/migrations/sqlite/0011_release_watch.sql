-- The post-promotion watch: when a completed release's next checkpoint is due (NULL when it
-- has no watch, or its watch ended). The watch's results live in the release's state.
ALTER TABLE releases ADD COLUMN watch_due_ms INTEGER;

CREATE INDEX releases_watch_due ON releases (watch_due_ms) WHERE watch_due_ms IS NOT NULL;
