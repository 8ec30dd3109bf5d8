-- A `step` event stores the keys its node wrote (`update`); the whole state after it only
-- now and then, as a snapshot (`state`, and `snapshot = 1`). A step's state is rebuilt
-- from the latest snapshot at or before it, folding the updates after. Steps written
-- before this all hold their state.
ALTER TABLE run_events ADD COLUMN snapshot INTEGER NOT NULL DEFAULT 0;
UPDATE run_events SET snapshot = 1 WHERE kind = 'step';
CREATE INDEX run_events_snapshots ON run_events (run_id, snapshot, seq);
