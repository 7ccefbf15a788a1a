//! The PostgreSQL store under what a server does to its clients: one bad batch in a group
//! commit fails alone, and a connection the server drops is replaced without losing a commit.
#![cfg(feature = "postgres")]

use baton_actors::record::{Event, EventKind, RunRecord};
use baton_actors::store::postgres::{scratch_database, PgConfig, PgStore};
use baton_actors::store::{Batch, Op, Store, Transition};
use baton_actors::RunStatus;

use crate::require;

fn open(dir: &std::path::Path) -> Option<(PgStore, String)> {
    let Ok(admin) = std::env::var("BATON_TEST_DATABASE_URL") else {
        require::missing(
            "a PostgreSQL server (BATON_TEST_DATABASE_URL)",
            "scripts/postgres.sh starts a throwaway cluster",
        );
        return None;
    };
    let url = scratch_database(&admin, "baton_test").unwrap();
    Some((open_at(dir, &url), admin))
}

/// Another daemon (data dir `dir`) on the database at `url`.
fn open_at(dir: &std::path::Path, url: &str) -> PgStore {
    let config = PgConfig {
        url: url.to_string(),
        pool_size: 3,
        lease: std::time::Duration::from_secs(15),
    };
    PgStore::open(dir, &config).unwrap()
}

fn transition(run: &str, seq: u64) -> Batch {
    Batch::of(Op::Transition(Transition {
        run: run.into(),
        workflow_id: "w".into(),
        before: RunStatus::Running,
        status: RunStatus::Running,
        events: vec![(seq, b"{}".to_vec())],
        steps: Vec::new(),
        set_timers: Vec::new(),
        cleared_timers: Vec::new(),
        head: None,
        index_exact: false,
    }))
}

fn start(id: &str) -> Batch {
    let mut rec = RunRecord::new(id.into(), std::iter::empty(), 1);
    rec.workflow_id = "w".into();
    let event = Event {
        run: id.into(),
        seq: 1,
        at: 1,
        kind: EventKind::RunStarted,
    };
    let mut batch = Batch::new();
    batch.start_run(&rec, &event, None);
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_fails_alone_and_a_dropped_connection_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((store, admin)) = open(dir.path()) else {
        return;
    };
    // A transition of a run that does not exist breaks a foreign key; sent in the same
    // moment as a good start, they share a group commit.
    let bad = Batch::of(Op::Transition(Transition {
        run: "run_missing".into(),
        workflow_id: "w".into(),
        before: RunStatus::Running,
        status: RunStatus::Running,
        events: vec![(2, b"{}".to_vec())],
        steps: Vec::new(),
        set_timers: Vec::new(),
        cleared_timers: Vec::new(),
        head: None,
        index_exact: false,
    }));
    let bad = store.commit(bad);
    let good = store.commit(start("run_a"));
    let (bad, good) = tokio::join!(bad, good);
    let err = bad.unwrap_err().to_string();
    assert!(err.contains("run run_missing does not exist"), "{err}");
    good.unwrap();
    assert_eq!(store.head("run_a").unwrap().unwrap().id, "run_a");
    assert!(store.head("run_missing").unwrap().is_none());

    // The server drops every connection of this database (as a restart would).
    let db = store.describe().rsplit('/').next().unwrap().to_string();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let dropped = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    assert!(!dropped.is_empty(), "nothing connected to {db}");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    store.commit(start("run_b")).await.unwrap();
    assert!(store.head("run_b").unwrap().is_some());
    assert_eq!(store.unfinished().unwrap(), ["run_a", "run_b"]);
}

/// Two daemons on one database: a run is its starter's; another daemon cannot claim it while
/// the starter is live, takes it once the starter's row is gone, and from then on the starter's
/// writes to it fail (fenced) and its renewal says its lease is lost. A daemon restarted on
/// its data dir keeps its name, and a second store on one data dir is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_held_claimed_taken_over_and_fenced() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((a, admin)) = open(a_dir.path()) else {
        return;
    };
    let db = a.describe().rsplit('/').next().unwrap().to_string();
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    let b = open_at(b_dir.path(), &url);
    let (ca, cb) = (a.cluster().unwrap(), b.cluster().unwrap());
    assert_ne!(ca.daemon(), cb.daemon());

    a.commit(start("run_r")).await.unwrap();
    a.commit(transition("run_r", 2)).await.unwrap();
    assert_eq!(cb.claim("run_r").unwrap().as_deref(), Some(ca.daemon()));
    assert_eq!(ca.claim("run_r").unwrap(), None, "its own");
    assert_eq!(cb.adopt(false, 100).unwrap(), Vec::<String>::new());
    let err = b
        .commit(transition("run_r", 3))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("is held by daemon"), "{err}");

    // A second store on a's data dir is refused, naming this process.
    let Err(err) = PgStore::open(
        a_dir.path(),
        &PgConfig {
            url: url.clone(),
            pool_size: 2,
            lease: std::time::Duration::from_secs(15),
        },
    ) else {
        panic!("a second store on one data dir opened");
    };
    assert!(err.to_string().contains("is in use by process"), "{err}");

    // a's lease lapses (as if it froze): b takes its run, a's writes and renewal fail.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE daemons SET lease_until = now() - interval '1 second' WHERE id = $1",
            &[&ca.daemon()],
        )
        .await
        .unwrap();
    assert_eq!(cb.adopt(false, 100).unwrap(), ["run_r"]);
    let err = a
        .commit(transition("run_r", 3))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("daemon") && err.contains("has no live lease"),
        "{err}"
    );
    let err = ca.renew().unwrap_err();
    assert!(
        matches!(err, baton_actors::Error::LeaseLost { .. }),
        "{err}"
    );
    b.commit(transition("run_r", 3)).await.unwrap();
    assert_eq!(ca.claim("run_r").unwrap().as_deref(), Some(cb.daemon()));

    // Let go (b could not load it), it is anyone's: a takeover picks it up.
    cb.release("run_r").unwrap();
    assert_eq!(cb.adopt(false, 100).unwrap(), ["run_r"]);

    // b leaves cleanly: its run is free at once; restarted on its dir, b is the same daemon.
    let name = cb.daemon().to_string();
    cb.leave().unwrap();
    drop(b);
    let b = open_at(b_dir.path(), &url);
    assert_eq!(b.cluster().unwrap().daemon(), name);
    assert_eq!(b.cluster().unwrap().adopt(true, 100).unwrap(), ["run_r"]);
    drop(a);
}

/// A job starts one run across daemons: the same delivery reaching a second daemon, which
/// starts a run of its own for it, fails that start (the engine then answers with the first
/// run); writing the same start again (a commit replayed after a lost connection) is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_starts_one_run_across_daemons() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some((a, admin)) = open(a_dir.path()) else {
        return;
    };
    let db = a.describe().rsplit('/').next().unwrap().to_string();
    let b = open_at(
        b_dir.path(),
        &format!("{}/{db}", admin.rsplit_once('/').unwrap().0),
    );
    let with_job = |run: &str| {
        let mut rec = RunRecord::new(run.into(), std::iter::empty(), 1);
        rec.workflow_id = "w".into();
        let event = Event {
            run: run.into(),
            seq: 1,
            at: 1,
            kind: EventKind::RunStarted,
        };
        let job = baton_actors::store::Job {
            id: "github:delivery-1".into(),
            source: "github".into(),
            run_id: Some(run.into()),
            ..Default::default()
        };
        let mut batch = Batch::new();
        batch.start_run(&rec, &event, Some(&job));
        batch
    };
    a.commit(with_job("run_first")).await.unwrap();
    a.commit(with_job("run_first")).await.unwrap();
    let err = b
        .commit(with_job("run_second"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("job github:delivery-1 already started run run_first"),
        "{err}"
    );
    assert!(
        b.head("run_second").unwrap().is_none(),
        "nothing of it stored"
    );
    let job = b.job("github:delivery-1").unwrap().unwrap();
    assert_eq!(job.run_id.as_deref(), Some("run_first"));
}
