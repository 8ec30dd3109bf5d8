-- A run of a graph whose edges fan out, join or map has many branches at once: its
-- checkpoint is where each stands (JSON), beside `next_node`. NULL for a run of one branch.
-- (SQLite's migration 13.)
ALTER TABLE runs ADD COLUMN frontier TEXT;
