-- When a task last became ready to run (created, due, requeued), in ms since the epoch,
-- so a lease can measure how long it waited in the queue. NULL on rows from before this
-- migration: their created_at (or run_at) stands in.
ALTER TABLE tasks ADD COLUMN ready_at BIGINT;
