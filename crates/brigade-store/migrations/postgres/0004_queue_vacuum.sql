-- Tasks and attempts are rewritten several times in their first seconds of
-- life: vacuum them after a fixed number of dead rows, not a fraction of the
-- table, so their indexes stay lean however large the history grows.
ALTER TABLE tasks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
ALTER TABLE attempts SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.05);
