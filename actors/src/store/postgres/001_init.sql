-- baton's store on PostgreSQL, version 1. Records are JSON (jsonb) as on sled; the columns a
-- person or an index needs are derived from them, so `psql` reads a run without baton.

-- Definitions, keyed by id and content digest; `latest` marks the one new runs use.
CREATE TABLE workflows (
    id          TEXT NOT NULL,
    digest      TEXT NOT NULL,
    name        TEXT GENERATED ALWAYS AS (COALESCE(definition->>'name', id)) STORED,
    description TEXT GENERATED ALWAYS AS (definition->>'description') STORED,
    definition  JSONB NOT NULL,
    latest      BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id, digest)
);
CREATE UNIQUE INDEX workflows_latest ON workflows (id) WHERE latest;

-- What started a run: a webhook delivery, a chat command, a CLI call.
CREATE TABLE jobs (
    id         TEXT PRIMARY KEY,
    source     TEXT GENERATED ALWAYS AS (body->>'source') STORED,
    event      TEXT GENERATED ALWAYS AS (body->>'event') STORED,
    run_id     TEXT GENERATED ALWAYS AS (body->>'run_id') STORED,
    body       JSONB NOT NULL
);

-- Run heads: the seed's columns, derived from the head snapshot (`head`), which is rewritten
-- on every status change and otherwise every few events; `run_events` holds the rest.
CREATE TABLE workflow_runs (
    id           TEXT PRIMARY KEY,
    workflow_id  TEXT NOT NULL,
    job_id       TEXT GENERATED ALWAYS AS (head->>'job_id') STORED,
    status       TEXT NOT NULL,
    current_step INTEGER GENERATED ALWAYS AS ((head->>'current_step')::integer) STORED,
    state        JSONB GENERATED ALWAYS AS (head->'state') STORED,
    error_text   TEXT GENERATED ALWAYS AS (head->>'error_text') STORED,
    started_at   TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp((head->>'started_at')::double precision / 1000)) STORED,
    completed_at TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp((head->>'completed_at')::double precision / 1000)) STORED,
    unfinished   BOOLEAN NOT NULL,
    head         JSONB NOT NULL
);
CREATE INDEX workflow_runs_status ON workflow_runs (status, id);
CREATE INDEX workflow_runs_workflow ON workflow_runs (workflow_id, status, id);
CREATE INDEX workflow_runs_unfinished ON workflow_runs (id) WHERE unfinished;

-- The append-only history of every run: the truth the heads are snapshots of.
CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    type   TEXT GENERATED ALWAYS AS (body->>'type') STORED,
    at     TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp((body->>'at')::double precision / 1000)) STORED,
    body   JSONB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Step records, by index in the run's workflow.
CREATE TABLE run_steps (
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    idx    INTEGER NOT NULL,
    body   JSONB NOT NULL,
    PRIMARY KEY (run_id, idx)
);

-- The seed's change journal.
CREATE TABLE workflow_changes (
    id              TEXT PRIMARY KEY,
    workflow_run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_index      INTEGER NOT NULL,
    change_type     TEXT NOT NULL,
    change_data     JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    seq             BIGINT NOT NULL
);
CREATE INDEX workflow_changes_run ON workflow_changes (workflow_run_id, seq);

-- Durable timers (retry back-offs, wait time-outs).
CREATE TABLE timers (
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    timer  BIGINT NOT NULL,
    due_ms BIGINT NOT NULL,
    due_at TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(due_ms::double precision / 1000)) STORED,
    PRIMARY KEY (run_id, timer)
);
CREATE INDEX timers_due ON timers (due_ms);

-- What a run is about (`owner/name`, `owner/name#N`), for search and `/baton` commands.
CREATE TABLE run_subjects (
    name   TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    PRIMARY KEY (name, run_id)
);
CREATE INDEX run_subjects_run ON run_subjects (run_id);

-- Runs the app linked to something of its own (a chat).
CREATE TABLE run_tags (
    tag    TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    ord    BIGINT NOT NULL,
    PRIMARY KEY (tag, run_id)
);
CREATE INDEX run_tags_run ON run_tags (run_id);

-- The notifier's record of what each sink showed of a run.
CREATE TABLE deliveries (
    run_id TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    sink   TEXT NOT NULL,
    body   JSONB NOT NULL,
    PRIMARY KEY (run_id, sink)
);

-- Process groups of running commands, per machine (its boot id): a daemon kills only its
-- own machine's leftovers after a crash.
CREATE TABLE process_groups (
    boot TEXT NOT NULL,
    key  BYTEA NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (boot, key)
);

-- Journal order and tag order.
CREATE SEQUENCE baton_ids;
