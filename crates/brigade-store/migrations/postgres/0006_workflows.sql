-- Workflows: tasks that wait for other tasks (issue 12).
--
-- A task's key names a group: the tasks of the job with that key and what
-- they spawned, down the tree. A task with `after` is `waiting` until every
-- group it names is closed (no member unfinished); `pending_keys` counts the
-- groups it still waits for, decremented once per group when it closes.
ALTER TABLE tasks ADD COLUMN task_key TEXT;
-- JSON array of the keys it waits for; NULL when it waits for nothing.
ALTER TABLE tasks ADD COLUMN after_keys JSONB;
-- 'succeeded' | 'finished' | 'failed' with after_keys; NULL otherwise.
ALTER TABLE tasks ADD COLUMN run_if TEXT;
ALTER TABLE tasks ADD COLUMN pending_keys BIGINT NOT NULL DEFAULT 0;
-- JSON array of the groups it belongs to (its key, then its spawner's
-- groups); NULL for a task in none (a flat job's: they pay nothing).
ALTER TABLE tasks ADD COLUMN member_of JSONB;
ALTER TABLE tasks ADD COLUMN spawned_by TEXT;
-- The last progress its running attempt reported, JSON.
ALTER TABLE tasks ADD COLUMN progress JSONB;
CREATE INDEX tasks_spawned_by ON tasks (spawned_by) WHERE spawned_by IS NOT NULL;

-- One row per group: members not final yet, members that ended failed or cancelled.
CREATE TABLE job_groups (
    job_id  TEXT    NOT NULL,
    group_key TEXT    NOT NULL,
    open    BIGINT  NOT NULL,
    bad     BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, group_key)
);
-- The members of each group (a lease reads a waiter's parents from here).
CREATE TABLE group_members (
    job_id  TEXT NOT NULL,
    group_key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (job_id, group_key, task_id)
);
-- The tasks waiting for each group (a closing group decrements these).
CREATE TABLE group_waiters (
    job_id  TEXT NOT NULL,
    group_key TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (job_id, group_key, task_id)
);
