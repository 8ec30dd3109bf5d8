-- A cancel asked of an instance that does not execute the run: the one that does sees it
-- (at once on Postgres, by a notification; at its next lease tick on SQLite), and the
-- run cannot end any other way than `cancelled` once it is set.
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
