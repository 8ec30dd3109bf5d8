-- Graphs as posted (their JSON spec), runs with their checkpoint, and every executed step.

CREATE TABLE graphs (
    id         TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    graph_id      TEXT NOT NULL REFERENCES graphs (id),
    status        TEXT NOT NULL
                  CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    initial_state TEXT NOT NULL,
    -- Written once the run has ended.
    final_state   TEXT,
    -- The checkpoint: the node to run next and how many have run.
    next_node     TEXT,
    step_count    INTEGER NOT NULL DEFAULT 0,
    max_steps     INTEGER NOT NULL,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    finished_at   INTEGER
);

CREATE INDEX runs_by_status ON runs (status);
CREATE INDEX runs_by_graph ON runs (graph_id, created_at);

CREATE TABLE run_steps (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq    INTEGER NOT NULL,
    node   TEXT NOT NULL,
    status TEXT NOT NULL,
    -- The step's log lines, a JSON array of strings.
    log    TEXT NOT NULL,
    -- The step event exactly as streamed (it holds the state after the step).
    event  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
