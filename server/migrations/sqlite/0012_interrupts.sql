-- Human-in-the-loop: a run may wait (`waiting`) at an `interrupt` node for a person's
-- answer, holding no owner and no lease.
--
-- SQLite cannot alter a CHECK constraint, so `runs` is rebuilt with `waiting` allowed (the
-- documented 12-step way: new table, copy, drop, rename). The migration runner turns
-- foreign keys off around this one and checks them after (see `migrate`).
CREATE TABLE runs_new (
    id               TEXT PRIMARY KEY,
    graph_id         TEXT NOT NULL REFERENCES graphs (id),
    status           TEXT NOT NULL
                     CHECK (status IN ('queued', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    final_state      TEXT,
    -- The checkpoint: the node to run next and how many have run.
    next_node        TEXT,
    step_count       INTEGER NOT NULL DEFAULT 0,
    max_steps        INTEGER NOT NULL,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    owner            TEXT,
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_by       TEXT,
    forked_from      TEXT,
    forked_at_step   INTEGER
);
INSERT INTO runs_new (id, graph_id, status, final_state, next_node, step_count, max_steps, error, created_at,
                      updated_at, finished_at, owner, lease_until, cancel_requested, created_by, forked_from,
                      forked_at_step)
SELECT id, graph_id, status, final_state, next_node, step_count, max_steps, error, created_at, updated_at,
       finished_at, owner, lease_until, cancel_requested, created_by, forked_from, forked_at_step
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_by_graph ON runs (graph_id, created_at);
CREATE INDEX runs_by_lease ON runs (status, lease_until);
CREATE INDEX runs_by_creator ON runs (created_by, id) WHERE created_by IS NOT NULL;
CREATE INDEX runs_by_parent ON runs (forked_from) WHERE forked_from IS NOT NULL;

-- Each question a run asked. `request` is the question as the API shows it (JSON);
-- `answer` the input that resolved it (JSON), NULL when it timed out.
CREATE TABLE run_interrupts (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    node        TEXT NOT NULL,
    step        INTEGER NOT NULL,
    request     TEXT NOT NULL,
    deadline    INTEGER,
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    answer      TEXT,
    timed_out   INTEGER NOT NULL DEFAULT 0,
    resolved_by TEXT
);
CREATE INDEX run_interrupts_by_run ON run_interrupts (run_id, step);
-- The lease tick's look-up of questions past their deadline.
CREATE INDEX run_interrupts_deadlines ON run_interrupts (deadline)
    WHERE resolved_at IS NULL AND deadline IS NOT NULL;
