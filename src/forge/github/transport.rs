//! The one way a call reaches GitHub: `(method, path, body)` with the right client, retries
//! and rate limits ([`super::retry`]), pages, and GitHub's error bodies made readable.

use super::*;

/// The last rate-limit figures GitHub sent, shared by all calls.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Budget {
    remaining: Option<u64>,
    reset: Option<u64>,
}

impl GithubForge {
    /// Sends one call for `repo` with retries; a non-2xx final answer is an [`Error::Api`].
    pub(super) async fn call(
        &self,
        repo: &Repo,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String> {
        let client = self.client_for(repo).await?;
        self.send_retrying(&client, method, path, body).await
    }

    /// [`GithubForge::call`] and parse the JSON answer.
    pub(super) async fn call_json<T: DeserializeOwned>(
        &self,
        repo: &Repo,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let text = self.call(repo, method.clone(), path, body).await?;
        parse(&method, path, &text)
    }

    /// Reads all pages of a list call (`path` has no query string of its own but `query`).
    pub(super) async fn call_pages<T: DeserializeOwned>(
        &self,
        repo: &Repo,
        path: &str,
        query: &str,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let sep = if query.is_empty() { "" } else { "&" };
            let paged = format!("{path}?{query}{sep}per_page={PER_PAGE}&page={page}");
            let items: Vec<T> = self.call_json(repo, Method::GET, &paged, None).await?;
            let last = items.len() < PER_PAGE;
            all.extend(items);
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Waits while the last answer said the primary rate limit is exhausted.
    pub(super) async fn wait_for_budget(&self, method: &Method, path: &str) -> Result<()> {
        let budget = *self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(0), Some(reset)) = (budget.remaining, budget.reset) {
            let now = now_ms();
            if reset * 1000 > now {
                let wait = retry::until_reset(reset, now);
                if wait > self.policy.max_rate_limit_wait {
                    return Err(Error::RateLimited {
                        method: method.to_string(),
                        path: path.to_string(),
                        wait,
                    });
                }
                tracing::info!(%method, path, wait_ms = wait.as_millis() as u64,
                    "GitHub rate limit exhausted; waiting for its reset");
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    pub(super) fn note_budget(&self, rate: RateHeaders) {
        if let Some(remaining) = rate.remaining {
            crate::telemetry::METRICS
                .forge_rate_limit_remaining
                .with_label_values(&["github"])
                .set(remaining.min(i64::MAX as u64) as i64);
        }
        if rate.remaining.is_some() {
            let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
            budget.remaining = rate.remaining;
            budget.reset = rate.reset;
        }
    }

    /// The retry loop around one request, in a span named by its route template while traces
    /// are exported.
    pub(super) async fn send_retrying(
        &self,
        client: &Octocrab,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String> {
        if !crate::telemetry::in_traced_run() {
            return self
                .send_retrying_untraced(client, method, path, body)
                .await;
        }
        let route = crate::telemetry::route_template(path);
        let span = tracing::info_span!(
            target: "baton::trace",
            "github",
            otel.name = format!("{method} {route}"),
            otel.kind = "client",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
            github.rate_limit_remaining = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = tracing::Instrument::instrument(
            self.send_retrying_untraced(client, method, path, body),
            span.clone(),
        )
        .await;
        let status = match &result {
            Ok(_) => None,
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                e.status()
            }
        };
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        let remaining = self
            .budget
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remaining;
        if let Some(remaining) = remaining {
            span.record("github.rate_limit_remaining", remaining);
        }
        result
    }

    async fn send_retrying_untraced(
        &self,
        client: &Octocrab,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_for_budget(&method, path).await?;
            let sent = tokio::time::timeout(
                self.request_timeout,
                send_once(client, &method, path, body.as_ref()),
            )
            .await;
            let failure = match sent {
                Err(_) => format!("no answer within {:?}", self.request_timeout),
                Ok(Err(Sent::Transport(message))) => message,
                Ok(Err(Sent::Final(error))) => return Err(error),
                Ok(Ok((status, headers, text))) => {
                    let rate = rate_headers(&headers);
                    self.note_budget(rate);
                    let message = github_message(&text);
                    tracing::debug!(%method, path, status, attempt, "GitHub answered");
                    tracing::Span::current().record("http.response.status_code", status);
                    match retry::verdict(
                        status,
                        rate,
                        &message,
                        attempt,
                        now_ms(),
                        &self.policy,
                        retry::jitter(),
                    ) {
                        Verdict::Success => return Ok(text),
                        Verdict::Fail => {
                            return Err(Error::Api {
                                method: method.to_string(),
                                path: path.to_string(),
                                status,
                                message,
                            })
                        }
                        Verdict::RateLimited(wait) => {
                            return Err(Error::RateLimited {
                                method: method.to_string(),
                                path: path.to_string(),
                                wait,
                            })
                        }
                        Verdict::Retry(wait) => {
                            tracing::warn!(%method, path, status, attempt,
                                wait_ms = wait.as_millis() as u64, %message,
                                "GitHub call failed; retrying");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }
            };
            if attempt >= self.policy.max_attempts {
                return Err(Error::Transport {
                    method: method.to_string(),
                    path: path.to_string(),
                    attempts: attempt,
                    message: failure,
                });
            }
            let wait = retry::backoff(&self.policy, attempt, retry::jitter());
            tracing::warn!(%method, path, attempt, wait_ms = wait.as_millis() as u64,
                error = %failure, "GitHub call got no answer; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Why one send produced no HTTP answer.
pub(super) enum Sent {
    /// Connection trouble: retried.
    Transport(String),
    /// An error retrying cannot fix (bad App key, bad URL, GitHub refusing the App token).
    Final(Error),
}

pub(super) async fn send_once(
    client: &Octocrab,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> std::result::Result<(u16, HeaderMap, String), Sent> {
    let response = match *method {
        Method::GET => client._get(path).await,
        Method::POST => client._post(path, body).await,
        Method::PATCH => client._patch(path, body).await,
        Method::PUT => client._put(path, body).await,
        Method::DELETE => client._delete(path, body).await,
        _ => {
            return Err(Sent::Final(Error::Invalid(format!(
                "method {method} is not used"
            ))))
        }
    };
    let response = response.map_err(|e| classify(method, path, e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = client
        .body_to_string(response)
        .await
        .map_err(|e| Sent::Transport(format!("reading the answer: {e}")))?;
    Ok((status, headers, text))
}

/// Sorts an octocrab error into retryable transport trouble and final errors.
pub(super) fn classify(method: &Method, path: &str, error: octocrab::Error) -> Sent {
    match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let error = Error::Api {
                method: method.to_string(),
                path: path.to_string(),
                status,
                message: format!("authenticating as the GitHub App: {}", source.message),
            };
            if status >= 500 {
                Sent::Transport(error.to_string())
            } else {
                Sent::Final(error)
            }
        }
        octocrab::Error::Service { source, .. } => Sent::Transport(source.to_string()),
        octocrab::Error::Hyper { source, .. } => Sent::Transport(source.to_string()),
        other => Sent::Final(Error::Config(format!("{method} {path}: {other}"))),
    }
}

pub(super) fn rate_headers(headers: &HeaderMap) -> RateHeaders {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    RateHeaders {
        retry_after: number("retry-after"),
        remaining: number("x-ratelimit-remaining"),
        reset: number("x-ratelimit-reset"),
    }
}

/// GitHub's `message` with its field errors, or the start of a body that is not GitHub's JSON.
pub(super) fn github_message(text: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<Value>,
    }
    match serde_json::from_str::<Body>(text) {
        Ok(Body {
            message: Some(message),
            errors,
        }) => {
            let details: Vec<String> = errors
                .iter()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => {
                        if let Some(Value::String(m)) = o.get("message") {
                            m.clone()
                        } else {
                            let get = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
                            format!("{} {} {}", get("resource"), get("field"), get("code"))
                                .trim()
                                .to_string()
                        }
                    }
                    other => other.to_string(),
                })
                .collect();
            if details.is_empty() {
                message
            } else {
                format!("{message} ({})", details.join("; "))
            }
        }
        _ => {
            let text = text.trim();
            if text.is_empty() {
                "(empty answer)".to_string()
            } else {
                text.chars().take(300).collect()
            }
        }
    }
}

pub(super) fn parse<T: DeserializeOwned>(method: &Method, path: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        what: format!("the answer to {method} {path}"),
        source,
    })
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `owner/name`, encoded for a path.
pub(super) fn repo_path(repo: &Repo) -> String {
    format!("{}/{}", encode(&repo.owner), encode(&repo.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn paths_are_encoded() {
        assert_eq!(encode("a b/c?d#e"), "a%20b%2Fc%3Fd%23e");
        assert_eq!(encode("v1.2.3-rc_1~x"), "v1.2.3-rc_1~x");
    }

    #[test]
    pub(super) fn messages_carry_field_errors() {
        let body = r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","field":"head","code":"invalid"},{"message":"A pull request already exists"}]}"#;
        assert_eq!(
            github_message(body),
            "Validation Failed (PullRequest head invalid; A pull request already exists)"
        );
        assert_eq!(github_message(r#"{"message":"Not Found"}"#), "Not Found");
        assert_eq!(
            github_message("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(github_message(""), "(empty answer)");
    }
}
