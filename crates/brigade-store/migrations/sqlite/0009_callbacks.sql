-- Callbacks: a job's callback target, and an outbox of deliveries.
-- A delivery row is written in the transaction that records the job as
-- finished, so a finished job's callback is never lost to a crash; the
-- delivery duty claims due rows (claimed_by/claimed_until: one server at a
-- time) and records every attempt in callback_attempts.
ALTER TABLE jobs ADD COLUMN callback TEXT;

CREATE TABLE callback_deliveries (
    seq           INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    job_id        TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       INTEGER NOT NULL,
    claimed_by    TEXT,
    claimed_until INTEGER,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
CREATE INDEX callback_deliveries_due ON callback_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX callback_deliveries_by_job ON callback_deliveries (job_id);

CREATE TABLE callback_attempts (
    seq         INTEGER PRIMARY KEY,
    delivery_id TEXT    NOT NULL,
    job_id      TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    http_status INTEGER,
    error       TEXT,
    at          INTEGER NOT NULL
);
CREATE INDEX callback_attempts_by_job ON callback_attempts (job_id, seq);
