-- A run's initial state moves out of its row: the row is updated at every step, and
-- SQLite rewrites a row whole, so a large initial state made every step write it again.
CREATE TABLE run_inputs (
    run_id        TEXT PRIMARY KEY REFERENCES runs (id),
    initial_state TEXT NOT NULL
);
INSERT INTO run_inputs (run_id, initial_state) SELECT id, initial_state FROM runs;
ALTER TABLE runs DROP COLUMN initial_state;
