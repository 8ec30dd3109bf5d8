-- Every queued or running run has an owner: the Weft instance executing it, holding a
-- lease it renews while it runs. Another instance claims a run only once its lease has
-- expired (a run with no owner, written before leases, is free to claim).
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
CREATE INDEX runs_by_lease ON runs (status, lease_until);
