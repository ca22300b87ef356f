//! When and how long to retry a request to the lake: transient failures (throttling, server
//! busy, a dropped connection) are retried with exponential backoff and jitter, honouring
//! Retry-After, within a bounded number of attempts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attempts per request, the first included.
pub const ATTEMPTS: u32 = 4;
const BASE: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(10);

/// HTTP statuses worth another try: timeouts, throttling and server-side failures.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// How long to wait before attempt `attempt + 1` (attempt 0 was the first): 100 ms doubling,
/// scaled by a jitter factor in [0.5, 1.5), at least what the server asked for, at most 10 s.
pub fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    delay_from(BASE, attempt, retry_after, jitter)
}

/// [`delay`] with another first delay (`base`).
pub fn delay_from(
    base: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let backoff = base
        .saturating_mul(1 << attempt.min(16))
        .mul_f64(0.5 + jitter.clamp(0.0, 1.0));
    backoff.max(retry_after.unwrap_or_default()).min(MAX_DELAY)
}

/// A cheap jitter source in [0, 1): retries need spread, not cryptographic randomness.
pub fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (nanos.wrapping_mul(2_654_435_761) % 1_000_000) as f64 / 1_000_000.0
}

/// `Retry-After` in seconds (the form Azure sends).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 503] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 403, 404, 409, 412] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_honours_retry_after_and_is_capped() {
        assert_eq!(delay(0, None, 0.5), Duration::from_millis(100));
        assert_eq!(delay(2, None, 0.5), Duration::from_millis(400));
        assert_eq!(delay(2, None, 0.0), Duration::from_millis(200));
        assert_eq!(
            delay(0, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(delay(20, None, 0.9), Duration::from_secs(10));
        assert_eq!(
            delay(0, Some(Duration::from_secs(60)), 0.5),
            Duration::from_secs(10)
        );
        assert_eq!(parse_retry_after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(Some("soon")), None);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
