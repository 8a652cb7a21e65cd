-- Schedules: jobs created on a clock. next_fire_at is what a fire moves, in
-- the transaction that creates the job, with a conditional UPDATE: of several
-- servers, only the one whose UPDATE matched creates the job.
CREATE TABLE schedules (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    name         TEXT,
    owner        TEXT    NOT NULL DEFAULT '',
    cron         TEXT,
    every_ms     INTEGER,
    timezone     TEXT    NOT NULL,
    anchor_at    INTEGER NOT NULL,
    job          TEXT    NOT NULL,
    overlap      TEXT    NOT NULL,
    catch_up     TEXT    NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_fire_at INTEGER,
    last_fire_at INTEGER,
    last_job_id  TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- The schedule a job was created by, and the fire it stands for.
ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE jobs ADD COLUMN fire_at INTEGER;
CREATE INDEX jobs_by_schedule ON jobs (schedule_id, seq) WHERE schedule_id IS NOT NULL;
