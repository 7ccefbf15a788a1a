-- Several daemons on one database. Each daemon has a name (kept in its data dir) and a lease
-- it renews; an unfinished run belongs to the daemon in `owner`. A daemon whose lease lapsed
-- is deleted from `daemons` by the first other daemon to notice, and its runs are then free
-- for anyone to take (`FOR UPDATE SKIP LOCKED`).
CREATE TABLE daemons (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    renewed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL
);

ALTER TABLE workflow_runs ADD COLUMN owner TEXT;
CREATE INDEX workflow_runs_owner ON workflow_runs (owner, id) WHERE unfinished;

-- Every transition a daemon commits starts with this check, so a daemon that lost a run (its
-- lease lapsed while it was frozen) cannot write to it: its whole batch fails instead.
CREATE FUNCTION baton_fence(run TEXT, daemon TEXT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    holder TEXT;
BEGIN
    SELECT owner INTO holder FROM workflow_runs WHERE id = run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', run;
    ELSIF holder IS DISTINCT FROM daemon THEN
        RAISE EXCEPTION 'run % is held by daemon %, not by %', run,
            COALESCE(holder, 'none'), daemon;
    END IF;
END $$;

-- Commands sent through one daemon to a run another holds: the holder takes them (woken by
-- NOTIFY baton_inbox, or its poll), answers in `reply`, and the sender reads the answer.
CREATE TABLE inbox (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    command    JSONB NOT NULL,
    sender     TEXT NOT NULL,
    taken_by   TEXT,
    reply      JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX inbox_open ON inbox (run_id) WHERE taken_by IS NULL;

-- `[limits] per_repo` across daemons: a run executing about a repository holds a row here. A
-- daemon takes one under an advisory lock on the repository, counting every daemon's rows; a
-- lapsed daemon's rows go with it.
CREATE TABLE slots (
    run_id TEXT PRIMARY KEY REFERENCES workflow_runs (id) ON DELETE CASCADE,
    repo   TEXT NOT NULL,
    daemon TEXT NOT NULL REFERENCES daemons (id) ON DELETE CASCADE
);
CREATE INDEX slots_repo ON slots (repo);
