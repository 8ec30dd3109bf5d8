-- Human-in-the-loop: a run may wait (`waiting`) at an `interrupt` node for a person's
-- answer, holding no owner and no lease. (SQLite's migration 12.)
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('queued', 'running', 'waiting', 'completed', 'failed', 'cancelled'));

-- Each question a run asked. `request` is the question as the API shows it (JSON);
-- `answer` the input that resolved it (JSON), NULL when it timed out.
CREATE TABLE run_interrupts (
    id          TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    node        TEXT NOT NULL,
    step        BIGINT NOT NULL,
    request     TEXT NOT NULL,
    deadline    BIGINT,
    created_at  BIGINT NOT NULL,
    resolved_at BIGINT,
    answer      TEXT,
    timed_out   BOOLEAN NOT NULL DEFAULT FALSE,
    resolved_by TEXT
);
CREATE INDEX run_interrupts_by_run ON run_interrupts (run_id, step);
CREATE INDEX run_interrupts_deadlines ON run_interrupts (deadline)
    WHERE resolved_at IS NULL AND deadline IS NOT NULL;
