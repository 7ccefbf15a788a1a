//! The PostgreSQL store under what a server does to its clients: one bad batch in a group
//! commit fails alone, and a connection the server drops is replaced without losing a commit.

use baton_actors::record::{Event, EventKind, RunRecord};
use baton_actors::store::postgres::{scratch_database, PgConfig, PgStore};
use baton_actors::store::{Batch, Op, Store, Transition};
use baton_actors::RunStatus;

#[path = "../../tests/require/mod.rs"]
mod require;

fn open(dir: &std::path::Path) -> Option<(PgStore, String)> {
    let Ok(admin) = std::env::var("BATON_TEST_DATABASE_URL") else {
        require::missing(
            "a PostgreSQL server (BATON_TEST_DATABASE_URL)",
            "scripts/postgres.sh starts a throwaway cluster",
        );
        return None;
    };
    let url = scratch_database(&admin, "baton_test").unwrap();
    let store = PgStore::open(
        dir,
        &PgConfig {
            url,
            pool_size: 3,
            lease: std::time::Duration::from_secs(15),
        },
    )
    .unwrap();
    Some((store, admin))
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
    assert!(err.contains("foreign key"), "{err}");
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
