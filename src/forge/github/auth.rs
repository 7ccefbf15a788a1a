//! How baton authenticates to GitHub: a personal token, or a GitHub App whose installation
//! clients (one per repository owner, tokens minted and refreshed by octocrab) are made here.

use super::*;

/// How baton authenticates to GitHub.
#[derive(Clone, Debug)]
pub enum GithubAuth {
    /// A personal access token (`GITHUB_TOKEN`).
    Token(SecretString),
    /// A GitHub App (`BATON_GITHUB_APP_ID` + `BATON_GITHUB_APP_KEY_FILE` or
    /// `BATON_GITHUB_APP_KEY`).
    App {
        /// The App's id.
        app_id: u64,
        /// The App's private key, PEM.
        private_key_pem: SecretString,
        /// The installation to act as; `None` looks it up per repository owner.
        installation_id: Option<u64>,
    },
}

impl GithubAuth {
    /// From the environment, else the App kept in `app_dir` (`baton github app create`):
    ///
    /// - a GitHub App: `BATON_GITHUB_APP_ID` and `BATON_GITHUB_APP_KEY_FILE` (or the PEM itself
    ///   in `BATON_GITHUB_APP_KEY`), each overriding the stored one, and optionally
    ///   `BATON_GITHUB_APP_INSTALLATION_ID`;
    /// - else a personal token: `GITHUB_TOKEN` (or `GITHUB_TOKEN_FILE`, `BATON_GITHUB_TOKEN_FILE`).
    ///
    /// An App, once created or configured, is what baton acts as: a `GITHUB_TOKEN` left in the
    /// environment beside it does not silently win. The credentials come through
    /// [`crate::secrets`]; the ids are not secret.
    pub fn resolve(app_dir: Option<&std::path::Path>) -> Result<GithubAuth> {
        let secret =
            |name: &str| crate::secrets::get(name).map_err(|e| Error::Config(e.to_string()));
        let stored = match app_dir {
            Some(dir) => super::app::Stored::read(dir)?,
            None => None,
        };
        let env_id = match std::env::var("BATON_GITHUB_APP_ID") {
            Ok(id) => Some(id.trim().parse().map_err(|_| {
                Error::Config(format!("BATON_GITHUB_APP_ID is not a number: `{id}`"))
            })?),
            Err(_) => None,
        };
        if let Some(app_id) = env_id.or(stored.as_ref().map(|s| s.app_id)) {
            let pem = match (secret("BATON_GITHUB_APP_KEY")?, stored) {
                (Some(pem), _) => pem.into(),
                (None, Some(stored)) => stored.key,
                (None, None) => {
                    return Err(Error::Config(
                        "BATON_GITHUB_APP_ID is set but BATON_GITHUB_APP_KEY_FILE is not".into(),
                    ))
                }
            };
            let installation_id = match std::env::var("BATON_GITHUB_APP_INSTALLATION_ID") {
                Ok(v) => Some(v.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "BATON_GITHUB_APP_INSTALLATION_ID is not a number: `{v}`"
                    ))
                })?),
                Err(_) => None,
            };
            return Ok(GithubAuth::App {
                app_id,
                private_key_pem: pem,
                installation_id,
            });
        }
        match secret("GITHUB_TOKEN")? {
            Some(token) => Ok(GithubAuth::Token(token.trim().into())),
            None => Err(Error::Config(
                "no GitHub credential: set GITHUB_TOKEN, or BATON_GITHUB_APP_ID and \
                 BATON_GITHUB_APP_KEY_FILE, or create an App with `baton github app manifest`"
                    .into(),
            )),
        }
    }
}

/// Options of [`GithubForge`].
#[derive(Clone, Debug)]
pub struct GithubConfig {
    /// API address: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub base_url: String,
    /// The credential.
    pub auth: GithubAuth,
    /// Retries and rate-limit waits.
    pub retry: RetryPolicy,
    /// Longest wait for one answer; a call that takes longer is retried like a 5xx.
    pub request_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
}

impl GithubConfig {
    /// GitHub.com with default retries and timeouts.
    pub fn new(auth: GithubAuth) -> GithubConfig {
        GithubConfig {
            base_url: GITHUB_API.to_string(),
            auth,
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl GithubForge {
    /// The client that acts on `repo`: the token client, or the App's installation client.
    pub(super) async fn client_for(&self, repo: &Repo) -> Result<Arc<Octocrab>> {
        let Some(fixed) = self.app else {
            return Ok(Arc::clone(&self.client));
        };
        // One client per installation: a fixed one serves every owner.
        let key = if fixed.is_some() {
            ""
        } else {
            repo.owner.as_str()
        };
        let mut installations = self.installations.lock().await;
        if let Some(client) = installations.get(key) {
            return Ok(Arc::clone(client));
        }
        let id = match fixed {
            Some(id) => id,
            None => {
                #[derive(Deserialize)]
                struct Installation {
                    id: u64,
                }
                let path = format!("/repos/{}/installation", repo_path(repo));
                let text = self
                    .send_retrying(&self.client, Method::GET, &path, None)
                    .await?;
                parse::<Installation>(&Method::GET, &path, &text)?.id
            }
        };
        let client = Arc::new(
            self.client
                .installation(InstallationId(id))
                .map_err(|e| Error::Config(format!("GitHub App installation {id}: {e}")))?,
        );
        installations.insert(key.to_string(), Arc::clone(&client));
        Ok(client)
    }
}
