//! Memory, process count and file size of one sandboxed command.
//!
//! Bounded by a cgroup of the command's own where this process may create one (cgroup v2, or
//! v1's `pids` and `memory` hierarchies), which also counts what the command's children start
//! and lets every process of it be killed at the end. Always also by rlimits set in the child
//! before `exec`: `RLIMIT_FSIZE`, `RLIMIT_CORE`, `RLIMIT_NPROC` (which the kernel does not
//! enforce for root: a daemon running as root needs the pids cgroup), and `RLIMIT_DATA` for
//! memory where no memory cgroup exists (`RLIMIT_AS` would stop V8 and the JVM, which reserve
//! far more address space than they use).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::Settings;

/// The bounds of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (resident, with the command's tmpfs files).
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub processes: u64,
    /// Largest file written, in bytes.
    pub file_size_bytes: u64,
}

impl Limits {
    /// From `[sandbox]`.
    pub fn from_settings(s: &Settings) -> Self {
        Limits {
            memory_bytes: s.memory_mb.saturating_mul(1 << 20),
            processes: s.processes,
            file_size_bytes: s.file_size_mb.saturating_mul(1 << 20),
        }
    }
}

/// How this machine lets us bound a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// A cgroup v2 directory under which children can be made, with pids and memory.
    V2 { parent: PathBuf },
    /// cgroup v1 `pids` (and `memory`, when writable) hierarchies.
    V1 {
        pids: PathBuf,
        memory: Option<PathBuf>,
    },
    /// Only rlimits.
    Rlimits,
}

impl Mechanism {
    /// Found once per process, by making (and removing) a cgroup.
    pub fn detect() -> Mechanism {
        static M: OnceLock<Mechanism> = OnceLock::new();
        M.get_or_init(detect_uncached).clone()
    }

    /// For the start-up line and `/healthz`.
    pub fn describe(&self) -> String {
        let root = unsafe { libc::geteuid() } == 0;
        match self {
            Mechanism::V2 { .. } => "cgroup v2 (memory, processes)".into(),
            Mechanism::V1 {
                memory: Some(_), ..
            } => "cgroup v1 (memory, processes)".into(),
            Mechanism::V1 { memory: None, .. } => {
                "cgroup v1 (processes), rlimits (memory)".into()
            }
            Mechanism::Rlimits if root => {
                "rlimits (memory, file size); process count NOT bounded (root without a writable pids cgroup)".into()
            }
            Mechanism::Rlimits => "rlimits (memory, processes, file size)".into(),
        }
    }
}

/// This process's cgroup path for `controller` (v1) or the unified one (`controller` empty).
fn own_cgroup(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// `mount` joined with our own cgroup path if that exists there (no cgroup namespace), else
/// the mount itself (a cgroup namespace makes our cgroup its root).
fn under(mount: &Path, own: &str) -> PathBuf {
    let joined = mount.join(own.trim_start_matches('/'));
    if joined.is_dir() {
        joined
    } else {
        mount.to_path_buf()
    }
}

fn try_child(parent: &Path, must_have: &[&str]) -> bool {
    let child = parent.join(format!("baton-sandbox-probe-{}", std::process::id()));
    let made = std::fs::create_dir(&child).is_ok();
    let ok = made && must_have.iter().all(|f| child.join(f).exists());
    if made {
        let _ = std::fs::remove_dir(&child);
    }
    ok
}

fn detect_uncached() -> Mechanism {
    // cgroup v2: the unified hierarchy, at /sys/fs/cgroup or (hybrid) /sys/fs/cgroup/unified.
    if let Some(own) = own_cgroup("") {
        for mount in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let mount = Path::new(mount);
            if !mount.join("cgroup.controllers").exists() {
                continue;
            }
            let parent = under(mount, &own);
            if try_child(&parent, &["pids.max", "memory.max"]) {
                return Mechanism::V2 { parent };
            }
        }
    }
    let v1 = |controller: &str, file: &str| {
        let own = own_cgroup(controller)?;
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        mount.join("cgroup.procs").exists().then_some(())?;
        let parent = under(&mount, &own);
        try_child(&parent, &[file]).then_some(parent)
    };
    if let Some(pids) = v1("pids", "pids.max") {
        return Mechanism::V1 {
            pids,
            memory: v1("memory", "memory.limit_in_bytes"),
        };
    }
    Mechanism::Rlimits
}

/// The cgroups made for one job; on drop every process still in them is killed and they go.
pub(crate) struct Confinement {
    limits: Limits,
    groups: Vec<PathBuf>,
    /// `cgroup.procs` of each group, open for the child to write itself into.
    procs: Vec<File>,
    memory_by_cgroup: bool,
    processes_by_cgroup: bool,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Confinement {
    pub fn new(limits: &Limits) -> Result<Self, String> {
        let mut c = Confinement {
            limits: *limits,
            groups: Vec::new(),
            procs: Vec::new(),
            memory_by_cgroup: false,
            processes_by_cgroup: false,
        };
        let name = format!(
            "baton-sandbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match Mechanism::detect() {
            Mechanism::V2 { parent } => {
                let dir = c.make(&parent, &name)?;
                write(&dir.join("pids.max"), &limits.processes.to_string())?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // No swap: the memory limit is the limit.
                let _ = write(&dir.join("memory.swap.max"), "0");
                c.memory_by_cgroup = true;
                c.processes_by_cgroup = true;
            }
            Mechanism::V1 { pids, memory } => {
                let dir = c.make(&pids, &name)?;
                write(&dir.join("pids.max"), &limits.processes.to_string())?;
                c.processes_by_cgroup = true;
                if let Some(memory) = memory {
                    let dir = c.make(&memory, &name)?;
                    write(
                        &dir.join("memory.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    )?;
                    let _ = write(
                        &dir.join("memory.memsw.limit_in_bytes"),
                        &limits.memory_bytes.to_string(),
                    );
                    c.memory_by_cgroup = true;
                }
            }
            Mechanism::Rlimits => {}
        }
        Ok(c)
    }

    fn make(&mut self, parent: &Path, name: &str) -> Result<PathBuf, String> {
        sweep_stale(parent);
        let dir = parent.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        self.groups.push(dir.clone());
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))?;
        self.procs.push(procs);
        Ok(dir)
    }

    pub fn mechanism(&self) -> &'static str {
        match (self.processes_by_cgroup, self.memory_by_cgroup) {
            (true, true) => "cgroup",
            (true, false) => "cgroup (processes), rlimits (memory)",
            _ => "rlimits",
        }
    }

    /// What the child does between fork and exec.
    pub fn hook(&self) -> Hook {
        let mut fds = [-1; 2];
        for (slot, f) in fds.iter_mut().zip(&self.procs) {
            *slot = f.as_raw_fd();
        }
        Hook {
            cgroup_procs: fds,
            file_size: self.limits.file_size_bytes,
            processes: self.limits.processes,
            data: (!self.memory_by_cgroup).then_some(self.limits.memory_bytes),
        }
    }
}

impl Drop for Confinement {
    fn drop(&mut self) {
        // Normally empty already (the pid namespace's init died and took the rest); anything
        // left is killed, then the group is removed once its last process is reaped. That can
        // take longer than a caller should wait (a process in uninterruptible sleep), so what
        // is still there after a moment is left to a thread that keeps trying.
        let groups = std::mem::take(&mut self.groups);
        let left: Vec<PathBuf> = groups
            .into_iter()
            .rev()
            .filter(|dir| !remove_group(dir, 5))
            .collect();
        if !left.is_empty() {
            let _ = std::thread::Builder::new()
                .name("baton-cgroup-reaper".into())
                .spawn(move || {
                    for dir in left {
                        if !remove_group(&dir, 150) {
                            tracing::warn!(cgroup = %dir.display(), "a sandbox cgroup could not be removed after 30 s; it is swept when the next job starts after this process ends");
                        }
                    }
                });
        }
    }
}

/// Kills what is in the cgroup `dir` and removes it, trying `tries` times 200 ms apart at
/// most; whether it is gone.
fn remove_group(dir: &Path, tries: u32) -> bool {
    for attempt in 0..tries {
        let pids = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: sends a signal; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(if attempt < 5 { 10 } else { 200 }));
    }
    false
}

/// Removes the groups that processes which have since ended left under `parent` (a daemon
/// killed with `kill -9` cannot clean up): `baton-sandbox-<pid>-<n>` whose pid is gone. Each
/// parent is swept once per process.
fn sweep_stale(parent: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if swept.iter().any(|p| p == parent) {
            return;
        }
        swept.push(parent.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("baton-sandbox-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            remove_group(&entry.path(), 3);
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("cannot write {value} to {}: {e}", path.display()))
}

/// The child's part: plain values and descriptors, usable after `fork`.
#[derive(Clone, Copy)]
pub(crate) struct Hook {
    cgroup_procs: [RawFd; 2],
    file_size: u64,
    processes: u64,
    data: Option<u64>,
}

impl Hook {
    /// Joins the cgroups and sets the rlimits. Only async-signal-safe calls, no allocation.
    pub fn apply(&self) -> std::io::Result<()> {
        for fd in self.cgroup_procs {
            if fd >= 0 {
                // "0" moves the writing process (v1 and v2).
                // SAFETY: write(2) of a static buffer to a descriptor we hold open.
                let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        set(libc::RLIMIT_FSIZE, self.file_size)?;
        set(libc::RLIMIT_CORE, 0)?;
        set(libc::RLIMIT_NPROC, self.processes)?;
        if let Some(bytes) = self.data {
            set(libc::RLIMIT_DATA, bytes)?;
        }
        Ok(())
    }
}

fn set(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit with a valid struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
