-- brigade schema, PostgreSQL engine. Times are milliseconds since the Unix epoch
-- (BIGINT, as in the SQLite engine). Structured columns the engine queries are
-- jsonb; task input and output are json so they come back exactly as submitted.

CREATE TABLE jobs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    name             TEXT,
    queue            TEXT    NOT NULL,
    labels           JSONB   NOT NULL DEFAULT '{}',
    owner            TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    total            BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    idem_key         TEXT,
    idem_hash        TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_name ON jobs (name, seq);

CREATE TABLE tasks (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    job_id           TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    name             TEXT,
    queue            TEXT    NOT NULL,
    priority         BIGINT  NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    input            JSON    NOT NULL,
    output           JSON,
    error            JSONB,
    attempt          BIGINT  NOT NULL DEFAULT 0,
    -- attempts below this one do not count against max_attempts (retry, hand-back)
    attempt_base     BIGINT  NOT NULL DEFAULT 0,
    max_attempts     BIGINT  NOT NULL,
    timeout_ms       BIGINT  NOT NULL,
    backoff          JSONB   NOT NULL,
    requires         JSONB,
    run_at           BIGINT,
    worker_id        TEXT,
    lease_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX tasks_by_job ON tasks (job_id, state);
-- the dispatch order: highest priority first, then oldest
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX tasks_due ON tasks (run_at) WHERE state = 'scheduled';
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'running';
CREATE INDEX tasks_running_on ON tasks (worker_id) WHERE state = 'running';

CREATE TABLE attempts (
    task_id     TEXT    NOT NULL,
    attempt     BIGINT  NOT NULL,
    worker_id   TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    outcome     TEXT    NOT NULL,
    error       JSONB,
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE workers (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    hostname     TEXT    NOT NULL,
    owner        TEXT    NOT NULL DEFAULT '',
    queues       JSONB   NOT NULL,
    kinds        JSONB   NOT NULL,
    labels       JSONB   NOT NULL,
    capacity     BIGINT  NOT NULL,
    version      TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    load         JSONB   NOT NULL DEFAULT '{}',
    joined_at    BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL
);
CREATE INDEX workers_by_state ON workers (state, last_seen_at);

CREATE TABLE queues (
    name   TEXT    PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT FALSE
);
