//! Every process baton spawns runs in a process group of its own, recorded durably in the
//! `process_groups` tree, so that a daemon killed with `kill -9` leaves nothing running once it
//! is started again: at most one copy of a step's command runs at any time, across crashes.
//!
//! # One spawn, in order ([`spawn`])
//!
//! 1. A long-lived spawner thread forks the child (see "PR_SET_PDEATHSIG" below for why a
//!    thread of our own).
//! 2. In the child, before `exec`: its own process group (`setpgid(0, 0)`),
//!    `PR_SET_PDEATHSIG = SIGKILL`, a check that its parent has not died already, then it writes
//!    its pid to a pipe and blocks reading a second pipe, the gate.
//! 3. The caller reads the pid and the child's start time (`/proc/<pid>/stat`, field 22) and
//!    commits a record `{pgid, start, session, boot id, owner, recorder}` through the store's
//!    group commit: when `commit` returns, the record is on disk.
//! 4. Only then does the caller open the gate, and the child `exec`s the command.
//! 5. When the [`Group`] handle is dropped (the command ended, timed out, was cancelled, or its
//!    task panicked), the whole group gets SIGKILL and its record is removed.
//!
//! The step's `step_started` event is durable before its action runs at all (the run actor
//! commits, then spawns the step actor), so the order across a step is: step started (durable)
//! → fork → group record (durable) → exec. The command cannot do anything that is not covered
//! by a durable record. A crash between 1 and 4 leaves a child that never reached `exec`: it
//! dies by PR_SET_PDEATHSIG, and reads end-of-file at the gate in any case.
//!
//! # At start-up ([`reap_leftovers`], from `Engine::open`, before any run resumes)
//!
//! Records left by a baton process that no longer lives are groups of a crashed daemon. Each is
//! killed, member by member, and waited for; only members proven to be of that group are hit:
//! - the record's boot id must be this boot's (start times count from boot);
//! - if the leader (pid = pgid) lives, its start time must be the recorded one: a different
//!   start time means the pid was reused, and the kernel does not reuse a pid while a group of
//!   that number has members, so the old group is gone;
//! - if the leader is gone (PR_SET_PDEATHSIG kills it with the daemon, so this is the usual
//!   case) its members keep the number allocated; a member counts only if its process group
//!   and session are the recorded ones and it started no earlier than the leader.
//!
//! Each member is signalled through a pidfd opened, then checked again, so a pid that exits and
//! is reused between the check and the signal is never hit.
//!
//! # PR_SET_PDEATHSIG
//!
//! The signal is sent when the *thread* that forked the child exits, not the process. tokio
//! spawns on whichever thread polls the future: a `spawn_blocking` thread exits after 10 s idle
//! and would kill a long build. So children are forked by [`SPAWNERS`] threads that never exit:
//! the signal then fires exactly when the process dies, `kill -9` included. It reaches the
//! direct child only; its descendants are what the start-up reap is for.

use std::collections::HashSet;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::clock::{now_ms, Millis};
use crate::store::{encode, Batch, Op, Store};

/// A process group as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupRecord {
    /// The group (its leader's pid).
    pub pgid: i32,
    /// The leader's start time, clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
    /// The leader's session.
    pub session: i32,
    /// `/proc/sys/kernel/random/boot_id`: start times mean nothing across a reboot.
    pub boot: String,
    /// What it runs for: `run/step/attempt`, or a label such as `git`.
    pub owner: String,
    /// The baton process that spawned it, and that process's start time.
    pub by_pid: i32,
    /// See `by_pid`.
    pub by_start: u64,
    /// When it was recorded.
    pub at: Millis,
}

fn key(pgid: i32, start: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&pgid.to_be_bytes());
    k.extend_from_slice(&start.to_be_bytes());
    k
}

/// The registry of one store. The engine holds it; spawns find it through [`scope`] or, outside
/// a step, as the process's most recently opened registry.
pub struct ProcessGroups {
    store: Arc<dyn Store>,
    /// The groups of its live `Group` handles.
    live: Mutex<std::collections::HashSet<i32>>,
}

fn installed() -> &'static Mutex<Vec<Weak<ProcessGroups>>> {
    static INSTALLED: OnceLock<Mutex<Vec<Weak<ProcessGroups>>>> = OnceLock::new();
    INSTALLED.get_or_init(|| Mutex::new(Vec::new()))
}

impl ProcessGroups {
    /// The registry of `store`, made the process's default. Held weakly there, so dropping
    /// the engine still closes the store.
    pub(crate) fn install(store: Arc<dyn Store>) -> Arc<ProcessGroups> {
        let groups = Arc::new(ProcessGroups {
            store,
            live: Mutex::default(),
        });
        let mut all = installed().lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&groups));
        groups
    }

    /// Kills every group of this registry's live handles now (their records go when the
    /// handles drop): for an engine stopping while some step did not.
    pub(crate) fn kill_all(&self) {
        for pgid in self.live.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill_group(*pgid);
        }
    }

    /// The records, as stored.
    pub fn records(&self) -> crate::Result<Vec<GroupRecord>> {
        Ok(decode_records(&*self.store)?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }
}

tokio::task_local! {
    static SCOPE: (Arc<ProcessGroups>, String);
}

/// Runs `fut` with spawns inside it recorded in `groups` under `owner` (the step actor wraps
/// each attempt so). Work moved to another task falls back to the process's default registry.
pub async fn scope<F: std::future::Future>(
    groups: Arc<ProcessGroups>,
    owner: String,
    fut: F,
) -> F::Output {
    SCOPE.scope((groups, owner), fut).await
}

fn current(label: &str) -> Option<(Arc<ProcessGroups>, String)> {
    if let Ok(found) = SCOPE.try_with(|(g, o)| (g.clone(), format!("{o} {label}"))) {
        return Some(found);
    }
    let all = installed().lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .rev()
        .find_map(Weak::upgrade)
        .map(|g| (g, label.to_string()))
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `Z` for a zombie (dead, not yet reaped).
    pub state: char,
    /// Field 5.
    pub pgrp: i32,
    /// Field 6.
    pub session: i32,
    /// Field 22.
    pub start: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn self_start() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(|| stat(std::process::id() as i32).map_or(0, |s| s.start))
}

/// A spawned command's process group. Dropping it kills the group and forgets its record.
pub struct Group {
    /// The child (the group's leader).
    pub child: Child,
    pgid: i32,
    record: Option<(Weak<ProcessGroups>, Vec<u8>)>,
}

impl Group {
    /// The process group id (the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Kills the whole group now (the record goes when the handle is dropped).
    pub fn kill(&self) {
        kill_group(self.pgid);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pgid);
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pgid);
        if let Some(groups) = self.record.as_ref().and_then(|(w, _)| w.upgrade()) {
            let mut live = groups.live.lock().unwrap_or_else(|e| e.into_inner());
            live.remove(&self.pgid);
        }
        forget(self.record.take());
    }
}

/// The groups of this process's live `Group` handles.
fn live() -> &'static Mutex<std::collections::HashSet<i32>> {
    static LIVE: OnceLock<Mutex<std::collections::HashSet<i32>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// Kills every process group this process spawned and still holds, grandchildren included:
/// for a daemon about to stop because another may now run its steps (`PR_SET_PDEATHSIG`
/// reaches only a group's leader).
pub(crate) fn kill_every_group() {
    for pgid in live().lock().unwrap_or_else(|e| e.into_inner()).iter() {
        kill_group(*pgid);
    }
}

/// Kills a group we spawned. (The leader may already be reaped: its number cannot be handed to
/// another group before the kernel has gone once round every pid, far longer than this takes.)
fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Removes a record without waiting for the disk: the next group commit makes it durable, and
/// a record that outlives its group is harmless (the start-up reap checks identity).
fn forget(record: Option<(Weak<ProcessGroups>, Vec<u8>)>) {
    if let Some(groups) = record.and_then(|(w, k)| w.upgrade().map(|g| (g, k))) {
        let (groups, key) = groups;
        groups.store.forget_process_group(&key);
    }
}

/// Spawns `cmd` in a process group of its own, recorded before it execs (see the module docs).
/// `label` says what it is (`git`, `verify`, `sh`) beside the step that runs it.
pub async fn spawn(mut cmd: Command, label: &str) -> io::Result<Group> {
    let registry = current(label);
    let (pid_read, pid_write) = pipe()?;
    let (gate_read, gate_write) = pipe()?;
    let parent = std::process::id() as i32;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, getpid, write, read); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || before_exec(parent, pid_write.as_raw_fd(), gate_read.as_raw_fd()));
    }
    let (reply, spawned) = oneshot::channel();
    spawner().send(SpawnJob {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    })?;
    let mut spawned = spawned;
    let mut pid_pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pid_read)?;
    let mut pid_bytes = [0u8; 4];
    tokio::select! {
        read = pid_pipe.read_exact(&mut pid_bytes) => { read?; }
        // The spawn failed before the child reached the gate (fork, chdir, …).
        result = &mut spawned => return Err(match result {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => io::Error::other("the child ran past its gate"),
            Err(_) => io::Error::other("the spawner thread is gone"),
        }),
    }
    let pgid = i32::from_ne_bytes(pid_bytes);
    let mut group_guard = Pending { pgid, record: None };
    if let Some((groups, owner)) = registry {
        let leader = stat(pgid).ok_or_else(|| io::Error::other("the child vanished"))?;
        let rec = GroupRecord {
            pgid,
            start: leader.start,
            session: leader.session,
            boot: boot_id(),
            owner,
            by_pid: parent,
            by_start: self_start(),
            at: now_ms(),
        };
        let k = key(pgid, rec.start);
        groups
            .store
            .commit(Batch::of(Op::ProcessGroup {
                key: k.clone(),
                json: Some(encode(&rec)),
            }))
            .await
            .map_err(|e| io::Error::other(format!("cannot record the process group: {e}")))?;
        group_guard.record = Some((Arc::downgrade(&groups), k));
    }
    // Open the gate: the child execs now that its group is on disk.
    std::fs::File::from(gate_write).write_all(&[1])?;
    let child = match spawned.await {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::other("the spawner thread is gone")),
    };
    let record = group_guard.record.take();
    std::mem::forget(group_guard);
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pgid);
    if let Some(groups) = record.as_ref().and_then(|(w, _)| w.upgrade()) {
        let mut live = groups.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(pgid);
    }
    Ok(Group {
        child,
        pgid,
        record,
    })
}

/// A group whose child is not in our hands yet: dropped (the caller's future was), it goes.
struct Pending {
    pgid: i32,
    record: Option<(Weak<ProcessGroups>, Vec<u8>)>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        kill_group(self.pgid);
        forget(self.record.take());
    }
}

/// Like `Command::output`, through [`spawn`]; stdin is null.
pub async fn output(mut cmd: Command, label: &str) -> io::Result<std::process::Output> {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = spawn(cmd, label).await?;
    let mut stdout = group.child.stdout.take();
    let mut stderr = group.child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_out = async {
        if let Some(s) = stdout.as_mut() {
            s.read_to_end(&mut out).await?;
        }
        io::Result::Ok(())
    };
    let read_err = async {
        if let Some(s) = stderr.as_mut() {
            s.read_to_end(&mut err).await?;
        }
        io::Result::Ok(())
    };
    let (status, r1, r2) = tokio::join!(group.child.wait(), read_out, read_err);
    r1?;
    r2?;
    Ok(std::process::Output {
        status: status?,
        stdout: out,
        stderr: err,
    })
}

/// In the child, between fork and exec. Async-signal-safe only.
fn before_exec(parent: i32, pid_write: i32, gate_read: i32) -> io::Result<()> {
    // SAFETY: plain system calls on integers and a stack buffer.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // If the parent died before the prctl, the signal will never come: stop here.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let pid = libc::getpid().to_ne_bytes();
        if libc::write(pid_write, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(gate_read, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                return Ok(());
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // End of file: the caller gave up (its record could not be written, or it was
            // dropped). Do not run the command.
            return Err(io::Error::from_raw_os_error(libc::ECANCELED));
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

struct SpawnJob {
    cmd: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Threads that fork every child and never exit (see "PR_SET_PDEATHSIG" above). Several, so
/// that one child waiting at its gate for a commit does not hold up the others' spawns.
const SPAWNERS: usize = 4;

struct Spawner(Mutex<mpsc::Sender<SpawnJob>>);

impl Spawner {
    fn send(&self, job: SpawnJob) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| io::Error::other("the spawner threads are gone"))
    }
}

fn spawner() -> &'static Spawner {
    static SPAWNER: OnceLock<Spawner> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..SPAWNERS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("baton-spawn-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let SpawnJob {
                        mut cmd,
                        runtime,
                        reply,
                    } = job;
                    let _enter = runtime.enter();
                    let result = cmd.spawn();
                    // Close our ends of the pipes (held by the pre_exec closure) and any pipe
                    // ends the caller handed the child, so end-of-file can come.
                    drop(cmd);
                    let _ = reply.send(result);
                })
                .expect("start a spawner thread");
        }
        Spawner(Mutex::new(tx))
    })
}

/// What the start-up reap did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReapReport {
    /// Records of dead baton processes, examined.
    pub examined: usize,
    /// Processes killed.
    pub killed: usize,
    /// Processes still alive when the reap gave up waiting (stuck in the kernel).
    pub survivors: Vec<i32>,
}

/// Live members of a recorded group, proven by identity (see the module docs).
fn members(rec: &GroupRecord) -> Vec<i32> {
    let leader = stat(rec.pgid).filter(|s| s.state != 'Z');
    if let Some(leader) = leader {
        if leader.start != rec.start {
            return Vec::new(); // the pid was reused: the group is gone
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| is_member(rec, pid, &s)))
        .collect()
}

fn is_member(rec: &GroupRecord, pid: i32, s: &Stat) -> bool {
    s.state != 'Z'
        && s.pgrp == rec.pgid
        && s.session == rec.session
        && if pid == rec.pgid {
            s.start == rec.start
        } else {
            s.start >= rec.start
        }
}

/// Sends SIGKILL to `pid` if it is still the member it was, through a pidfd so that the pid
/// cannot be reused between the check and the signal.
fn kill_member(rec: &GroupRecord, pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the descriptor was just returned to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !stat(pid).is_some_and(|s| is_member(rec, pid, &s)) {
        return false;
    }
    // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    sent == 0
}

/// The stored records; one that cannot be read is reported and skipped.
fn decode_records(store: &dyn Store) -> crate::Result<Vec<(Vec<u8>, GroupRecord)>> {
    let mut out = Vec::new();
    for (key, value) in store.process_groups()? {
        match serde_json::from_value(value) {
            Ok(rec) => out.push((key, rec)),
            Err(e) => tracing::error!("a process group record cannot be read: {e}; skipped"),
        }
    }
    Ok(out)
}

/// Kills what is left of the groups of dead baton processes and waits for it to go, then drops
/// their records (durably). Groups recorded by a live process are left to it.
pub(crate) async fn reap_leftovers(store: &dyn Store) -> crate::Result<ReapReport> {
    let mut report = ReapReport::default();
    let boot = boot_id();
    let mut done = Vec::new();
    let mut leftovers = Vec::new();
    for (k, rec) in decode_records(store)? {
        let recorder_lives = stat(rec.by_pid).is_some_and(|s| s.start == rec.by_start);
        if recorder_lives && rec.boot == boot {
            continue;
        }
        report.examined += 1;
        if rec.boot == boot {
            leftovers.push(rec);
        }
        done.push(k);
    }
    let (killed, survivors) = tokio::task::spawn_blocking(move || kill_all(&leftovers))
        .await
        .unwrap_or((0, Vec::new()));
    report.killed = killed;
    report.survivors = survivors;
    for pid in &report.survivors {
        tracing::error!("process {pid} of a previous daemon survived SIGKILL");
    }
    let mut batch = Batch::new();
    for key in done {
        batch.push(Op::ProcessGroup { key, json: None });
    }
    store.commit(batch).await?;
    Ok(report)
}

fn kill_all(leftovers: &[GroupRecord]) -> (usize, Vec<i32>) {
    let mut killed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut alive = Vec::new();
        for rec in leftovers {
            for pid in members(rec) {
                if kill_member(rec, pid) && killed.insert(pid) {
                    tracing::warn!(
                        "killed process {pid} (group {}) left by a previous daemon for {}",
                        rec.pgid,
                        rec.owner
                    );
                }
                alive.push(pid);
            }
        }
        if alive.is_empty() {
            return (killed.len(), Vec::new());
        }
        if Instant::now() > deadline {
            return (killed.len(), alive);
        }
        // SIGKILL is delivered at once, but dying takes a moment; look again until none is left.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_this_process() {
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.start > 0);
        // SAFETY: getpgrp and getsid have no preconditions.
        assert_eq!(me.pgrp, unsafe { libc::getpgrp() });
        assert_eq!(me.session, unsafe { libc::getsid(0) });
        assert!(stat(i32::MAX).is_none());
    }
}
