-- Limits and fairness.
--
-- A task may name keys whose limits it counts against (limits, a JSON array)
-- and a fairness key. Limited tasks are picked apart from the others, so
-- the main dispatch index leaves them out: a task over budget then holds up
-- nothing behind it. One over budget is parked on the key that stopped it
-- (parked_on) and leaves the limited scan too, until that key has room.
ALTER TABLE tasks ADD COLUMN limits TEXT;
ALTER TABLE tasks ADD COLUMN fair_key TEXT;
-- Fair tasks' place in the dispatch order (start-time fair queuing): set at
-- submit, in the units of seq, so each fair key's tasks interleave with the
-- others' from the head of the queue on. NULL: the task's own seq.
ALTER TABLE tasks ADD COLUMN vt BIGINT;
ALTER TABLE tasks ADD COLUMN parked_on TEXT;

DROP INDEX IF EXISTS tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority DESC, coalesce(vt, seq))
    WHERE state = 'queued' AND limits IS NULL;
CREATE INDEX tasks_limited ON tasks (priority DESC, coalesce(vt, seq))
    WHERE state = 'queued' AND limits IS NOT NULL AND parked_on IS NULL;
CREATE INDEX tasks_parked ON tasks (parked_on, priority DESC, coalesce(vt, seq))
    WHERE state = 'queued' AND parked_on IS NOT NULL;
-- What runs of limited tasks: the budgets count it at every limited lease.
CREATE INDEX tasks_running_limited ON tasks (seq)
    WHERE state = 'running' AND limits IS NOT NULL;
-- The head of each queue's fair tasks, and each fair key's last place.
CREATE INDEX tasks_fair ON tasks (queue, priority, vt)
    WHERE state = 'queued' AND fair_key IS NOT NULL;
CREATE INDEX tasks_fair_key ON tasks (fair_key, queue, priority, vt)
    WHERE state = 'queued' AND fair_key IS NOT NULL;

-- Limits set through PUT /v1/limits/{key}; a key ending in * is a pattern.
CREATE TABLE limits (
    key         TEXT    PRIMARY KEY,
    concurrency BIGINT,
    rate        BIGINT,
    per_ms      BIGINT,
    burst       BIGINT,
    updated_at  BIGINT NOT NULL
);
-- Each concrete key's token bucket (thousandths of a token) and its
-- "started" window. What runs is counted from the tasks themselves.
CREATE TABLE limit_usage (
    key         TEXT    PRIMARY KEY,
    tokens      BIGINT,
    refilled_at BIGINT,
    window_at   BIGINT NOT NULL,
    started     BIGINT NOT NULL
);
-- Keys tasks are parked on: look again when a task of the key ends
-- (wake_at NULL) or at wake_at (a rate's next token).
CREATE TABLE limit_waits (
    key     TEXT PRIMARY KEY,
    wake_at BIGINT
);
CREATE INDEX limit_waits_due ON limit_waits (wake_at);
