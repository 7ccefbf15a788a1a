//! When to retry a GitHub call and how long to wait: a pure function of the answer's status,
//! its rate-limit headers, the attempt number, the clock (as a value) and a jitter draw.
//!
//! GitHub's rules (REST "Rate limits" and "Best practices"): a primary limit is exhausted when
//! `x-ratelimit-remaining` is 0, and clears at `x-ratelimit-reset` (epoch seconds); a 403 or 429
//! with `Retry-After` asks for that many seconds; a secondary limit without headers asks for at
//! least a minute, growing on repeats. Server errors (5xx) and timeouts are retried with
//! exponential backoff and jitter; other 4xx answers are final.

use std::time::Duration;

/// How the github backend retries. Build with `RetryPolicy::default()` and change fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Backoff before the second attempt after a 5xx or timeout; doubles each attempt.
    pub initial_backoff: Duration,
    /// The longest backoff after a 5xx or timeout.
    pub max_backoff: Duration,
    /// The longest a call waits for a rate limit to clear; a longer wait is returned as
    /// `Error::RateLimited` so the engine can schedule the retry instead of holding a step.
    pub max_rate_limit_wait: Duration,
    /// Wait after a secondary rate limit that came without `Retry-After` (GitHub: "at least one
    /// minute"); doubles on repeats.
    pub secondary_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_rate_limit_wait: Duration::from_secs(120),
            secondary_rate_limit_wait: Duration::from_secs(60),
        }
    }
}

/// The rate-limit headers of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u64>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`, epoch seconds.
    pub reset: Option<u64>,
}

/// What to do with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A 2xx: done.
    Success,
    /// Wait this long and try again.
    Retry(Duration),
    /// Rate limited for longer than the policy waits (or out of attempts): give up with this wait.
    RateLimited(Duration),
    /// A final error.
    Fail,
}

/// Margin added to a reset time: GitHub's clock and ours differ by up to a second.
const RESET_MARGIN: Duration = Duration::from_millis(500);

/// Decides what to do after attempt number `attempt` (1-based) got `status`.
/// `now_ms` is the epoch time in milliseconds; `jitter` is a draw in `[0, 1)`.
pub(crate) fn verdict(
    status: u16,
    rate: RateHeaders,
    message: &str,
    attempt: u32,
    now_ms: u64,
    policy: &RetryPolicy,
    jitter: f64,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let rate_limited = status == 429
        || (status == 403
            && (rate.retry_after.is_some()
                || rate.remaining == Some(0)
                || message.to_ascii_lowercase().contains("rate limit")));
    if rate_limited {
        let wait = if let Some(secs) = rate.retry_after {
            Duration::from_secs(secs)
        } else if let (Some(0), Some(reset)) = (rate.remaining, rate.reset) {
            until_reset(reset, now_ms)
        } else {
            let doublings = attempt.saturating_sub(1).min(6);
            policy.secondary_rate_limit_wait * 2u32.pow(doublings)
        };
        // Jitter only lengthens a rate-limit wait: waking early would just hit the limit again.
        let wait = wait + wait.mul_f64(0.1 * jitter);
        return if wait > policy.max_rate_limit_wait || attempt >= policy.max_attempts {
            Verdict::RateLimited(wait)
        } else {
            Verdict::Retry(wait)
        };
    }
    if status >= 500 && attempt < policy.max_attempts {
        return Verdict::Retry(backoff(policy, attempt, jitter));
    }
    Verdict::Fail
}

/// How long until a primary limit resets at `reset` (epoch seconds), with a margin.
pub(crate) fn until_reset(reset: u64, now_ms: u64) -> Duration {
    Duration::from_millis((reset * 1000).saturating_sub(now_ms)) + RESET_MARGIN
}

/// Exponential backoff with "equal jitter": half the step fixed, half drawn.
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    baton_actors::backoff::delay(
        policy.initial_backoff,
        2.0,
        policy.max_backoff,
        attempt,
        Some(jitter),
    )
}

/// A jitter draw in `[0, 1)`.
pub(crate) fn jitter() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            max_rate_limit_wait: Duration::from_secs(30),
            secondary_rate_limit_wait: Duration::from_secs(5),
        }
    }

    fn check(status: u16, rate: RateHeaders, message: &str, attempt: u32, expected: Verdict) {
        let got = verdict(status, rate, message, attempt, 1_000_000, &policy(), 0.0);
        assert_eq!(
            got, expected,
            "status {status}, {rate:?}, {message:?}, attempt {attempt}"
        );
    }

    #[test]
    fn verdicts() {
        let none = RateHeaders::default();
        let ms = Duration::from_millis;
        check(200, none, "", 1, Verdict::Success);
        check(204, none, "", 4, Verdict::Success);
        // Server errors back off exponentially, capped, until attempts run out.
        check(500, none, "", 1, Verdict::Retry(ms(50)));
        check(502, none, "", 2, Verdict::Retry(ms(100)));
        check(503, none, "", 3, Verdict::Retry(ms(125)));
        check(503, none, "", 4, Verdict::Fail);
        // Plain client errors are final, 403 included.
        check(404, none, "Not Found", 1, Verdict::Fail);
        check(422, none, "Validation Failed", 1, Verdict::Fail);
        check(
            403,
            none,
            "Resource not accessible by integration",
            1,
            Verdict::Fail,
        );
        check(401, none, "Bad credentials", 1, Verdict::Fail);
        // Retry-After wins.
        let retry_after = RateHeaders {
            retry_after: Some(3),
            ..none
        };
        check(429, retry_after, "", 1, Verdict::Retry(ms(3000)));
        check(403, retry_after, "", 1, Verdict::Retry(ms(3000)));
        check(429, retry_after, "", 4, Verdict::RateLimited(ms(3000)));
        // Primary limit: wait until the reset (1_000_000 ms now, reset at 1_002 s) plus margin.
        let primary = RateHeaders {
            remaining: Some(0),
            reset: Some(1_002),
            ..none
        };
        check(
            403,
            primary,
            "API rate limit exceeded",
            1,
            Verdict::Retry(ms(2500)),
        );
        let far = RateHeaders {
            remaining: Some(0),
            reset: Some(4_000),
            ..none
        };
        check(403, far, "", 1, Verdict::RateLimited(ms(3_000_500)));
        // Secondary limit without headers: a minute by default, doubling.
        let secondary = "You have exceeded a secondary rate limit";
        check(403, none, secondary, 1, Verdict::Retry(ms(5000)));
        check(403, none, secondary, 2, Verdict::Retry(ms(10000)));
        check(403, none, secondary, 3, Verdict::Retry(ms(20000)));
        check(429, none, "", 4, Verdict::RateLimited(ms(40000)));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.iter().any(|j| (j - draws[0]).abs() > 1e-9));
        let p = policy();
        for j in draws {
            let b = backoff(&p, 2, j);
            assert!(b >= Duration::from_millis(100) && b <= Duration::from_millis(200));
        }
    }
}
