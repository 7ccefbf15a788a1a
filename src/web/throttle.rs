//! Failed admin authentication, counted per client address and slowed down.
//!
//! The admin token is 256 bits, so guessing it is hopeless; the throttle is for what guessing
//! costs everyone else (each try is a request the daemon serves) and for the operator, who
//! should see it. After a few free mistakes (a typo, a stale token in a script), each further
//! failure from an address doubles the wait before that address may try again, up to
//! [`MAX_WAIT`]. Until then its tries are answered `429` with `Retry-After`, without looking
//! at the token. A success clears the address. Failures are logged with the address, never
//! with what was sent, and counted for `/metrics`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures an address may make before it has to wait.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// The first wait; each failure after it doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// An address not seen failing for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Addresses tracked at most: the oldest are forgotten first, so a flood from many addresses
/// cannot grow the table without bound.
const MAX_ADDRESSES: usize = 10_000;

/// Which door was knocked on, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `Authorization: Bearer` on `/api/*` or `/metrics`.
    Api,
    /// The admin UI's login form.
    Login,
}

impl Door {
    fn as_str(self) -> &'static str {
        match self {
            Door::Api => "api",
            Door::Login => "login",
        }
    }
}

#[derive(Debug)]
struct Record {
    failures: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Shared by the API and the UI: one budget per address, whichever door it uses.
#[derive(Clone, Default)]
pub struct Throttle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    records: Mutex<HashMap<IpAddr, Record>>,
    /// How many addresses `records` holds, read without the lock: every API request asks,
    /// and nearly always nobody is being throttled.
    tracked: AtomicUsize,
    failed_api: AtomicU64,
    failed_login: AtomicU64,
    refused: AtomicU64,
}

impl Throttle {
    /// `Some(wait)` when `addr` must wait before it may try again.
    pub fn wait(&self, addr: IpAddr) -> Option<Duration> {
        if self.inner.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        let until = records.get(&addr)?.until?;
        let left = until.checked_duration_since(now)?;
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        Some(left)
    }

    /// Records a failed try from `addr` at `door`.
    pub fn failed(&self, addr: IpAddr, door: Door) {
        let now = Instant::now();
        match door {
            Door::Api => &self.inner.failed_api,
            Door::Login => &self.inner.failed_login,
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
        if records.len() >= MAX_ADDRESSES && !records.contains_key(&addr) {
            if let Some(oldest) = records.iter().min_by_key(|(_, r)| r.last).map(|(a, _)| *a) {
                records.remove(&oldest);
            }
        }
        let r = records.entry(addr).or_insert(Record {
            failures: 0,
            last: now,
            until: None,
        });
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        let wait = wait_after(r.failures);
        r.until = wait.map(|w| now + w);
        let (failures, len) = (r.failures, records.len());
        self.inner.tracked.store(len, Ordering::Relaxed);
        // The first failure and each one that lengthens the wait, so a flood is a few lines.
        if failures == 1 || wait.is_some_and(|w| w < MAX_WAIT) || failures % 100 == 0 {
            tracing::warn!(
                client = %addr,
                door = door.as_str(),
                failures,
                wait_s = wait.map(|w| w.as_secs()).unwrap_or(0),
                "failed admin authentication"
            );
        }
    }

    /// Clears `addr` after it authenticated.
    pub fn succeeded(&self, addr: IpAddr) {
        if self.inner.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(&addr);
        self.inner.tracked.store(records.len(), Ordering::Relaxed);
    }

    /// Prometheus lines for `/metrics`.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP baton_auth_failures_total Failed admin authentications.\n# TYPE baton_auth_failures_total counter\nbaton_auth_failures_total{{door=\"api\"}} {}\nbaton_auth_failures_total{{door=\"login\"}} {}\n\
             # HELP baton_auth_throttled_total Tries refused because the address must wait.\n# TYPE baton_auth_throttled_total counter\nbaton_auth_throttled_total {}\n",
            self.inner.failed_api.load(Ordering::Relaxed),
            self.inner.failed_login.load(Ordering::Relaxed),
            self.inner.refused.load(Ordering::Relaxed),
        )
    }
}

/// The client's address as the socket says (a proxy's, behind one; never a header's claim,
/// which anyone can write). Unknown (a router driven without a socket) counts as one address.
pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|axum::extract::ConnectInfo(peer)| peer.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The wait after the `n`th failure in a row.
fn wait_after(n: u32) -> Option<Duration> {
    if n <= FREE_FAILURES {
        return None;
    }
    let doublings = (n - FREE_FAILURES - 1).min(16);
    Some((FIRST_WAIT * (1u32 << doublings)).min(MAX_WAIT))
}

/// The `Retry-After` value for `wait`: whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> String {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .max(1)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_failures_and_a_success_clears_them() {
        assert_eq!(wait_after(FREE_FAILURES), None);
        assert_eq!(wait_after(FREE_FAILURES + 1), Some(Duration::from_secs(1)));
        assert_eq!(wait_after(FREE_FAILURES + 2), Some(Duration::from_secs(2)));
        assert_eq!(wait_after(FREE_FAILURES + 5), Some(Duration::from_secs(16)));
        assert_eq!(wait_after(1000), Some(MAX_WAIT));
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            t.failed(a, Door::Login);
            assert_eq!(t.wait(a), None);
        }
        t.failed(a, Door::Api);
        assert!(t.wait(a).is_some_and(|w| w <= Duration::from_secs(1)));
        assert_eq!(t.wait(b), None, "another address is not slowed");
        t.succeeded(a);
        assert_eq!(t.wait(a), None);
        let m = t.metrics();
        assert!(
            m.contains("baton_auth_failures_total{door=\"login\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("baton_auth_failures_total{door=\"api\"} 1"),
            "{m}"
        );
        assert!(m.contains("baton_auth_throttled_total 1"), "{m}");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
    }
}
