-- The Postgres schema: SQLite's as it stands after its migration 8, in one step.
-- Graphs as posted, runs with their checkpoint and lease, and every event of each run.

CREATE TABLE graphs (
    id         TEXT PRIMARY KEY,
    name       TEXT,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    graph_id    TEXT NOT NULL REFERENCES graphs (id),
    status      TEXT NOT NULL
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    -- The checkpoint: the node to run next and how many have run.
    next_node   TEXT,
    step_count  BIGINT NOT NULL DEFAULT 0,
    max_steps   BIGINT NOT NULL,
    error       TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- The instance executing it, and until when it holds it without renewing.
    owner       TEXT,
    lease_until BIGINT
);

CREATE INDEX runs_by_lease ON runs (status, lease_until);
CREATE INDEX runs_by_graph ON runs (graph_id, created_at);

-- Kept out of the run's row, which every step updates.
CREATE TABLE run_inputs (
    run_id        TEXT PRIMARY KEY REFERENCES runs (id),
    initial_state TEXT NOT NULL
);

CREATE TABLE run_events (
    run_id   TEXT NOT NULL REFERENCES runs (id),
    seq      BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    node     TEXT NOT NULL,
    status   TEXT NOT NULL,
    -- The event's log lines, a JSON array of strings.
    log      TEXT NOT NULL,
    -- The event as streamed; a `step` that is no snapshot holds its update, not its state.
    event    TEXT NOT NULL,
    snapshot BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX run_events_snapshots ON run_events (run_id, seq) WHERE snapshot;
