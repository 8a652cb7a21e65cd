-- Retention: finished jobs are deleted (with their tasks, history and logs)
-- keep_ms after they finished, or after the server's --retention when NULL.
ALTER TABLE jobs ADD COLUMN keep_ms INTEGER;
-- The pruner's two lookups, oldest expiry first, so it never scans live jobs.
CREATE INDEX jobs_expiring ON jobs (finished_at) WHERE finished_at IS NOT NULL AND keep_ms IS NULL;
CREATE INDEX jobs_expiring_own ON jobs ((finished_at + keep_ms)) WHERE finished_at IS NOT NULL AND keep_ms IS NOT NULL;
