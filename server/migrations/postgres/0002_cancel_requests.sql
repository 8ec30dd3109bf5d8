-- A cancel asked of an instance that does not execute the run: the one that does hears
-- of it by NOTIFY on `weft_cancel` (or at its next lease tick), and the run cannot end
-- any other way than `cancelled` once it is set.
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
