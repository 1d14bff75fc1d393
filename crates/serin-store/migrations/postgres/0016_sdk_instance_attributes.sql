-- Where each SDK instance runs, as it reports it (stream query and applied reports): its region
-- and pool. A waved release opens region by region (or pool by pool), and the fleet view shows
-- which wave each instance belongs to. Both are optional free text of at most 128 bytes.
ALTER TABLE sdk_instances ADD COLUMN region TEXT;
ALTER TABLE sdk_instances ADD COLUMN pool TEXT;
