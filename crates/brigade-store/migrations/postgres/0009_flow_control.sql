-- Unique jobs: the job that holds each key of an owner. A submit with a key
-- takes the row (insert, or take over a row whose job no longer holds it)
-- in its own transaction, so of two concurrent submits one creates a job.
CREATE TABLE job_keys (
    owner      TEXT    NOT NULL,
    ukey       TEXT    NOT NULL,
    job_id     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    -- NULL: held while the job is unfinished; else until created_at + for_ms
    for_ms     BIGINT,
    PRIMARY KEY (owner, ukey)
);
CREATE INDEX job_keys_by_job ON job_keys (job_id);

-- Poison tasks: attempts in a row that ended lost or crash.
ALTER TABLE tasks ADD COLUMN deaths INTEGER NOT NULL DEFAULT 0;

-- Finding failed tasks across jobs (GET /v1/tasks?state=failed), newest first.
CREATE INDEX tasks_failed ON tasks (seq) WHERE state = 'failed';
