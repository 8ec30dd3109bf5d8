-- Steps become one kind of run event among several (queued, started, node started,
-- step, node failed, end); each run counts its events in `last_seq`.

ALTER TABLE run_steps RENAME TO run_events;
ALTER TABLE run_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'step';
ALTER TABLE runs ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET last_seq = step_count;
CREATE INDEX run_events_by_kind ON run_events (run_id, kind, seq);
