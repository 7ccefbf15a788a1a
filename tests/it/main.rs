//! The integration tests, as one binary: each file beside this one is a module, and the
//! helpers (`common*`, `require`, `setup`, `own_process`) are shared by all of them. One binary
//! links baton once instead of once per file, and its tests run side by side instead of binary
//! after binary.

/// The `baton` binary this test run built.
pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

mod common;
mod common_agent;
mod common_daemon;
mod common_forge;
mod common_pg;
mod common_telegram;
mod own_process;
mod require;
mod setup;

mod admin_browser;
mod admin_ui;
mod agent_anthropic;
mod agent_cli;
mod agent_command;
mod agent_config_and_analysis;
mod agent_jail;
mod agent_openai;
mod agent_patch;
mod backup;
mod builtins;
mod builtins_github;
mod cli;
mod cli_git;
mod daemon;
mod forge_actions;
mod forge_cli;
mod forge_github_contract;
mod forge_github_retry;
mod forge_local;
mod gc;
mod git_hardening;
mod github_app;
mod issue_to_pr;
mod issue_to_pr_ci;
mod issue_to_pr_github;
mod limits;
mod notify;
mod postgres;
mod pr_life;
mod registration;
mod revise;
mod sandbox;
mod secrets;
mod shell_steps;
mod spending;
mod telegram;
mod telemetry;
mod verify;
mod webhook;
mod webhook_jobs;
mod webhook_serve;
mod workspace;
