//! Path-escape attempts, against the jail directly and through a model's tool calls.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::common_agent::*;
use baton::agent::jail::Jail;
use baton::agent::{
    Agent, BackendKind, CancellationToken, IssueInput, MemoryJournal, ProviderEnv, Secret,
};
use serde_json::json;

/// A workspace with traps, next to an `outside` directory holding a secret.
struct Traps {
    _dir: tempfile::TempDir,
    ws: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn traps() -> Traps {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "TOP SECRET\n").unwrap();
    std::fs::write(ws.join("src/ok.rs"), "fn ok() {}\n").unwrap();
    std::fs::write(ws.join("big.txt"), "x".repeat(2 * 1024 * 1024)).unwrap();
    std::fs::write(ws.join("blob.bin"), b"\x7fELF\0\0\x01binary").unwrap();
    std::fs::write(ws.join("latin1.txt"), b"caf\xe9\n").unwrap();
    git(&ws, &["init", "-q"]);
    symlink(&outside, ws.join("linkdir")).unwrap();
    symlink(outside.join("secret.txt"), ws.join("linkfile")).unwrap();
    symlink("../outside/secret.txt", ws.join("relative_link")).unwrap();
    symlink(outside.join("new.txt"), ws.join("dangling")).unwrap();
    symlink("linkdir", ws.join("chain")).unwrap(); // inside -> inside link -> outside
    symlink(".git", ws.join("gitlink")).unwrap();
    symlink("src/ok.rs", ws.join("good_link")).unwrap();
    symlink("/dev/zero", ws.join("zero")).unwrap();
    std::fs::hard_link(outside.join("secret.txt"), ws.join("hardlink")).unwrap();
    let fifo = std::ffi::CString::new(ws.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // No character device inside the workspace: making one needs CAP_MKNOD, and the jail refuses
    // it through the same "not a regular file" check as the FIFO above (devices outside are
    // covered by the `/dev/zero` link).
    Traps {
        _dir: dir,
        ws,
        outside,
    }
}

#[test]
fn the_jail_refuses_every_escape() {
    let t = traps();
    let jail = Jail::new(&t.ws).unwrap();
    let outside_abs = t.outside.join("secret.txt").display().to_string();
    let inside_abs = t.ws.join("src/ok.rs").display().to_string();

    // (path, expected error fragment) for reading.
    let refused_reads: Vec<(&str, &str)> = vec![
        ("../outside/secret.txt", "`..` is not allowed"),
        ("src/../../outside/secret.txt", "`..` is not allowed"),
        ("/etc/passwd", "outside the workspace"),
        (&outside_abs, "outside the workspace"),
        ("linkdir/secret.txt", "leads outside the workspace"),
        ("linkfile", "leads outside the workspace"),
        ("relative_link", "leads outside the workspace"),
        ("chain/secret.txt", "leads outside the workspace"),
        ("dangling", "points nowhere"),
        (".git/config", ".git directory is off limits"),
        ("src/../.git/HEAD", "`..` is not allowed"),
        ("gitlink/config", "leads into .git"),
        ("zero", "leads outside the workspace"),
        ("fifo", "not a regular file"),
        ("big.txt", "larger than the 1 MiB limit"),
        ("blob.bin", "binary"),
        ("latin1.txt", "not UTF-8"),
        ("src", "is a directory"),
        ("missing.rs", "does not exist"),
        ("hardlink", "several hard links"),
        ("nul\0byte", "NUL"),
    ];
    let refused_writes: Vec<(&str, &str)> = vec![
        ("../escape.txt", "`..`"),
        ("linkdir/new.txt", "leads outside"),
        ("dangling", "points nowhere"),
        (".git/hooks/pre-commit", ".git directory"),
        ("gitlink/hooks/post-checkout", "leads into .git"),
        ("hardlink", "several hard links"),
        ("fifo", "not a regular file"),
        ("blob.bin", "binary"),
        ("/tmp/baton-escape.txt", "outside the workspace"),
        ("", "workspace root"),
    ];
    for (path, fragment) in &refused_reads {
        let err = jail.read_text(path).expect_err(path).to_string();
        assert!(err.contains(fragment), "{path:?}: {err}");
    }

    for (path, fragment) in &refused_writes {
        let err = jail.prepare_write(path).expect_err(path).to_string();
        assert!(err.contains(fragment), "{path:?}: {err}");
    }
    assert!(!t.outside.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(t.outside.join("secret.txt")).unwrap(),
        "TOP SECRET\n"
    );

    // What stays inside is allowed, symlinks within the workspace included.
    assert_eq!(jail.read_text("src/ok.rs").unwrap().1, "fn ok() {}\n");
    assert_eq!(jail.read_text(&inside_abs).unwrap().0.rel, "src/ok.rs");
    assert_eq!(jail.read_text("./src//ok.rs").unwrap().0.rel, "src/ok.rs");
    assert_eq!(
        jail.read_text("good_link").unwrap().0.rel,
        "src/ok.rs",
        "journaled under its real path"
    );
    let (resolved, before) = jail.prepare_write("src/new/deep.rs").unwrap();
    assert_eq!((resolved.rel.as_str(), before), ("src/new/deep.rs", None));
    jail.write(&resolved, "fn deep() {}\n").unwrap();
    assert!(t.ws.join("src/new/deep.rs").is_file());
}

#[tokio::test]
async fn escapes_through_tool_calls_are_errors_the_model_sees() {
    let t = traps();
    let before = std::fs::read_dir(&t.outside).unwrap().count();
    let calls: Vec<(&str, String)> = vec![
        (
            "read_file",
            json!({"path": "../outside/secret.txt"}).to_string(),
        ),
        (
            "read_file",
            json!({"path": t.outside.join("secret.txt")}).to_string(),
        ),
        ("read_file", json!({"path": "linkfile"}).to_string()),
        ("read_file", json!({"path": "chain/secret.txt"}).to_string()),
        ("read_file", json!({"path": "fifo"}).to_string()),
        ("read_file", json!({"path": "zero"}).to_string()),
        ("read_file", json!({"path": "hardlink"}).to_string()),
        ("list_dir", json!({"path": "linkdir"}).to_string()),
        ("list_dir", json!({"path": "/"}).to_string()),
        (
            "search",
            json!({"pattern": "SECRET", "path": "linkdir"}).to_string(),
        ),
        (
            "write_file",
            json!({"path": "dangling", "content": "pwned"}).to_string(),
        ),
        (
            "write_file",
            json!({"path": "linkdir/new.txt", "content": "pwned"}).to_string(),
        ),
        (
            "write_file",
            json!({"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\nrm -rf /"}).to_string(),
        ),
        (
            "edit_file",
            json!({"path": "hardlink", "old_text": "TOP", "new_text": "NOT"}).to_string(),
        ),
        ("delete_file", json!({"path": "linkfile"}).to_string()),
        (
            "delete_file",
            json!({"path": "../outside/secret.txt"}).to_string(),
        ),
    ];
    let call_refs: Vec<(&str, &str)> = calls.iter().map(|(n, a)| (*n, a.as_str())).collect();
    let server = ScriptServer::start(vec![
        Scripted::ok(oa_calls(&[("plan", r#"{"steps": ["escape"]}"#)])),
        Scripted::ok(oa_calls(&call_refs)),
        Scripted::ok(oa_calls(&[("search", r#"{"pattern": "SECRET"}"#)])),
        Scripted::ok(oa_calls(&[("finish", r#"{"summary": "tried"}"#)])),
    ])
    .await;
    let env = ProviderEnv {
        openai_api_key: Some(Secret::new("sk-x")),
        openai_base_url: Some(format!("{}/v1", server.base)),
        ..ProviderEnv::default()
    };
    let agent = Agent::new(config(BackendKind::Openai, "m"), &env).unwrap();
    let journal = MemoryJournal::new();
    let issue = IssueInput::from_text("Read the secret");
    let report = agent
        .run(&t.ws, &issue, &journal, &(), &CancellationToken::new())
        .await
        .unwrap();
    assert!(report.finished());

    let requests = server.requests();
    let msgs = requests[2].body["messages"].as_array().unwrap();
    let answers: Vec<&str> = msgs
        .iter()
        .filter(|m| m["role"] == "tool")
        .skip(1)
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(answers.len(), calls.len());
    for ((name, args), answer) in calls.iter().zip(&answers) {
        assert!(
            answer.starts_with("ERROR: "),
            "{name} {args} was allowed: {answer}"
        );
        assert!(
            !answer.contains("TOP SECRET"),
            "{name} {args} leaked: {answer}"
        );
    }
    // A search over the whole workspace skips the symlinks that lead out.
    let last = requests[3].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(last, "no matches");
    assert!(journal.changes().is_empty());
    assert_eq!(std::fs::read_dir(&t.outside).unwrap().count(), before);
    assert_eq!(
        std::fs::read_to_string(t.outside.join("secret.txt")).unwrap(),
        "TOP SECRET\n"
    );
    assert!(!Path::new(&t.ws.join(".git/hooks/pre-commit")).exists());
}
