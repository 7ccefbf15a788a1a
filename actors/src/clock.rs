//! Time as the engine counts it: [`Millis`] since the Unix epoch, and [`now_ms`]. A leaf: it
//! imports nothing of this crate, so any module may read the clock without a cycle.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
