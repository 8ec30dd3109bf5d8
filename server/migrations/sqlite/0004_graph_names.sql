-- Graphs may carry a name (a preset's name, or the name a spec gives), shown in run
-- listings and the UI.
ALTER TABLE graphs ADD COLUMN name TEXT;
