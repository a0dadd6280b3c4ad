//! How much a plugin call may log: a total and a rate.
//!
//! The total ([`MAX_LOG_BYTES`] per call) bounds what one action can put in
//! the store. The rate (a token bucket: [`LOG_BURST`] at once, refilled at
//! [`LOG_RATE`] per second) keeps a plugin that logs in a tight loop from
//! flooding the agent's link and the controller while the total is still far
//! off. Lines over the rate are dropped and counted; a line that passes says
//! how many were dropped before it (at most once a second), and so does the
//! end of the call.

use std::time::Instant;

/// Log bytes one call of a plugin may write.
pub const MAX_LOG_BYTES: usize = 8 << 20;
/// Bytes a call may log at once, before the rate applies.
pub const LOG_BURST: usize = 1 << 20;
/// Bytes per second a call may log once its burst is spent.
pub const LOG_RATE: usize = 256 << 10;
/// Bytes one log line keeps; the rest of a longer line is cut, and the line
/// says how much.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// A line cut to [`MAX_LINE_BYTES`] (at a character boundary).
pub(crate) fn clip(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return line.into();
    }
    let mut cut = MAX_LINE_BYTES;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} [... {} bytes cut]", &line[..cut], line.len() - cut).into()
}

#[derive(Debug)]
pub(crate) struct LogBudget {
    total: usize,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    /// When the last notice of dropped lines was given.
    noticed: Option<Instant>,
    capped: bool,
}

/// The shortest time between two notices of dropped lines.
const NOTICE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it, after these notices.
    Log(Vec<String>),
    /// Log only these notices (possibly none) and drop the line.
    Drop(Vec<String>),
}

impl LogBudget {
    pub fn new(now: Instant) -> Self {
        Self { total: 0, tokens: LOG_BURST as f64, refilled: now, dropped: 0, noticed: None, capped: false }
    }

    pub fn admit(&mut self, bytes: usize, now: Instant) -> Verdict {
        if self.capped {
            return Verdict::Drop(vec![]);
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * LOG_RATE as f64).min(LOG_BURST as f64);
        let cost = bytes + 1;
        if (cost as f64) > self.tokens {
            self.dropped += 1;
            return Verdict::Drop(vec![]);
        }
        let due = self.noticed.is_none_or(|at| now.saturating_duration_since(at) >= NOTICE_EVERY);
        let mut notices: Vec<String> = if due { self.dropped_notice(now).into_iter().collect() } else { vec![] };
        self.tokens -= cost as f64;
        self.total += cost;
        if self.total >= MAX_LOG_BYTES {
            self.capped = true;
            notices
                .push(format!("[warn] the action logged more than {} MiB; further lines are dropped", MAX_LOG_BYTES >> 20));
            return Verdict::Drop(notices);
        }
        Verdict::Log(notices)
    }

    /// The notice for lines dropped by the rate since the last one, if any.
    pub fn dropped_notice(&mut self, now: Instant) -> Option<String> {
        (self.dropped > 0).then(|| {
            self.noticed = Some(now);
            let n = std::mem::take(&mut self.dropped);
            format!(
                "[warn] {n} log line{} dropped: the action logged faster than {} KiB/s",
                if n == 1 { " was" } else { "s were" },
                LOG_RATE >> 10
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_applies_and_drops_are_counted() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        let line = 1023; // 1 KiB with its newline
        for _ in 0..LOG_BURST / 1024 {
            assert_eq!(b.admit(line, t0), Verdict::Log(vec![]));
        }
        assert_eq!(b.admit(line, t0), Verdict::Drop(vec![]));
        assert_eq!(b.admit(line, t0), Verdict::Drop(vec![]));
        // A quarter second later a quarter of the rate is back.
        let later = t0 + Duration::from_millis(250);
        let Verdict::Log(notices) = b.admit(line, later) else { panic!("refilled") };
        assert_eq!(notices, ["[warn] 2 log lines were dropped: the action logged faster than 256 KiB/s"]);
        let mut passed = 1;
        while let Verdict::Log(_) = b.admit(line, later) {
            passed += 1;
        }
        assert_eq!(passed, LOG_RATE / 4 / 1024);
        // Within a second of a notice, lines pass without another one.
        let soon = later + Duration::from_millis(500);
        assert_eq!(b.admit(line, soon), Verdict::Log(vec![]));
        while let Verdict::Log(_) = b.admit(line, soon) {}
        assert!(b.dropped_notice(soon).unwrap().contains("2 log lines were dropped"));
        assert_eq!(b.dropped_notice(soon), None);
    }

    #[test]
    fn the_total_caps_a_slow_steady_logger() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(t0);
        let mut logged = 0;
        let mut last = Vec::new();
        for i in 0..100_000u64 {
            // 100 KiB a second: under the rate, so only the total stops it.
            match b.admit(1023, t0 + Duration::from_millis(10 * i)) {
                Verdict::Log(_) => logged += 1024,
                Verdict::Drop(notices) => {
                    last.extend(notices);
                    break;
                }
            }
        }
        assert!(logged < MAX_LOG_BYTES && logged + 1024 >= MAX_LOG_BYTES, "{logged}");
        assert!(last[0].contains("more than 8 MiB"), "{last:?}");
        assert_eq!(b.admit(1, t0 + Duration::from_secs(3600)), Verdict::Drop(vec![]));
    }

    #[test]
    fn a_very_long_line_is_cut_not_dropped() {
        let line = "é".repeat(MAX_LINE_BYTES); // twice the limit in bytes
        let clipped = clip(&line);
        assert!(clipped.len() < MAX_LINE_BYTES + 64, "{}", clipped.len());
        assert!(clipped.ends_with(&format!("[... {} bytes cut]", MAX_LINE_BYTES)), "{}", &clipped[clipped.len() - 40..]);
        assert_eq!(clip("short"), "short");
        let mut b = LogBudget::new(Instant::now());
        assert!(matches!(b.admit(clipped.len(), Instant::now()), Verdict::Log(_)));
    }
}
