//! Timestamps as users and GitHub write them: RFC 3339 in UTC, and HTTP dates read from
//! `Retry-After`. The calendar arithmetic is the `time` and `httpdate` crates'.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

fn utc(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn seconds(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-24T21:34:00.123Z` from milliseconds since the epoch (baton's own records).
pub fn rfc3339_millis(ms: u64) -> String {
    let t = utc(ms);
    format!("{}.{:03}Z", seconds(t), t.millisecond())
}

/// `2026-11-24T21:34:00Z` from seconds since the epoch (GitHub's shape).
pub fn rfc3339_secs(secs: u64) -> String {
    format!("{}Z", seconds(utc(secs.saturating_mul(1000))))
}

/// Now, as [`rfc3339_secs`].
pub fn now_rfc3339_secs() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339_secs(secs)
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the two obsolete forms) as seconds
/// since the epoch; `None` when it is not one.
pub fn parse_http_date(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s.trim())
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .as_ref()
        .map(Duration::as_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_795_478_400_123),
            "2026-11-24T00:00:00.123Z"
        );
        assert_eq!(rfc3339_secs(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_secs(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_secs(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(now_rfc3339_secs().len(), 20);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("soon"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    }
}
