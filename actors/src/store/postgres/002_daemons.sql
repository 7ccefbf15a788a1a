-- Several daemons on one database. Each daemon has a name (kept in its data dir) and a lease
-- it renews; an unfinished run belongs to the daemon in `owner`. A daemon whose lease lapsed
-- is deleted from `daemons` by the first other daemon to notice, and its runs are then free
-- for anyone to take (`FOR UPDATE SKIP LOCKED`).
CREATE TABLE daemons (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    dir         TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    renewed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL
);

ALTER TABLE workflow_runs ADD COLUMN owner TEXT;
CREATE INDEX workflow_runs_owner ON workflow_runs (owner, id) WHERE unfinished;

-- Every transition a daemon commits starts with this check, so a daemon that lost a run (its
-- lease lapsed while it was frozen) cannot write to it: its whole batch fails instead. Its
-- row locks hold until the commit: a takeover skips the run, a claim waits, and the daemon's
-- row cannot be deleted as lapsed in between.
CREATE FUNCTION baton_fence(run TEXT, daemon TEXT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    holder TEXT;
BEGIN
    PERFORM 1 FROM daemons WHERE id = daemon AND lease_until > clock_timestamp()
        FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'daemon % has no live lease', daemon;
    END IF;
    SELECT owner INTO holder FROM workflow_runs WHERE id = run FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', run;
    ELSIF holder IS DISTINCT FROM daemon THEN
        RAISE EXCEPTION 'run % is held by daemon %, not by %', run,
            COALESCE(holder, 'none'), daemon;
    END IF;
END $$;

-- A job starts one run: the same delivery reaching two daemons starts it once. Writing a job
-- that names another run than the stored one fails the batch.
CREATE FUNCTION baton_job_once(job TEXT, body TEXT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    started TEXT;
BEGIN
    SELECT run_id INTO started FROM jobs WHERE id = job FOR UPDATE;
    IF started IS NOT NULL AND started IS DISTINCT FROM (body::jsonb)->>'run_id' THEN
        RAISE EXCEPTION 'job % already started run %', job, started;
    END IF;
    INSERT INTO jobs (id, body) VALUES (job, body::jsonb)
        ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body;
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
