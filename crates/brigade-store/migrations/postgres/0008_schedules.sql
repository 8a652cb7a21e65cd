-- Schedules: jobs created on a clock. next_fire_at is what a fire moves, in
-- the transaction that creates the job, with a conditional UPDATE: of several
-- servers, only the one whose UPDATE matched creates the job.
CREATE TABLE schedules (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    name         TEXT,
    owner        TEXT    NOT NULL DEFAULT '',
    cron         TEXT,
    every_ms     BIGINT,
    timezone     TEXT    NOT NULL,
    anchor_at    BIGINT  NOT NULL,
    job          JSONB   NOT NULL,
    overlap      TEXT    NOT NULL,
    catch_up     TEXT    NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    next_fire_at BIGINT,
    last_fire_at BIGINT,
    last_job_id  TEXT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- The schedule a job was created by, and the fire it stands for.
ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
ALTER TABLE jobs ADD COLUMN fire_at BIGINT;
CREATE INDEX jobs_by_schedule ON jobs (schedule_id, seq) WHERE schedule_id IS NOT NULL;
