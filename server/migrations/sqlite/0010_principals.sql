-- Who created each graph and run: the name of the API token's principal. NULL: made
-- while Weft ran open (no tokens), visible to admins only once tokens exist.
ALTER TABLE graphs ADD COLUMN created_by TEXT;
ALTER TABLE runs ADD COLUMN created_by TEXT;
-- A principal's history page: its runs, newest first. Partial: a Weft running open
-- (no creators) pays nothing for it on each new run.
CREATE INDEX runs_by_creator ON runs (created_by, id) WHERE created_by IS NOT NULL;

-- API tokens. A token reads `weft_<id>_<secret>`: the id finds the row, and only the
-- SHA-256 of the secret is kept, compared in constant time. A name is a principal: a
-- revoked token's name may be given to a new token, which then owns what it owned.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    admin       INTEGER NOT NULL,
    read_only   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX api_tokens_live_names ON api_tokens (name) WHERE revoked_at IS NULL;
