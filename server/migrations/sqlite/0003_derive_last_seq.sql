-- A run's event count is read from its events (MAX(seq) on the primary key), so writing
-- an event no longer has to update the run's row as well.
ALTER TABLE runs DROP COLUMN last_seq;
