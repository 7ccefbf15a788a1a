//! The process-group registry with real processes: a spawn is recorded with its leader's
//! identity and forgotten when it ends; at open, groups left by a dead process are killed,
//! and a group whose pid was reused, or whose recorder still lives, is not touched.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_actors::procs::{self, stat, GroupRecord};
use baton_actors::store::{Batch, Op, SledStore, Store};
use baton_actors::{Engine, EngineConfig};

/// Whether `pid` is running (a zombie is dead: it runs nothing).
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Waits until `pid` is dead; the kill that precedes this was sent, dying takes a moment.
fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Pids in process group `pgid`, from /proc.
fn members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| stat(p).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

/// A shell in a group of its own that starts two sleepers; returns it once both run.
fn group_with_two_sleepers(
    dir: &std::path::Path,
    name: &str,
    leader_stays: bool,
) -> (std::process::Child, i32) {
    let ready = dir.join(name);
    let script = format!(
        "sleep 60 & sleep 60 & echo ready > {}; {}",
        ready.display(),
        if leader_stays { "wait" } else { "exit 0" }
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "{name} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    if !leader_stays {
        child.wait().unwrap();
    }
    (child, pgid)
}

fn record(pgid: i32, start: u64, session: i32, by_start: u64) -> GroupRecord {
    GroupRecord {
        pgid,
        start,
        session,
        boot: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
            .to_string(),
        owner: "run_x/s/1 sh".into(),
        by_pid: std::process::id() as i32,
        by_start,
        at: 0,
    }
}

fn key(r: &GroupRecord) -> Vec<u8> {
    let mut k = r.pgid.to_be_bytes().to_vec();
    k.extend_from_slice(&r.start.to_be_bytes());
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_kills_leftover_groups_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let me = stat(std::process::id() as i32).unwrap();

    // A leftover whose leader lives, one whose leader is gone (as after PR_SET_PDEATHSIG),
    // one recorded with another start time (its pid was "reused"), one whose recorder lives.
    let (mut with_leader, g1) = group_with_two_sleepers(tmp.path(), "a", true);
    let (_gone, g2) = group_with_two_sleepers(tmp.path(), "b", false);
    let (mut reused, g3) = group_with_two_sleepers(tmp.path(), "c", true);
    let (mut owned, g4) = group_with_two_sleepers(tmp.path(), "d", true);
    let m1 = members(g1);
    let m2 = members(g2);
    assert_eq!(m1.len(), 3, "{m1:?}");
    assert_eq!(
        m2.len(),
        2,
        "the leader of b exited, its two sleepers live: {m2:?}"
    );
    let start = |pid: i32| stat(pid).unwrap().start;
    // A dead recorder: this process's pid with a start time it does not have.
    let dead = me.start + 1;
    // b's leader is gone: its start time is at most that of its children.
    let b_start = m2.iter().map(|&p| start(p)).min().unwrap();
    let records = [
        record(g1, start(g1), me.session, dead),
        record(g2, b_start, me.session, dead),
        record(g3, start(g3) + 1, me.session, dead),
        record(g4, start(g4), me.session, me.start),
    ];
    {
        let store = SledStore::open(&data, 1 << 20).unwrap();
        let mut batch = Batch::new();
        for r in &records {
            batch.push(Op::ProcessGroup {
                key: key(r),
                json: Some(serde_json::to_vec(r).unwrap()),
            });
        }
        store.commit(batch).await.unwrap();
    }

    let engine = Engine::open(&data, EngineConfig::default()).await.unwrap();
    // Open returns once the leftovers are dead.
    for pid in m1.iter().chain(&m2) {
        assert!(!alive(*pid), "{pid} of a dead daemon's group still runs");
    }
    assert_eq!(
        members(g3).len(),
        3,
        "a group whose start time differs is not ours"
    );
    assert_eq!(
        members(g4).len(),
        3,
        "a live recorder's group is its own business"
    );
    let left: Vec<GroupRecord> = engine.process_groups().records().unwrap();
    assert_eq!(
        left,
        vec![records[3].clone()],
        "handled records are dropped"
    );

    let _ = with_leader.wait();
    for (child, g) in [(&mut reused, g3), (&mut owned, g4)] {
        // SAFETY: signals a group this test created.
        unsafe { libc::kill(-g, libc::SIGKILL) };
        let _ = child.wait();
    }
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_is_recorded_with_its_identity_and_forgotten_when_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(tmp.path(), EngineConfig::default())
        .await
        .unwrap();
    let groups = engine.process_groups().clone();
    let marker = tmp.path().join("grandchild");
    let script = format!("sleep 60 & echo $! > {}; wait", marker.display());
    let group = procs::scope(groups.clone(), "run_x/s/1".into(), async {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", &script]);
        procs::spawn(cmd, "sh").await.unwrap()
    })
    .await;
    let pgid = group.pgid();
    let leader = stat(pgid).unwrap();
    assert_eq!(leader.pgrp, pgid, "the child leads a group of its own");
    let recs = groups.records().unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        (
            recs[0].pgid,
            recs[0].start,
            recs[0].session,
            recs[0].owner.as_str()
        ),
        (pgid, leader.start, leader.session, "run_x/s/1 sh")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let grandchild: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the command did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(group);
    assert!(
        wait_dead(grandchild),
        "dropping the handle kills the whole group"
    );
    assert!(groups.records().unwrap().is_empty());

    // A command that cannot start leaves no record behind.
    let missing = tokio::process::Command::new("/nonexistent/baton-test");
    assert!(procs::scope(
        groups.clone(),
        "run_x/s/2".into(),
        procs::spawn(missing, "x")
    )
    .await
    .is_err());
    assert!(groups.records().unwrap().is_empty());
    engine.shutdown().await.unwrap();
}
