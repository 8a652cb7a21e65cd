-- Log lines tasks wrote, shipped by their workers. seq orders them and is the page cursor.
CREATE TABLE task_logs (
    seq     BIGSERIAL PRIMARY KEY,
    task_id TEXT      NOT NULL,
    attempt BIGINT    NOT NULL,
    line    TEXT      NOT NULL,
    at      BIGINT    NOT NULL
);
CREATE INDEX task_logs_by_task ON task_logs (task_id, seq);
CREATE INDEX task_logs_by_attempt ON task_logs (task_id, attempt);
