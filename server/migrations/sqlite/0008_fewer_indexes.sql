-- Every index is written at every commit that touches its table; these earn their cost.
-- Nothing reads events by kind, `runs_by_lease` (status, lease_until) serves every
-- look-up by status, and only snapshots need finding among a run's events.
DROP INDEX run_events_by_kind;
DROP INDEX runs_by_status;
DROP INDEX run_events_snapshots;
CREATE INDEX run_events_snapshots ON run_events (run_id, seq) WHERE snapshot = 1;
