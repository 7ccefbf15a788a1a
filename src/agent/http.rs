//! One JSON POST to a model provider, made resilient: a timeout per attempt, retries with
//! backoff on 429, 5xx, timeouts and connection errors (honouring `Retry-After` and
//! `retry-after-ms`), and cancellation. Error texts are redacted; headers are never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use baton_actors::backoff;

use crate::agent::error::{Error, Result};
use crate::agent::transcript::Redactor;

/// First backoff when the server gives no `Retry-After`; doubled per attempt.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest backoff without `Retry-After`.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A provider's HTTP client.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub provider: &'static str,
    pub timeout: Duration,
    pub max_retries: u32,
    pub redactor: Redactor,
}

/// What a POST came to, when it did not fail.
pub(crate) enum Posted {
    Json(Value),
    /// The time budget ran out while waiting for an answer or a retry.
    OutOfTime,
}

impl Http {
    pub fn new(
        provider: &'static str,
        timeout: Duration,
        max_retries: u32,
        redactor: Redactor,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            provider,
            timeout,
            max_retries,
            redactor,
        })
    }

    /// POSTs `body` to `url`; `remaining` is the time budget left; `notes` gets one line per retry.
    pub async fn post_json(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
        remaining: impl Fn() -> Duration,
        cancel: &CancellationToken,
        notes: &mut Vec<String>,
    ) -> Result<Posted> {
        let mut attempt = 0u32;
        loop {
            let left = remaining();
            if left.is_zero() {
                return Ok(Posted::OutOfTime);
            }
            let per_attempt = self.timeout.min(left);
            let send = self
                .client
                .post(url)
                .headers(headers.clone())
                .json(body)
                .timeout(per_attempt)
                .send();
            let result = tokio::select! {
                r = send => r,
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            };
            let (retry_after, why) = match result {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let text = tokio::select! {
                            t = resp.text() => t,
                            _ = cancel.cancelled() => return Err(Error::Cancelled),
                        };
                        match text {
                            Ok(t) => {
                                return serde_json::from_str(&t).map(Posted::Json).map_err(|e| {
                                    Error::Protocol {
                                        provider: self.provider,
                                        message: format!(
                                            "body is not JSON ({e}): {}",
                                            self.excerpt(&t)
                                        ),
                                    }
                                })
                            }
                            Err(e) => (None, format!("reading the body failed: {e}")),
                        }
                    } else {
                        let retry_after = retry_after(resp.headers());
                        let text = resp.text().await.unwrap_or_default();
                        let why = format!("HTTP {status}: {}", self.excerpt(&text));
                        if status.as_u16() != 429 && !status.is_server_error() {
                            return Err(Error::Provider {
                                provider: self.provider,
                                message: why,
                            });
                        }
                        (retry_after, why)
                    }
                }
                Err(e) if e.is_timeout() && remaining().is_zero() => return Ok(Posted::OutOfTime),
                Err(e) if e.is_timeout() => (
                    None,
                    format!(
                        "no answer within {:.1}s (request timed out)",
                        per_attempt.as_secs_f64()
                    ),
                ),
                Err(e) => {
                    // reqwest's own text is generic; the cause (refused, reset, DNS) is in the chain.
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        text.push_str(&format!(": {cause}"));
                        source = cause.source();
                    }
                    (None, self.redactor.redact(&text))
                }
            };
            if attempt >= self.max_retries {
                return Err(Error::Provider {
                    provider: self.provider,
                    message: format!("{why} (gave up after {} attempts)", attempt + 1),
                });
            }
            let wait = retry_after
                .unwrap_or_else(|| backoff::jittered(BACKOFF_START, BACKOFF_MAX, attempt + 1));
            if wait >= remaining() {
                notes.push(format!(
                    "{why}; a retry in {:.1}s would pass the time budget",
                    wait.as_secs_f64()
                ));
                return Ok(Posted::OutOfTime);
            }
            notes.push(format!(
                "{why}; retry {} in {:.1}s",
                attempt + 1,
                wait.as_secs_f64()
            ));
            tracing::warn!(
                provider = self.provider,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying model request"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            }
            attempt += 1;
        }
    }

    fn excerpt(&self, text: &str) -> String {
        let t: String = text.chars().take(500).collect();
        self.redactor.redact(&t)
    }
}

/// The wait a response asks for: `retry-after-ms`, or `Retry-After` in seconds or as a date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_millis(ms as u64));
        }
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::timestamp::parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO)); // in the past
    }
}
