-- One index over running tasks instead of two. tasks_leases was keyed by
-- lease_expires_at, so every heartbeat rewrote an index entry per task it
-- extended, and every lease and result wrote both. The reaper reads all
-- running tasks anyway (they number at most the workers' slots).
DROP INDEX IF EXISTS tasks_leases;
DROP INDEX IF EXISTS tasks_running_on;
CREATE INDEX tasks_running ON tasks (worker_id) WHERE state = 'running';
