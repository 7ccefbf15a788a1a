//! `baton github …`: installing baton on GitHub as a GitHub App, the way teams install bots.
//!
//! `app manifest` prints the App's manifest (and, with `--html`, the form that posts it);
//! `app create --code CODE` completes GitHub's manifest flow and keeps the App in the data dir
//! (see [`crate::forge::github::app`]); `installations` lists the accounts that installed it.
//!
//! Data goes to stdout, messages to stderr. Exit codes: 0 done; 2 bad usage or bad input (a
//! code GitHub refuses, no App configured); 1 trouble reaching GitHub.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use crate::backend::Failure;
use crate::commands::print::print_json;
use crate::config::Config;
use crate::forge::github::{app, GithubAuth, GithubConfig, GithubForge};

/// `baton github`.
#[derive(Subcommand, Debug)]
pub enum GithubCmd {
    /// The GitHub App baton acts as: make one with GitHub's manifest flow.
    #[command(subcommand)]
    App(AppCmd),
    /// The App's installations: the accounts that installed it, and their ids.
    Installations {
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// `baton github app`.
#[derive(Subcommand, Debug)]
pub enum AppCmd {
    /// Print the App's manifest: the permissions and webhook events baton needs. Post it to
    /// GitHub (with `--html`, the page that does) and create the App; GitHub then sends you to
    /// an address carrying `?code=...` for `baton github app create`.
    Manifest {
        /// The daemon's public address: GitHub delivers webhooks to `URL/webhooks/github`
        /// (default `[server] public_url`; without either the webhook starts inactive).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The App's name on GitHub (unique across GitHub).
        #[arg(long, default_value = "baton")]
        name: String,
        /// Create the App under this organization instead of your account.
        #[arg(long, value_name = "ORG")]
        org: Option<String>,
        /// Print an HTML page whose button posts the manifest to GitHub.
        #[arg(long)]
        html: bool,
    },
    /// Complete the manifest flow: trade the code GitHub gave for the App's id, private key
    /// and webhook secret, kept in `<data_dir>/github-app` (files 0600). The environment
    /// (`BATON_GITHUB_APP_ID`, `BATON_GITHUB_APP_KEY_FILE`, `BATON_GITHUB_WEBHOOK_SECRET`)
    /// overrides what is kept.
    Create {
        /// The `code` of the address GitHub sent you back to (valid once, for an hour).
        #[arg(long)]
        code: String,
        /// Print the App (never its key or secret) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `baton github …`.
pub async fn run(config: &Config, data_dir: &Path, cmd: GithubCmd) -> Result<i32, Failure> {
    match cmd {
        GithubCmd::App(AppCmd::Manifest {
            url,
            name,
            org,
            html,
        }) => {
            let url = url.or_else(|| config.server.public_url.clone());
            manifest(&name, url.as_deref(), org.as_deref(), html)
        }
        GithubCmd::App(AppCmd::Create { code, json }) => {
            create(config, data_dir, &code, json).await
        }
        GithubCmd::Installations { json } => installations(config, data_dir, json).await,
    }
}

fn manifest(name: &str, url: Option<&str>, org: Option<&str>, html: bool) -> Result<i32, Failure> {
    let manifest = app::manifest(name, url);
    let post_to = match org {
        Some(org) => format!("https://github.com/organizations/{org}/settings/apps/new"),
        None => "https://github.com/settings/apps/new".to_string(),
    };
    if html {
        let text = serde_json::to_string(&manifest).expect("a JSON value serializes");
        println!(
            "<!doctype html>\n<meta charset=\"utf-8\">\n<title>Create the {name} GitHub App</title>\n\
             <form action=\"{post_to}\" method=\"post\">\n\
             <input type=\"hidden\" name=\"manifest\" value=\"{}\">\n\
             <button type=\"submit\">Create the GitHub App on GitHub</button>\n</form>",
            html_attribute(&text)
        );
    } else {
        print_json(&manifest);
    }
    eprintln!(
        "To create the App:\n  1. post this manifest to {post_to} (open the page `baton github \
         app manifest --html > app.html` writes, and press its button);\n  2. on GitHub, press \
         \"Create GitHub App\". GitHub sends you to an address ending in `?code=...`;\n  then \
         run `baton github app create --code CODE` within the hour, and install the App on your \
         repositories."
    );
    if url.is_none() {
        eprintln!(
            "No public address (--url or [server] public_url): the App's webhook starts inactive; \
             set its URL to <public address>/webhooks/github on GitHub later."
        );
    }
    Ok(0)
}

/// `"` and `&` and `<` escaped for an attribute value.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

async fn create(config: &Config, data_dir: &Path, code: &str, json: bool) -> Result<i32, Failure> {
    let made = app::convert(&config.github.base_url, code)
        .await
        .map_err(forge_failure)?;
    let dir = data_dir.join(app::APP_DIR);
    app::store(&dir, &made).map_err(|e| {
        Failure::other(format!(
            "created App {} ({}) but could not keep it in {}: {e}; its key is only shown once, \
             so delete the App on GitHub and start again",
            made.slug,
            made.html_url,
            dir.display()
        ))
    })?;
    tracing::info!(app_id = made.id, slug = %made.slug, "GitHub App created and stored");
    if json {
        print_json(&json!({
            "id": made.id,
            "slug": made.slug,
            "name": made.name,
            "html_url": made.html_url,
            "owner": made.owner,
            "dir": dir,
        }));
    } else {
        println!(
            "Created the GitHub App `{}` (id {}), owned by {}: {}\nIts id, private key and \
             webhook secret are in {} (0600).\nInstall it on your repositories: {}/installations/new",
            made.name,
            made.id,
            if made.owner.is_empty() { "you" } else { &made.owner },
            made.html_url,
            dir.display(),
            made.html_url.trim_end_matches('/'),
        );
    }
    Ok(0)
}

async fn installations(config: &Config, data_dir: &Path, json: bool) -> Result<i32, Failure> {
    let auth = GithubAuth::resolve(Some(&data_dir.join(app::APP_DIR))).map_err(forge_failure)?;
    let github = GithubForge::new(GithubConfig {
        base_url: config.github.base_url.clone(),
        ..GithubConfig::new(auth)
    })
    .map_err(forge_failure)?;
    let list = github.installations().await.map_err(forge_failure)?;
    if json {
        print_json(&list);
    } else if list.is_empty() {
        eprintln!("The App has no installation yet: install it from its page on GitHub.");
    } else {
        for i in &list {
            println!(
                "{}\t{}\t{} repositories\tsince {}",
                i.id, i.account, i.repository_selection, i.created_at
            );
        }
    }
    Ok(0)
}

/// Input GitHub refused (a used or expired code, no App) is the user's to fix: exit 2; no answer
/// or a 5xx is trouble: exit 1.
fn forge_failure(e: crate::forge::Error) -> Failure {
    use crate::forge::Error;
    match &e {
        Error::Api { status, .. } if *status < 500 => Failure::usage(e.to_string()),
        Error::Invalid(_) | Error::Config(_) | Error::NotFound(_) => Failure::usage(e.to_string()),
        _ => Failure::other(e.to_string()),
    }
}
