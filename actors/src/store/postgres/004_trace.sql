-- Runs' traces (docs/observability.md): every span of a run, from whichever daemon ran that
-- part of it, carries the trace id of the traceparent kept in its head. The column finds the
-- run of a trace an operator is looking at: SELECT id FROM workflow_runs WHERE trace_id = '…'.
-- NULL for runs created before baton traced them.
ALTER TABLE workflow_runs
    ADD COLUMN trace_id TEXT GENERATED ALWAYS AS (split_part(head->>'traceparent', '-', 2)) STORED;
CREATE INDEX workflow_runs_trace ON workflow_runs (trace_id) WHERE trace_id IS NOT NULL;
