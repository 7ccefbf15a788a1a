//! Secrets: where baton's tokens, keys and passwords come from, and where the process holds them.
//!
//! A secret named `NAME` comes from the environment variable `NAME`, or from the file that
//! `NAME_FILE` names (systemd's `LoadCredential=`, a container's mounted secret). [`get`] is the
//! one way to read one. [`init`], first thing in `main`, makes the rest true:
//! - the process is not dumpable, so other processes of its user can read neither its
//!   `/proc/<pid>/environ`, `mem` and `fd` nor attach a debugger to it;
//! - every secret is read once into a table in memory and taken out of the environment, so no
//!   process baton starts inherits one;
//! - when a secret's value was in the environment the process started with, which
//!   `/proc/<pid>/environ` shows for the life of the process whatever is removed later (and
//!   which root reads whether dumpable or not), the process executes itself again without it and
//!   hands the table to the new image through a memfd.
//!
//! Nothing here puts a value in a log, an error or the environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The secrets baton reads itself. Each comes from `NAME` or from the file `NAME_FILE` names,
/// and [`init`] resolves them all at start, so a bad file stops the process there.
pub const KNOWN: &[&str] = &[
    "GITHUB_TOKEN",
    "BATON_GITHUB_APP_KEY",
    "BATON_GITHUB_WEBHOOK_SECRET",
    "BATON_TELEGRAM_TOKEN",
    "TELOXIDE_TOKEN",
    "BATON_TELEGRAM_WEBHOOK_SECRET",
    "BATON_DATABASE_URL",
    "BATON_ADMIN_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
];

/// Other names of a known secret's file: `BATON_GITHUB_TOKEN_FILE`, in baton's own prefix, next
/// to the generic `GITHUB_TOKEN_FILE`.
const FILE_ALIASES: &[(&str, &str)] = &[("GITHUB_TOKEN", "BATON_GITHUB_TOKEN_FILE")];

/// The variable that tells the re-executed image which descriptor holds its secrets. Its value
/// is a number, never a secret.
pub const CHANNEL_VAR: &str = "BATON_SECRETS_FD";

/// The words that make a variable a secret although baton does not know it by name (a
/// workflow's `token_env`, `NPM_TOKEN`, `PGPASSWORD`): a word of its name, split at `_`, that
/// ends in one of these. Matching whole words keeps `TOKENIZERS_PARALLELISM` and
/// `SSH_AUTH_SOCK` (which git over ssh needs) in the environment.
const SECRET_WORD_ENDINGS: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "PASSWD"];

/// Words that make a variable a secret when they are a whole word of its name
/// (`AWS_SECRET_ACCESS_KEY`, `GPG_KEY`, `OPENAI_APIKEY`).
const SECRET_WORDS: &[&str] = &["KEY", "APIKEY"];

/// The table [`init`] filled; `None` in a process that never called it (a test).
static TABLE: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// The files secrets were read from (canonical paths), kept so that no sandbox ever mounts
/// them: a `_FILE` under `/opt/app/secrets` must not come in with `/opt/app` when
/// `/opt/app/bin` is on `PATH`.
static FILES: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The files secrets were read from, in this image or the one that handed them over.
pub fn files() -> Vec<std::path::PathBuf> {
    FILES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn remember_file(path: &std::path::Path) {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if !files.contains(&path) {
        files.push(path);
    }
}

/// Why a secret could not be had. Messages name variables and paths, never a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The variable is set to nothing (or to spaces).
    #[error("{var} is set but empty: give it the secret or unset it")]
    Empty {
        /// The variable.
        var: String,
    },
    /// The file holds nothing (or spaces).
    #[error("{var}: {} is empty: put the secret in it or unset {var}", path.display())]
    EmptyFile {
        /// The `_FILE` variable.
        var: String,
        /// The file it names.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("{var}: cannot read {}: {source}", path.display())]
    Unreadable {
        /// The `_FILE` variable.
        var: String,
        /// The file it names.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or the variable is not UTF-8 text.
    #[error("{source_name} is not UTF-8 text")]
    NotText {
        /// The variable, with its file when the value came from one.
        source_name: String,
    },
    /// Two sources of one secret disagree.
    #[error("{first} and {second} are both set, to different values: set only one")]
    Conflict {
        /// The first source (a variable, or a `_FILE` variable with its path).
        first: String,
        /// The second.
        second: String,
    },
    /// [`CHANNEL_VAR`] names no table this program handed over.
    #[error("{CHANNEL_VAR}={fd}: {message} (it is set only by baton for itself; unset it)")]
    Channel {
        /// The variable's value.
        fd: String,
        /// What is wrong with it.
        message: String,
    },
}

/// This module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The secret `name`: from the table [`init`] filled, else from the environment variable `name`
/// or the file `name_FILE` names (a workflow's `token_env` whose name does not look secret, or a
/// process that did not call [`init`]). `Ok(None)` when none of them is set.
pub fn get(name: &str) -> Result<Option<String>> {
    if let Some(table) = TABLE.get() {
        if let Some(value) = table.get(name) {
            return Ok(Some(value.clone()));
        }
        if KNOWN.contains(&name) {
            // Resolved at start; its variables are gone from the environment since.
            return Ok(None);
        }
    }
    resolve(name, &|var| std::env::var_os(var))
}

/// Whether the secret `name` is given. A source that is set but wrong counts as given, so that
/// the step that reads it with [`get`] reports what is wrong.
pub fn is_set(name: &str) -> bool {
    get(name).map_or(true, |value| value.is_some())
}

/// Makes the process non-dumpable, moves every secret from the environment into the table,
/// and executes the program again when a secret's value was in the initial environment (see
/// the module's documentation). Call it first in `main`, before any thread starts: it changes
/// the environment. Returns warnings for the log, which is not set up yet: a failed `prctl`
/// or re-execution leaves the process running, less protected.
pub fn init() -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if let Err(e) = forbid_dumping() {
        warnings.push(format!(
            "cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {e}"
        ));
    }
    let inherited = match std::env::var_os(CHANNEL_VAR) {
        Some(fd) => {
            std::env::remove_var(CHANNEL_VAR);
            Some(receive(&fd.to_string_lossy())?)
        }
        None => None,
    };
    let env: BTreeMap<String, OsString> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .collect();
    let mut plan = plan(&env)?;
    match inherited {
        Some(inherited) => {
            // The image that handed these over already took them out; executing again could
            // only loop.
            for (name, value) in inherited {
                plan.table.entry(name).or_insert(value);
            }
        }
        None if plan.in_environment => {
            // Returns only when the new image could not be started.
            let e = reexec(&plan);
            warnings.push(format!(
                "cannot execute baton again without its secrets in the environment ({e}): \
                 /proc/{}/environ keeps them, readable by root",
                std::process::id()
            ));
        }
        None => {}
    }
    for var in &plan.remove {
        std::env::remove_var(var);
    }
    let _ = TABLE.set(plan.table);
    Ok(warnings)
}

/// What [`init`] does with an environment; pure, so that it is tested as data.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// The secrets, by name.
    table: BTreeMap<String, String>,
    /// Variables to take out of the environment: the secrets and the `_FILE`s of known ones.
    remove: Vec<String>,
    /// Whether a secret's value (not only a file's name) is in the environment.
    in_environment: bool,
}

fn plan(env: &BTreeMap<String, OsString>) -> Result<Plan> {
    let lookup = |var: &str| env.get(var).cloned();
    let mut plan = Plan::default();
    for &name in KNOWN {
        if let Some(value) = resolve(name, &lookup)? {
            plan.table.insert(name.to_string(), value);
        }
        if env.contains_key(name) {
            plan.remove.push(name.to_string());
            plan.in_environment = true;
        }
        plan.remove
            .extend(file_vars(name).into_iter().filter(|f| env.contains_key(f)));
    }
    // Secrets baton knows only by their look. Their `_FILE`s stay where they are (a path, maybe
    // another tool's) and are read when [`get`] asks for them.
    for (name, value) in env {
        if KNOWN.contains(&name.as_str()) || !looks_secret(name) {
            continue;
        }
        let Some(value) = value.to_str().filter(|v| !v.is_empty()) else {
            continue;
        };
        plan.table.insert(name.clone(), value.to_string());
        plan.remove.push(name.clone());
        plan.in_environment = true;
    }
    Ok(plan)
}

/// Whether a variable baton does not know by name holds a secret, by the words of its name.
fn looks_secret(name: &str) -> bool {
    if name.ends_with("_FILE") || name == CHANNEL_VAR {
        return false;
    }
    name.to_ascii_uppercase().split('_').any(|word| {
        SECRET_WORD_ENDINGS.iter().any(|end| word.ends_with(end)) || SECRET_WORDS.contains(&word)
    })
}

/// The variables that may name `name`'s file.
fn file_vars(name: &str) -> Vec<String> {
    let mut vars = vec![format!("{name}_FILE")];
    vars.extend(
        FILE_ALIASES
            .iter()
            .filter(|(of, _)| *of == name)
            .map(|(_, alias)| alias.to_string()),
    );
    vars
}

/// The secret `name` from `NAME` or a file variable, as `lookup` sees the environment.
fn resolve(name: &str, lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<String>> {
    // (where it came from, for a conflict's message; the value)
    let mut found: Option<(String, String)> = None;
    if let Some(value) = lookup(name) {
        let value = value.into_string().map_err(|_| Error::NotText {
            source_name: name.to_string(),
        })?;
        if value.trim().is_empty() {
            return Err(Error::Empty {
                var: name.to_string(),
            });
        }
        found = Some((name.to_string(), value));
    }
    for var in file_vars(name) {
        let Some(path) = lookup(&var) else { continue };
        if path.is_empty() {
            return Err(Error::Empty { var });
        }
        let path = PathBuf::from(path);
        let value = read_file(&var, &path)?;
        let source = format!("{var} ({})", path.display());
        match &found {
            Some((first, earlier)) if earlier.trim_end() != value.trim_end() => {
                return Err(Error::Conflict {
                    first: first.clone(),
                    second: source,
                })
            }
            Some(_) => {}
            None => found = Some((source, value)),
        }
    }
    Ok(found.map(|(_, value)| value))
}

/// A secret file's text without its final line ending (what `echo secret > file` adds).
fn read_file(var: &str, path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Unreadable {
        var: var.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| Error::NotText {
        source_name: format!("{var} ({})", path.display()),
    })?;
    remember_file(path);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(Error::EmptyFile {
            var: var.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(text.to_string())
}

/// What goes through the memfd: the table under a key of its own, so that a stray
/// [`CHANNEL_VAR`] pointing at another file is told apart.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Channel {
    baton_secrets: BTreeMap<String, String>,
    /// [`files`]: the next image reads no file again, yet must keep them out of sandboxes.
    #[serde(default)]
    baton_secret_files: Vec<std::path::PathBuf>,
}

/// Without it, any process of the same user reads `/proc/<pid>/environ`, `mem` and the open
/// descriptors. Executing a program makes a process dumpable again, so each image sets it.
fn forbid_dumping() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Executes `/proc/self/exe` with the same arguments, without the secrets in its environment,
/// the table in a memfd. Returns only when that fails.
fn reexec(plan: &Plan) -> std::io::Error {
    let fd = match hand_over(&plan.table) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command
        .args(args)
        .env(CHANNEL_VAR, fd.as_raw_fd().to_string());
    for var in &plan.remove {
        command.env_remove(var);
    }
    // On failure `fd` is dropped here and the memfd is gone.
    command.exec()
}

/// A memfd holding the table, read from its start. Made without `MFD_CLOEXEC`, so that the
/// image `exec` starts inherits it; that image closes it once read.
fn hand_over(table: &BTreeMap<String, String>) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and plain flags.
    let fd = unsafe { libc::memfd_create(c"baton-secrets".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let channel = Channel {
        baton_secrets: table.clone(),
        baton_secret_files: files(),
    };
    file.write_all(&serde_json::to_vec(&channel).map_err(std::io::Error::other)?)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file.into())
}

/// The table the previous image handed over in descriptor `fd`, which is closed after.
fn receive(fd: &str) -> Result<BTreeMap<String, String>> {
    let channel_error = |message: &str| Error::Channel {
        fd: fd.to_string(),
        message: message.to_string(),
    };
    let number: i32 = fd
        .parse()
        .ok()
        .filter(|n| *n > 2)
        .ok_or_else(|| channel_error("not a descriptor number above 2"))?;
    // Only a memfd answers F_GET_SEALS; checking first keeps a descriptor this process uses
    // for something else (or one that is not open) from being read and closed.
    // SAFETY: fcntl on a number reads nothing of ours.
    if unsafe { libc::fcntl(number, libc::F_GET_SEALS) } < 0 {
        return Err(channel_error("not a memfd handed over by baton"));
    }
    // SAFETY: the descriptor is open (fcntl answered), was handed to this image for this read
    // alone, and nothing else in the process knows its number.
    let mut file = unsafe { File::from_raw_fd(number) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| channel_error(&format!("cannot read it: {e}")))?;
    drop(file);
    let channel: Channel = serde_json::from_slice(&bytes)
        .map_err(|_| channel_error("it does not hold baton's secrets"))?;
    for file in &channel.baton_secret_files {
        remember_file(file);
    }
    Ok(channel.baton_secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, OsString> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect()
    }

    fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_its_file_without_the_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let admin = secret_file(dir.path(), "admin", "from-a-file\n");
        let hook = secret_file(dir.path(), "hook", "crlf\r\n");
        let gh = secret_file(dir.path(), "gh", "ghp_file");
        let env = env(&[
            ("OPENAI_API_KEY", "sk-from-env"),
            ("BATON_ADMIN_TOKEN_FILE", &admin),
            ("BATON_GITHUB_WEBHOOK_SECRET_FILE", &hook),
            ("BATON_GITHUB_TOKEN_FILE", &gh),
            ("PATH", "/usr/bin"),
        ]);
        let plan = plan(&env).unwrap();
        let table: Vec<(&str, &str)> = plan
            .table
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            table,
            [
                ("BATON_ADMIN_TOKEN", "from-a-file"),
                ("BATON_GITHUB_WEBHOOK_SECRET", "crlf"),
                ("GITHUB_TOKEN", "ghp_file"),
                ("OPENAI_API_KEY", "sk-from-env"),
            ]
        );
        let mut removed = plan.remove.clone();
        removed.sort();
        assert_eq!(
            removed,
            [
                "BATON_ADMIN_TOKEN_FILE",
                "BATON_GITHUB_TOKEN_FILE",
                "BATON_GITHUB_WEBHOOK_SECRET_FILE",
                "OPENAI_API_KEY"
            ]
        );
        // A value was in the environment itself: the process must execute itself again.
        assert!(plan.in_environment);
    }

    #[test]
    fn files_alone_need_no_second_image() {
        let dir = tempfile::tempdir().unwrap();
        let db = secret_file(dir.path(), "db", "postgres://baton:pw@db/baton\n");
        let plan = plan(&env(&[("BATON_DATABASE_URL_FILE", &db)])).unwrap();
        assert_eq!(
            plan.table["BATON_DATABASE_URL"],
            "postgres://baton:pw@db/baton"
        );
        assert_eq!(plan.remove, ["BATON_DATABASE_URL_FILE"]);
        assert!(!plan.in_environment);
    }

    #[test]
    fn bad_sources_are_errors_naming_the_variable_and_path_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let empty = secret_file(dir.path(), "empty", "\n");
        let other = secret_file(dir.path(), "other", "value-two\n");
        let same = secret_file(dir.path(), "same", "value-one\n");
        let missing = dir.path().join("nope").display().to_string();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("BATON_ADMIN_TOKEN_FILE", &missing)],
                &format!("BATON_ADMIN_TOKEN_FILE: cannot read {missing}: "),
            ),
            (
                &[("BATON_TELEGRAM_TOKEN_FILE", &empty)],
                &format!("BATON_TELEGRAM_TOKEN_FILE: {empty} is empty"),
            ),
            (&[("GITHUB_TOKEN", "  ")], "GITHUB_TOKEN is set but empty"),
            (
                &[("OPENAI_API_KEY_FILE", "")],
                "OPENAI_API_KEY_FILE is set but empty",
            ),
            (
                &[
                    ("GITHUB_TOKEN", "value-one"),
                    ("BATON_GITHUB_TOKEN_FILE", &other),
                ],
                &format!(
                    "GITHUB_TOKEN and BATON_GITHUB_TOKEN_FILE ({other}) are both set, to \
                     different values"
                ),
            ),
            (
                &[
                    ("GITHUB_TOKEN_FILE", &same),
                    ("BATON_GITHUB_TOKEN_FILE", &other),
                ],
                &format!("GITHUB_TOKEN_FILE ({same}) and BATON_GITHUB_TOKEN_FILE ({other})"),
            ),
        ];
        for (vars, expected) in cases {
            let message = plan(&env(vars)).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{vars:?}: {message}");
            assert!(
                !message.contains("value-one") && !message.contains("value-two"),
                "{message}"
            );
        }
        // The same value twice is no conflict.
        let plan = plan(&env(&[
            ("GITHUB_TOKEN", "value-one"),
            ("GITHUB_TOKEN_FILE", &same),
        ]))
        .unwrap();
        assert_eq!(plan.table["GITHUB_TOKEN"], "value-one");
    }

    #[test]
    fn variables_that_look_secret_move_and_others_stay() {
        let plan = plan(&env(&[
            ("DEPLOY_TOKEN", "t1"),
            ("PGPASSWORD", "p1"),
            ("AWS_SECRET_ACCESS_KEY", "a1"),
            ("tf_token_app_terraform_io", "tf"),
            ("GPG_KEY", "k1"),
            ("EMPTY_TOKEN", ""),
            ("TOKENIZERS_PARALLELISM", "false"),
            ("SSH_AUTH_SOCK", "/run/agent"),
            ("KEYTIMEOUT", "1"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("BATON_SECRETS_FD", "3"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let moved: Vec<&str> = plan.table.keys().map(String::as_str).collect();
        assert_eq!(
            moved,
            [
                "AWS_SECRET_ACCESS_KEY",
                "DEPLOY_TOKEN",
                "GPG_KEY",
                "PGPASSWORD",
                "tf_token_app_terraform_io"
            ]
        );
        let mut removed = plan.remove.clone();
        removed.sort();
        assert_eq!(removed, moved);
        assert!(plan.in_environment);
    }

    #[test]
    fn an_environment_without_secrets_changes_nothing() {
        let plan = plan(&env(&[("PATH", "/usr/bin"), ("HOME", "/root")])).unwrap();
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_workflow_token_comes_from_its_variable_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(dir.path(), "t", "from-file\n");
        let vars = env(&[("FORGE_CRED", "from-env"), ("OTHER_CRED_FILE", &file)]);
        let lookup = |var: &str| vars.get(var).cloned();
        assert_eq!(
            resolve("FORGE_CRED", &lookup).unwrap().as_deref(),
            Some("from-env")
        );
        assert_eq!(
            resolve("OTHER_CRED", &lookup).unwrap().as_deref(),
            Some("from-file")
        );
        assert_eq!(resolve("NOT_SET", &lookup).unwrap(), None);
    }

    #[test]
    fn the_table_crosses_a_memfd_and_nothing_else_is_taken_for_it() {
        let table: BTreeMap<String, String> =
            [("GITHUB_TOKEN".to_string(), "ghp_x\nwith a line".to_string())].into();
        let fd = hand_over(&table).unwrap();
        // `receive` takes the descriptor over (and closes it).
        let number = std::os::fd::IntoRawFd::into_raw_fd(fd);
        assert_eq!(receive(&number.to_string()).unwrap(), table);

        // A descriptor that is no memfd is neither read nor closed.
        let dir = tempfile::tempdir().unwrap();
        let plain = File::create(dir.path().join("plain")).unwrap();
        let message = receive(&plain.as_raw_fd().to_string())
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a memfd"), "{message}");
        // SAFETY: asks whether a descriptor is open; touches no memory.
        assert!(unsafe { libc::fcntl(plain.as_raw_fd(), libc::F_GETFD) } >= 0);
        for bad in ["1", "x", ""] {
            assert!(receive(bad).is_err(), "{bad}");
        }

        // A memfd with something else in it is refused.
        let other = hand_over(&BTreeMap::new()).unwrap();
        let mut file = File::from(other);
        file.set_len(0).unwrap();
        file.write_all(b"{\"other\": 1}").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let number = std::os::fd::IntoRawFd::into_raw_fd(file);
        let message = receive(&number.to_string()).unwrap_err().to_string();
        assert!(
            message.contains("does not hold baton's secrets"),
            "{message}"
        );
    }
}
