//! What an attempt's answer means and when the next one is due: 2xx is
//! delivered; 408, 429, 5xx and transport errors (refused connection,
//! timeout, TLS) are tried again with exponential backoff; any other
//! answer (4xx, a redirect, which is not followed) is final at once. A
//! delivery past its attempts or its age is a dead letter. Pure.

use std::time::Duration;

/// How deliveries are retried (`sluice controller` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each next one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// A delivery not delivered this long after its event is dead.
    pub max_age: Duration,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered this HTTP status.
    Status(u16),
    /// No answer: the connection, TLS or the request failed or timed out.
    Transport(String),
    /// The controller would not send it (an address the policy refuses, a
    /// rule that no longer opens): never worth another attempt.
    Refused(String),
}

/// What happens to the delivery next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again at this time (ms since the epoch), having failed with this.
    Retry {
        at: u64,
        error: String,
    },
    /// A dead letter, with why.
    Dead(String),
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1 for the first).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self.first_backoff.saturating_mul(1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX));
        doubled.min(self.max_backoff)
    }

    /// Decides after attempt number `attempts` (1 for the first) of a
    /// delivery made at `created_at`, ended at `now`.
    pub fn next(&self, attempt: &Attempt, attempts: u32, created_at: u64, now: u64) -> Next {
        let error = match attempt {
            Attempt::Status(code) if (200..300).contains(code) => return Next::Delivered,
            Attempt::Status(code @ (408 | 429)) => format!("HTTP {code}"),
            Attempt::Status(code) if *code >= 500 => format!("HTTP {code}"),
            Attempt::Status(code) if (300..400).contains(code) => {
                return Next::Dead(format!("HTTP {code}: redirects are not followed"));
            }
            Attempt::Status(code) => return Next::Dead(format!("HTTP {code}: refused by the receiver, not retried")),
            Attempt::Transport(e) => e.clone(),
            Attempt::Refused(e) => return Next::Dead(e.clone()),
        };
        if attempts >= self.max_attempts {
            return Next::Dead(format!("{error} (gave up after {attempts} attempts)"));
        }
        let at = now + self.backoff(attempts).as_millis() as u64;
        if at > created_at + self.max_age.as_millis() as u64 {
            return Next::Dead(format!("{error} (gave up: older than {} s)", self.max_age.as_secs()));
        }
        Next::Retry { at, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=11).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(p.backoff(200), Duration::from_secs(300));
    }

    #[test]
    fn answers_decide_retry_or_dead_letter() {
        let p = RetryPolicy::default();
        assert_eq!(p.next(&Attempt::Status(204), 1, 0, 10), Next::Delivered);
        assert_eq!(p.next(&Attempt::Status(503), 1, 0, 10), Next::Retry { at: 1010, error: "HTTP 503".into() });
        assert_eq!(p.next(&Attempt::Status(429), 3, 0, 10), Next::Retry { at: 4010, error: "HTTP 429".into() });
        assert!(matches!(p.next(&Attempt::Status(408), 1, 0, 10), Next::Retry { .. }));
        assert!(matches!(p.next(&Attempt::Transport("connection refused".into()), 1, 0, 10), Next::Retry { .. }));
        assert!(matches!(p.next(&Attempt::Status(404), 1, 0, 10), Next::Dead(e) if e.contains("404")));
        assert!(matches!(p.next(&Attempt::Status(301), 1, 0, 10), Next::Dead(e) if e.contains("redirect")));
        assert!(matches!(p.next(&Attempt::Refused("metadata".into()), 1, 0, 10), Next::Dead(e) if e == "metadata"));
    }

    #[test]
    fn attempts_and_age_are_bounded() {
        let p = RetryPolicy { max_attempts: 3, ..Default::default() };
        assert!(matches!(p.next(&Attempt::Status(500), 2, 0, 10), Next::Retry { .. }));
        assert!(matches!(p.next(&Attempt::Status(500), 3, 0, 10), Next::Dead(e) if e.contains("after 3 attempts")));
        let day = 24 * 3600 * 1000;
        assert!(matches!(p.next(&Attempt::Status(500), 1, 0, day), Next::Dead(e) if e.contains("older than")));
    }
}
