-- brigade schema, SQLite engine. Times are milliseconds since the Unix epoch.

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    name             TEXT,
    queue            TEXT    NOT NULL,
    labels           TEXT    NOT NULL DEFAULT '{}',
    owner            TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    total            INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    idem_key         TEXT,
    idem_hash        TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_name ON jobs (name, seq);

CREATE TABLE tasks (
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    job_id           TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    name             TEXT,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    input            TEXT    NOT NULL,
    output           TEXT,
    error            TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- attempts below this one do not count against max_attempts (retry, hand-back)
    attempt_base     INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    backoff          TEXT    NOT NULL,
    requires         TEXT,
    run_at           INTEGER,
    worker_id        TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
);
CREATE INDEX tasks_by_job ON tasks (job_id, state);
-- the dispatch order: highest priority first, then oldest
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_running_on ON tasks (worker_id) WHERE state = 'running';

CREATE TABLE attempts (
    task_id     TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    outcome     TEXT    NOT NULL,
    error       TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;

CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    hostname     TEXT    NOT NULL,
    owner        TEXT    NOT NULL DEFAULT '',
    queues       TEXT    NOT NULL,
    kinds        TEXT    NOT NULL,
    labels       TEXT    NOT NULL,
    capacity     INTEGER NOT NULL,
    version      TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    load         TEXT    NOT NULL DEFAULT '{}',
    joined_at    INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX workers_by_state ON workers (state, last_seen_at);

CREATE TABLE queues (
    name   TEXT    PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);
