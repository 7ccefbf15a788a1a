//! A GitHub App made with GitHub's manifest flow and kept in the data dir, so that an operator
//! installs baton as teams install bots: two clicks on GitHub, one command here.
//!
//! 1. `baton github app manifest` prints a manifest naming the permissions and webhook events
//!    baton needs ([`manifest`]).
//! 2. On GitHub, the operator posts it from a small form (the command prints one) and clicks
//!    "Create GitHub App"; GitHub redirects with a one-hour `code`.
//! 3. `baton github app create --code CODE` trades the code for the App's id, private key and
//!    webhook secret (`POST /app-manifests/{code}/conversions`, [`convert`]) and keeps them in
//!    `<data_dir>/github-app/` ([`store`]): a 0700 directory of 0600 files.
//!
//! What is stored is read by [`Stored::read`] when the forge is built; the environment
//! (`BATON_GITHUB_APP_ID`, `BATON_GITHUB_APP_KEY_FILE`, `BATON_GITHUB_WEBHOOK_SECRET` and its
//! `_FILE` form) overrides it name by name. The key and the secret are never printed.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use octocrab::secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Error, Result};

/// The directory under the data dir.
pub const APP_DIR: &str = "github-app";
/// The App's id, in decimal.
const ID_FILE: &str = "app-id";
/// The App's private key, PEM.
const KEY_FILE: &str = "private-key.pem";
/// The webhook secret GitHub signs deliveries with.
const SECRET_FILE: &str = "webhook-secret";
/// What GitHub said of the App, less its secrets (name, slug, page): for people.
const INFO_FILE: &str = "app.json";

/// What baton does with a repository, as App permissions: it reads and writes code (clone,
/// push a branch), issues and pull requests (comments, labels, PRs, reviews), publishes its
/// verification (checks, commit statuses) and reads the repository's CI (checks, Actions logs).
const PERMISSIONS: [(&str, &str); 8] = [
    ("contents", "write"),
    ("issues", "write"),
    ("pull_requests", "write"),
    ("checks", "write"),
    ("statuses", "write"),
    ("actions", "read"),
    ("metadata", "read"),
    ("members", "read"),
];

/// The webhook events baton acts on (`installation` events reach every App unasked).
const EVENTS: [&str; 11] = [
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "push",
    "release",
    "check_run",
    "check_suite",
    "workflow_run",
    "status",
];

/// The App manifest for `public_url` (the daemon's public address: GitHub delivers webhooks to
/// `<public_url>/webhooks/github`). Without one the webhook is left inactive, to be set on
/// GitHub later.
pub fn manifest(name: &str, public_url: Option<&str>) -> Value {
    let permissions: serde_json::Map<String, Value> = PERMISSIONS
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    let mut manifest = json!({
        "name": name,
        "url": public_url.unwrap_or("https://github.com/"),
        "public": false,
        "default_permissions": permissions,
        "default_events": EVENTS,
    });
    if let Some(url) = public_url {
        let base = url.trim_end_matches('/');
        manifest["hook_attributes"] =
            json!({ "url": format!("{base}/webhooks/github"), "active": true });
        manifest["redirect_url"] = json!(format!("{base}/"));
    } else {
        manifest["hook_attributes"] =
            json!({ "url": "https://example.invalid/webhooks/github", "active": false });
    }
    manifest
}

/// What GitHub hands back for a manifest code. `Debug` shows no secret.
pub struct Conversion {
    /// The App's id.
    pub id: u64,
    /// Its URL name (`https://github.com/apps/<slug>`).
    pub slug: String,
    /// Its display name.
    pub name: String,
    /// Its page.
    pub html_url: String,
    /// The account that owns it.
    pub owner: String,
    pem: SecretString,
    webhook_secret: Option<SecretString>,
}

impl std::fmt::Debug for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversion")
            .field("id", &self.id)
            .field("slug", &self.slug)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ConversionWire {
    id: u64,
    #[serde(default)]
    slug: Option<String>,
    name: String,
    html_url: String,
    #[serde(default)]
    owner: Option<Owner>,
    pem: String,
    #[serde(default)]
    webhook_secret: Option<String>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    login: Option<String>,
}

/// Whether `code` can be a manifest code: it goes into a URL path, so only URL-safe words.
fn check_code(code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 200
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{code}` is not a manifest code: GitHub's codes are letters, digits, `-` and `_` \
             (the `code` parameter of the address GitHub sent you back to)"
        )))
    }
}

/// Trades a manifest `code` for the App (`POST /app-manifests/{code}/conversions`, which takes
/// no credential: the code is one). `base_url` is the REST API's address.
pub async fn convert(base_url: &str, code: &str) -> Result<Conversion> {
    check_code(code)?;
    let path = format!("/app-manifests/{code}/conversions");
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
    let response = client
        .post(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| Error::Transport {
            method: "POST".into(),
            path: path.clone(),
            attempts: 1,
            message: e.without_url().to_string(),
        })?;
    let status = response.status();
    let text = response.text().await.map_err(|e| Error::Transport {
        method: "POST".into(),
        path: path.clone(),
        attempts: 1,
        message: e.without_url().to_string(),
    })?;
    if !status.is_success() {
        // GitHub's error body names the problem (an expired or used code: 404 or 422); it
        // carries no secret, the App's key only comes with a success.
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        return Err(Error::Api {
            method: "POST".into(),
            path,
            status: status.as_u16(),
            message: format!("{message} (a code works once, within an hour of creating the App)"),
        });
    }
    let wire: ConversionWire = serde_json::from_str(&text).map_err(|source| Error::Json {
        what: format!("POST {path}"),
        source,
    })?;
    Ok(Conversion {
        id: wire.id,
        slug: wire.slug.unwrap_or_else(|| wire.name.clone()),
        name: wire.name,
        html_url: wire.html_url,
        owner: wire.owner.and_then(|o| o.login).unwrap_or_default(),
        pem: wire.pem.into(),
        webhook_secret: wire.webhook_secret.map(Into::into),
    })
}

/// Keeps `app` in `dir` (made 0700; files 0600, each written whole before it is renamed into
/// place, so a crash leaves the old file or the new one).
pub fn store(dir: &Path, app: &Conversion) -> std::io::Result<()> {
    use octocrab::secrecy::ExposeSecret as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let info = json!({
        "id": app.id,
        "slug": app.slug,
        "name": app.name,
        "html_url": app.html_url,
        "owner": app.owner,
    });
    write_private(&dir.join(KEY_FILE), app.pem.expose_secret().as_bytes())?;
    match &app.webhook_secret {
        Some(secret) => write_private(&dir.join(SECRET_FILE), secret.expose_secret().as_bytes())?,
        None => remove_if_present(&dir.join(SECRET_FILE))?,
    }
    write_private(
        &dir.join(INFO_FILE),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    // Last: an id file is what makes the App count as stored.
    write_private(&dir.join(ID_FILE), format!("{}\n", app.id).as_bytes())
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    remove_if_present(&tmp)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// An App kept in the data dir. `Debug` shows no secret.
pub struct Stored {
    /// The App's id.
    pub app_id: u64,
    /// Its private key, PEM.
    pub key: SecretString,
    /// The webhook secret, if GitHub gave one.
    pub webhook_secret: Option<SecretString>,
    /// Where it is kept.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("app_id", &self.app_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Stored {
    /// The App kept in `dir`, `None` when none is. A file that is there but unreadable, or
    /// readable by others than its owner, is an error that names it.
    pub fn read(dir: &Path) -> Result<Option<Stored>> {
        let id_path = dir.join(ID_FILE);
        let Some(id) = read_private(&id_path)? else {
            return Ok(None);
        };
        let app_id = id.trim().parse().map_err(|_| {
            Error::Config(format!(
                "{} holds no App id: `{}`",
                id_path.display(),
                id.trim()
            ))
        })?;
        let key_path = dir.join(KEY_FILE);
        let key = read_private(&key_path)?.ok_or_else(|| {
            Error::Config(format!(
                "{} is missing: run `baton github app create` again",
                key_path.display()
            ))
        })?;
        let webhook_secret =
            read_private(&dir.join(SECRET_FILE))?.map(|s| SecretString::from(s.trim().to_string()));
        Ok(Some(Stored {
            app_id,
            key: key.into(),
            webhook_secret,
            dir: dir.to_path_buf(),
        }))
    }
}

/// A file of the App's directory; a file others may read is refused, since it could be a key
/// someone swapped in or one leaked by a careless copy.
fn read_private(path: &Path) -> Result<Option<String>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} can be read by others (mode {:o}); `chmod 600` it",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    std::fs::read_to_string(path).map(Some).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_asks_for_what_baton_does_and_points_the_webhook_home() {
        let m = manifest("baton", Some("https://baton.example.com/"));
        assert_eq!(
            m["hook_attributes"]["url"],
            "https://baton.example.com/webhooks/github"
        );
        assert_eq!(m["hook_attributes"]["active"], true);
        assert_eq!(m["default_permissions"]["contents"], "write");
        assert_eq!(m["default_permissions"]["checks"], "write");
        assert!(m["default_events"]
            .as_array()
            .unwrap()
            .contains(&json!("check_suite")));
        let offline = manifest("baton", None);
        assert_eq!(offline["hook_attributes"]["active"], false);
    }

    #[test]
    fn a_code_must_be_one_url_safe_word() {
        assert!(check_code("a1B2-c_3").is_ok());
        for bad in ["", "../app", "a/b", "a?b", "a b"] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_app_round_trips_and_a_loose_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("baton-app-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Stored::read(&dir).unwrap().is_none());
        let app = Conversion {
            id: 42,
            slug: "baton-x".into(),
            name: "baton x".into(),
            html_url: "https://github.com/apps/baton-x".into(),
            owner: "o".into(),
            pem: "PEM".to_string().into(),
            webhook_secret: Some("whsec".to_string().into()),
        };
        store(&dir, &app).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in [ID_FILE, KEY_FILE, SECRET_FILE, INFO_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let stored = Stored::read(&dir).unwrap().unwrap();
        assert_eq!(stored.app_id, 42);
        assert!(!format!("{stored:?}").contains("PEM"));
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = Stored::read(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
