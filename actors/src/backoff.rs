//! The one backoff every retry in baton uses: a delay that grows by a factor per retry up to a
//! cap, optionally with "equal jitter" (half the delay fixed, half drawn) so that the retries of
//! many runs or daemons do not arrive together. Step retries (`RetryPolicy`), the GitHub
//! client, the notifier's sinks and the model providers all call [`delay`].

use std::time::Duration;

/// The delay before retry number `retry` (1 for the first): `initial * factor^(retry-1)`,
/// capped at `max`. With `jitter = Some(r)`, `r` in `[0, 1)`, the delay is spread over
/// `[d/2, d]`.
pub fn delay(
    initial: Duration,
    factor: f64,
    max: Duration,
    retry: u32,
    jitter: Option<f64>,
) -> Duration {
    let exp = retry.saturating_sub(1).min(64) as i32;
    let grown = initial.as_secs_f64() * factor.max(1.0).powi(exp);
    let capped = grown.min(max.as_secs_f64()).max(0.0);
    let secs = match jitter {
        Some(r) => capped * (0.5 + 0.5 * r.clamp(0.0, 1.0)),
        None => capped,
    };
    Duration::try_from_secs_f64(secs).unwrap_or(max)
}

/// Doubling from `initial` up to `max`, jittered with a fresh draw.
pub fn jittered(initial: Duration, max: Duration, retry: u32) -> Duration {
    delay(initial, 2.0, max, retry, Some(fastrand::f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn grows_by_the_factor_and_caps() {
        let max = Duration::from_secs(10);
        let d: Vec<u64> = (1..=6)
            .map(|n| delay(S, 2.0, max, n, None).as_secs())
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(delay(S, 2.0, max, u32::MAX, None), max);
        assert_eq!(delay(S, 2.0, max, 0, None), S);
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        let max = Duration::from_secs(60);
        assert_eq!(delay(S * 4, 2.0, max, 1, Some(0.0)), S * 2);
        assert_eq!(delay(S * 4, 2.0, max, 1, Some(1.0)), S * 4);
        for n in 1..8 {
            let d = jittered(S, max, n);
            let full = delay(S, 2.0, max, n, None);
            assert!(
                d >= full / 2 && d <= full,
                "{d:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn a_huge_factor_saturates_at_the_cap() {
        let max = Duration::from_secs(5);
        assert_eq!(delay(S, 1e300, max, 50, None), max);
        assert_eq!(delay(Duration::MAX, 2.0, max, 3, None), max);
    }
}
