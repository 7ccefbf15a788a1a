//! The SQL the committer runs: its statements, prepared once on its connection, and how each
//! [`Op`] becomes them.

use tokio_postgres::types::ToSql;

use super::super::Op;

/// The statements the committer prepares once.
const INSERT_RUN: &str = "INSERT INTO workflow_runs \
     (id, workflow_id, status, unfinished, head, owner) \
     VALUES ($1, $2, $3, true, $4::text::jsonb, $5) ON CONFLICT (id) DO UPDATE SET \
     workflow_id = EXCLUDED.workflow_id, status = EXCLUDED.status, head = EXCLUDED.head";
const UPDATE_HEAD: &str =
    "UPDATE workflow_runs SET status = $2, head = $3::text::jsonb, unfinished = $4 WHERE id = $1";
const UPDATE_UNFINISHED: &str = "UPDATE workflow_runs SET unfinished = $2 WHERE id = $1";
const INSERT_EVENT: &str = "INSERT INTO run_events (run_id, seq, body) \
     VALUES ($1, $2, $3::text::jsonb) ON CONFLICT (run_id, seq) DO UPDATE SET body = EXCLUDED.body";
const UPSERT_STEP: &str =
    "INSERT INTO run_steps (run_id, idx, body) VALUES ($1, $2, $3::text::jsonb) \
     ON CONFLICT (run_id, idx) DO UPDATE SET body = EXCLUDED.body";
const SET_TIMER: &str = "INSERT INTO timers (run_id, timer, due_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (run_id, timer) DO UPDATE SET due_ms = EXCLUDED.due_ms";
const CLEAR_TIMER: &str = "DELETE FROM timers WHERE run_id = $1 AND timer = $2";
const INSERT_SUBJECT: &str =
    "INSERT INTO run_subjects (name, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const UPSERT_JOB: &str = "INSERT INTO jobs (id, body) VALUES ($1, $2::text::jsonb) \
     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body";
// The same content registered again keeps its row; the registration is the new one.
const INSERT_DEFINITION: &str =
    "INSERT INTO workflows (id, digest, definition, latest, provenance) \
     VALUES ($1, $2, $3::text::jsonb, false, $4::text::jsonb) \
     ON CONFLICT (id, digest) DO UPDATE SET provenance = EXCLUDED.provenance";
// Two statements, in this order: the unique index on the latest of an id is checked row by
// row, so one UPDATE flipping both rows may set the new one before it clears the old one.
const CLEAR_LATEST: &str =
    "UPDATE workflows SET latest = false WHERE id = $1 AND latest AND digest <> $2";
const SET_LATEST: &str =
    "UPDATE workflows SET latest = true WHERE id = $1 AND digest = $2 AND NOT latest";
const INSERT_CHANGE: &str = "INSERT INTO workflow_changes \
     (id, workflow_run_id, step_index, change_type, change_data, created_at, seq) \
     SELECT c->>'id', c->>'workflow_run_id', (c->>'step_index')::integer, c->>'change_type', \
     COALESCE(c->'change_data', 'null'::jsonb), \
     to_timestamp((c->>'created_at')::double precision / 1000), $2 \
     FROM (SELECT $1::text::jsonb AS c) AS change ON CONFLICT (id) DO NOTHING";
const UPSERT_DELIVERY: &str = "INSERT INTO deliveries (run_id, sink, body) \
     VALUES ($1, $2, $3::text::jsonb) ON CONFLICT (run_id, sink) DO UPDATE SET body = EXCLUDED.body";
const INSERT_TAG: &str =
    "INSERT INTO run_tags (tag, run_id, ord) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const DELETE_RUN: &str = "DELETE FROM workflow_runs WHERE id = $1";
const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = $1";
const PUT_GROUP: &str =
    "INSERT INTO process_groups (boot, key, body) VALUES ($1, $2, $3::text::jsonb) \
     ON CONFLICT (boot, key) DO UPDATE SET body = EXCLUDED.body";
const DELETE_GROUP: &str = "DELETE FROM process_groups WHERE boot = $1 AND key = $2";

pub(super) const HOLD_SLOT: &str = "INSERT INTO slots (run_id, repo, daemon) VALUES ($1, $2, $3) \
     ON CONFLICT (run_id) DO UPDATE SET repo = EXCLUDED.repo, daemon = EXCLUDED.daemon";
// Wakes the daemons whose runs wait for this repository's slots.
const FREE_SLOT: &str = "WITH freed AS (DELETE FROM slots WHERE run_id = $1 AND daemon = $2 \
     RETURNING repo) SELECT pg_notify('baton_slots', repo) FROM freed";

// A transition of a run this daemon no longer holds fails its batch (see 002_daemons.sql).
const FENCE: &str = "SELECT baton_fence($1, $2)";
// A job's run, unless another daemon started one for it first.
const START_JOB: &str = "SELECT baton_job_once($1, $2)";

pub(super) const STATEMENTS: [&str; 23] = [
    FENCE,
    START_JOB,
    HOLD_SLOT,
    FREE_SLOT,
    INSERT_RUN,
    UPDATE_HEAD,
    UPDATE_UNFINISHED,
    INSERT_EVENT,
    UPSERT_STEP,
    SET_TIMER,
    CLEAR_TIMER,
    INSERT_SUBJECT,
    UPSERT_JOB,
    INSERT_DEFINITION,
    CLEAR_LATEST,
    SET_LATEST,
    INSERT_CHANGE,
    UPSERT_DELIVERY,
    INSERT_TAG,
    DELETE_RUN,
    DELETE_JOB,
    PUT_GROUP,
    DELETE_GROUP,
];

/// One statement to run, with owned parameters.
pub(super) struct Statement {
    pub(super) sql: &'static str,
    pub(super) params: Vec<Box<dyn ToSql + Sync + Send>>,
}

fn stmt(sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Statement {
    Statement { sql, params }
}

/// A record's JSON as `jsonb` takes it. Records are JSON the engine encoded, so UTF-8; but
/// `jsonb` refuses the NUL character (`\u0000`), which a step's output may hold (`find
/// -print0`): it becomes U+FFFD, as bytes that are not UTF-8 already do.
fn utf8(bytes: Vec<u8>) -> String {
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if !text.contains("\\u0000") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // Any other escape (`\\` among them) is two characters at least: keep them.
            let len = escape.chars().take(2).map(char::len_utf8).sum::<usize>();
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    out
}

/// The statements of one operation, in the order they must run (a run's row before the rows
/// that refer to it).
pub(super) fn statements(op: Op, boot: &str, daemon: &str, out: &mut Vec<Statement>) {
    match op {
        Op::Definition {
            id,
            digest,
            json,
            provenance,
        } => {
            out.push(stmt(
                INSERT_DEFINITION,
                vec![
                    Box::new(id.clone()),
                    Box::new(digest.clone()),
                    Box::new(utf8(json)),
                    Box::new(utf8(provenance)),
                ],
            ));
            out.push(stmt(
                CLEAR_LATEST,
                vec![Box::new(id.clone()), Box::new(digest.clone())],
            ));
            out.push(stmt(SET_LATEST, vec![Box::new(id), Box::new(digest)]));
        }
        Op::StartRun {
            head,
            event: (seq, event),
            subjects,
            job,
        } => {
            out.push(stmt(
                INSERT_RUN,
                vec![
                    Box::new(head.id.clone()),
                    Box::new(head.workflow_id),
                    Box::new(head.status.as_str().to_string()),
                    Box::new(utf8(head.json)),
                    Box::new(daemon.to_string()),
                ],
            ));
            out.push(stmt(
                INSERT_EVENT,
                vec![
                    Box::new(head.id.clone()),
                    Box::new(seq as i64),
                    Box::new(utf8(event)),
                ],
            ));
            for name in subjects {
                out.push(stmt(
                    INSERT_SUBJECT,
                    vec![Box::new(name), Box::new(head.id.clone())],
                ));
            }
            if let Some((id, json)) = job {
                out.push(stmt(START_JOB, vec![Box::new(id), Box::new(utf8(json))]));
            }
        }
        Op::Transition(t) => {
            let (reopened, finished) = (t.reopened(), t.finished());
            out.push(stmt(
                FENCE,
                vec![Box::new(t.run.clone()), Box::new(daemon.to_string())],
            ));
            for (seq, json) in t.events {
                out.push(stmt(
                    INSERT_EVENT,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(seq as i64),
                        Box::new(utf8(json)),
                    ],
                ));
            }
            for (idx, json) in t.steps {
                out.push(stmt(
                    UPSERT_STEP,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(idx as i32),
                        Box::new(utf8(json)),
                    ],
                ));
            }
            for (due, timer) in t.set_timers {
                out.push(stmt(
                    SET_TIMER,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(timer as i64),
                        Box::new(due as i64),
                    ],
                ));
            }
            for (_, timer) in t.cleared_timers {
                out.push(stmt(
                    CLEAR_TIMER,
                    vec![Box::new(t.run.clone()), Box::new(timer as i64)],
                ));
            }
            let unfinished = !t.status.is_terminal();
            if let Some(head) = t.head {
                out.push(stmt(
                    UPDATE_HEAD,
                    vec![
                        Box::new(t.run),
                        Box::new(t.status.as_str().to_string()),
                        Box::new(utf8(head)),
                        Box::new(unfinished),
                    ],
                ));
            } else if reopened || finished {
                out.push(stmt(
                    UPDATE_UNFINISHED,
                    vec![Box::new(t.run), Box::new(unfinished)],
                ));
            }
        }
        Op::Change { seq, json, .. } => {
            out.push(stmt(
                INSERT_CHANGE,
                vec![Box::new(utf8(json)), Box::new(seq as i64)],
            ));
        }
        Op::Job { id, json } => {
            out.push(stmt(UPSERT_JOB, vec![Box::new(id), Box::new(utf8(json))]));
        }
        Op::Delivery { run, sink, json } => out.push(stmt(
            UPSERT_DELIVERY,
            vec![Box::new(run), Box::new(sink), Box::new(utf8(json))],
        )),
        Op::Tag { tag, run, order } => out.push(stmt(
            INSERT_TAG,
            vec![Box::new(tag), Box::new(run), Box::new(order as i64)],
        )),
        Op::DeleteRun { id, job_id, .. } => {
            // Events, steps, changes, timers, subjects, tags and deliveries go with the row.
            out.push(stmt(DELETE_RUN, vec![Box::new(id)]));
            if let Some(job) = job_id {
                out.push(stmt(DELETE_JOB, vec![Box::new(job)]));
            }
        }
        Op::Slot {
            run,
            repo: Some(repo),
        } => out.push(stmt(
            HOLD_SLOT,
            vec![Box::new(run), Box::new(repo), Box::new(daemon.to_string())],
        )),
        Op::Slot { run, repo: None } => out.push(stmt(
            FREE_SLOT,
            vec![Box::new(run), Box::new(daemon.to_string())],
        )),
        Op::ProcessGroup { key, json } => out.push(match json {
            Some(json) => stmt(
                PUT_GROUP,
                vec![
                    Box::new(boot.to_string()),
                    Box::new(key),
                    Box::new(utf8(json)),
                ],
            ),
            None => stmt(
                DELETE_GROUP,
                vec![Box::new(boot.to_string()), Box::new(key)],
            ),
        }),
    }
}
