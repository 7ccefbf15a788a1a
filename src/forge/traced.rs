//! [`Traced`]: every forge call counted (`baton_forge_calls_total`, by method and status),
//! timed, and, while traces are exported, a span named after the [`Forge`] method. Wrapped
//! around every forge [`super::open`] builds, so neither backend can forget a call.
//!
//! The required methods are wrapped, and the provided ones a backend overrides (`check_log`,
//! `git_token`…): forgetting one here would silently give every caller the trait's default.
//! The provided ones built of others (`upsert_comment`…) are not: their calls show as the calls
//! they make.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument as _;

use super::*;

/// A forge whose calls are measured.
#[derive(Debug)]
pub struct Traced {
    inner: Arc<dyn Forge>,
}

impl Traced {
    /// `inner`, measured.
    pub fn new(inner: Arc<dyn Forge>) -> Traced {
        Traced { inner }
    }
}

/// One call in flight.
struct Call {
    forge: &'static str,
    method: &'static str,
    started: Instant,
    span: tracing::Span,
}

impl Call {
    fn start(forge: &'static str, method: &'static str) -> Call {
        let span = if crate::telemetry::in_traced_run() {
            tracing::info_span!(
                target: "baton::trace",
                "forge",
                otel.name = format!("forge.{method}"),
                otel.kind = "client",
                baton.forge = forge,
                baton.forge_method = method,
                baton.status = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        Call {
            forge,
            method,
            started: Instant::now(),
            span,
        }
    }

    fn around<'a, T: Send + 'a>(self, call: BoxFuture<'a, Result<T>>) -> BoxFuture<'a, Result<T>> {
        let span = self.span.clone();
        Box::pin(
            async move {
                let result = call.await;
                self.finish(&result);
                result
            }
            .instrument(span),
        )
    }

    fn finish<T>(&self, result: &Result<T>) {
        let status = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => e
                .status()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "error".into()),
        };
        let m = &*crate::telemetry::METRICS;
        m.forge_calls
            .with_label_values(&[self.forge, self.method, &status])
            .inc();
        m.forge_seconds
            .with_label_values(&[self.forge, self.method])
            .observe(self.started.elapsed().as_secs_f64());
        if !self.span.is_disabled() {
            self.span.record("baton.status", status.as_str());
            if result.is_err() {
                self.span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// Forwards each listed method to the inner forge inside a [`Call`].
macro_rules! measured {
    ($( fn $name:ident<$lt:lifetime>(&$self_lt:lifetime self $(, $arg:ident : $ty:ty)*) -> $out:ty; )*) => {
        $(
            fn $name<$lt>(&$self_lt self $(, $arg: $ty)*) -> BoxFuture<$lt, Result<$out>> {
                let call = Call::start(self.inner.kind(), stringify!($name));
                call.around(self.inner.$name($($arg),*))
            }
        )*
    };
}

impl Forge for Traced {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn git_token_env(&self, use_: GitUse) -> std::result::Result<&'static str, String> {
        self.inner.git_token_env(use_)
    }

    fn git_token<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Option<Secret>>> {
        self.inner.git_token(url)
    }

    measured! {
        fn repository<'a>(&'a self, repo: &'a Repo) -> RepoInfo;
        fn issue<'a>(&'a self, repo: &'a Repo, number: u64) -> Issue;
        fn comments<'a>(&'a self, repo: &'a Repo, number: u64) -> Vec<Comment>;
        fn create_comment<'a>(&'a self, repo: &'a Repo, number: u64, body: &'a str) -> Comment;
        fn edit_comment<'a>(&'a self, repo: &'a Repo, comment_id: u64, body: &'a str) -> Comment;
        fn create_pull_request<'a>(&'a self, repo: &'a Repo, new: &'a NewPullRequest) -> PullRequest;
        fn update_pull_request<'a>(&'a self, repo: &'a Repo, number: u64, update: &'a PullRequestUpdate) -> PullRequest;
        fn find_open_pull_request<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> Option<PullRequest>;
        fn request_reviewers<'a>(&'a self, repo: &'a Repo, number: u64, reviewers: &'a [String]) -> ();
        fn create_review<'a>(&'a self, repo: &'a Repo, number: u64, review: &'a NewReview) -> Review;
        fn add_labels<'a>(&'a self, repo: &'a Repo, number: u64, labels: &'a [String]) -> Vec<String>;
        fn delete_branch<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> ();
        fn close_pull_request<'a>(&'a self, repo: &'a Repo, number: u64) -> PullRequest;
        fn commits_between<'a>(&'a self, repo: &'a Repo, base: &'a str, head: &'a str) -> Vec<Commit>;
        fn release_by_tag<'a>(&'a self, repo: &'a Repo, tag: &'a str) -> Option<Release>;
        fn create_release<'a>(&'a self, repo: &'a Repo, new: &'a NewRelease) -> Release;
        fn update_release<'a>(&'a self, repo: &'a Repo, release_id: u64, new: &'a NewRelease) -> Release;
        fn permission<'a>(&'a self, repo: &'a Repo, user: &'a str) -> Permission;
        fn issues<'a>(&'a self, repo: &'a Repo, filter: &'a IssueFilter) -> Vec<Issue>;
        fn create_issue<'a>(&'a self, repo: &'a Repo, new: &'a NewIssue) -> Issue;
        fn pull_requests<'a>(&'a self, repo: &'a Repo, state: StateFilter) -> Vec<PullRequest>;
        fn pull_request<'a>(&'a self, repo: &'a Repo, number: u64) -> PullRequest;
        fn reviews<'a>(&'a self, repo: &'a Repo, number: u64) -> Vec<Review>;
        fn review_comments<'a>(&'a self, repo: &'a Repo, number: u64) -> Vec<ReviewComment>;
        fn edit_review<'a>(&'a self, repo: &'a Repo, number: u64, review_id: u64, body: &'a str) -> Review;
        fn remove_label<'a>(&'a self, repo: &'a Repo, number: u64, label: &'a str) -> ();
        fn tags<'a>(&'a self, repo: &'a Repo) -> Vec<Tag>;
        fn publish_check<'a>(&'a self, repo: &'a Repo, check: &'a NewCheck) -> CheckRun;
        fn checks_for<'a>(&'a self, repo: &'a Repo, sha: &'a str) -> Vec<CheckRun>;
        fn required_checks<'a>(&'a self, repo: &'a Repo, branch: &'a str) -> Vec<String>;
        fn check_log<'a>(&'a self, repo: &'a Repo, check: &'a CheckRun) -> Option<String>;
        fn identity<'a>(&'a self) -> String;
    }
}
