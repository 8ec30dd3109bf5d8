-- A run started from another run's step (`POST /runs/{id}/fork`): the parent run and the
-- step whose state it started from. A parent lists its forks through the index.
ALTER TABLE runs ADD COLUMN forked_from TEXT;
ALTER TABLE runs ADD COLUMN forked_at_step INTEGER;
CREATE INDEX runs_by_parent ON runs (forked_from) WHERE forked_from IS NOT NULL;
