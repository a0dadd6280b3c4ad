//! Metrics in the Prometheus text exposition format (version 0.0.4), as
//! both daemons serve them: lock-free counters and histograms that hot
//! paths update with one atomic add, and the writer of a scrape.
//!
//! Kept here, beside the wire protocol, because the controller and the
//! agent share it and neither depends on the other.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) for durations from a millisecond to ten minutes:
/// store commits and plugin calls at the low end, actions at the high end.
pub const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

/// A histogram over fixed buckets: one atomic add per bucket it falls in
/// (stored non-cumulative, summed when written; above the last bound, the
/// overflow) and a compare-and-swap for the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    /// Observations above the last bound (`+Inf` only). The count is the
    /// buckets plus these, summed from one read of each: a separate count
    /// read before or after the buckets could fall below the last finite
    /// bucket when an observation lands in between, which Prometheus takes
    /// for a broken histogram.
    overflow: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(DURATION_BUCKETS)
    }
}

impl Histogram {
    /// `bounds` must be increasing; `+Inf` is implied.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        match self.bounds.iter().position(|b| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(self.buckets.iter())
            .map(|(bound, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: cumulative + self.overflow.load(Ordering::Relaxed),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

/// A histogram as written: cumulative counts per upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// What kind of family a metric is (its `# TYPE` line).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// The text of one scrape, family by family: [`Text::family`] writes the
/// `# HELP` and `# TYPE` lines, then samples follow.
#[derive(Debug, Clone, Default)]
pub struct Text(String);

impl Text {
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.0.push_str(name);
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {}", number(value));
        self
    }

    /// A family of one sample without labels.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: f64) -> &mut Self {
        self.family(name, help, kind).sample(name, &[], value)
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) -> &mut Self {
        for (bound, n) in &h.buckets {
            let _ = write!(self.0, "{name}_bucket");
            write_labels(&mut self.0, labels, Some(&number(*bound)));
            let _ = writeln!(self.0, " {n}");
        }
        let _ = write!(self.0, "{name}_bucket");
        write_labels(&mut self.0, labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", h.count);
        let _ = write!(self.0, "{name}_sum");
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {}", number(h.sum));
        let _ = write!(self.0, "{name}_count");
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {}", h.count);
        self
    }

    pub fn finish(self) -> String {
        self.0
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A sample value: integers without a fraction, the infinities and NaN as
/// the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_counts_everything() {
        let h = Histogram::new(&[0.1, 1.0, 10.0]);
        for v in [0.05, 0.1, 0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        // 0.1 falls in its own bucket (`le` is inclusive); 50 only in +Inf.
        assert_eq!(s.buckets, vec![(0.1, 2), (1.0, 3), (10.0, 4)]);
        assert_eq!(s.count, 5);
        assert!((s.sum - 55.65).abs() < 1e-9);
        h.observe_duration(Duration::from_millis(20));
        assert_eq!(h.snapshot().buckets[0], (0.1, 3));
    }

    /// Observations racing a scrape never leave `+Inf` (the count) below
    /// the last finite bucket, and a later scrape never counts fewer.
    #[test]
    fn a_snapshot_taken_while_observing_is_consistent() {
        static H: std::sync::LazyLock<Histogram> = std::sync::LazyLock::new(|| Histogram::new(&[1.0]));
        let observers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..200_000 {
                        H.observe(0.5);
                    }
                })
            })
            .collect();
        let mut last = 0;
        while observers.iter().any(|t| !t.is_finished()) {
            let s = H.snapshot();
            assert!(s.count >= s.buckets[0].1, "{s:?}");
            assert!(s.count >= last);
            last = s.count;
        }
        observers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(H.snapshot().count, 400_000);
    }

    #[test]
    fn text_has_help_type_samples_and_escaped_labels() {
        let mut t = Text::default();
        t.single("up", "whether it is up", Kind::Gauge, 1.0);
        t.family("runs_total", "runs, by \"pipeline\"\nand status", Kind::Counter)
            .sample("runs_total", &[("pipeline", "a\"b\\c\nd"), ("status", "Failed")], 3.0)
            .sample("runs_total", &[("pipeline", "x")], 0.5);
        let h = Histogram::new(&[0.5]);
        h.observe(0.25);
        h.observe(2.0);
        t.family("took_seconds", "how long", Kind::Histogram).histogram("took_seconds", &[("p", "q")], &h.snapshot());
        let text = t.finish();
        let expected = "# HELP up whether it is up\n# TYPE up gauge\nup 1\n\
            # HELP runs_total runs, by \"pipeline\"\\nand status\n# TYPE runs_total counter\n\
            runs_total{pipeline=\"a\\\"b\\\\c\\nd\",status=\"Failed\"} 3\nruns_total{pipeline=\"x\"} 0.5\n\
            # HELP took_seconds how long\n# TYPE took_seconds histogram\n\
            took_seconds_bucket{p=\"q\",le=\"0.5\"} 1\ntook_seconds_bucket{p=\"q\",le=\"+Inf\"} 2\n\
            took_seconds_sum{p=\"q\"} 2.25\ntook_seconds_count{p=\"q\"} 2\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn numbers_are_written_as_the_format_spells_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(-2.0), "-2");
        assert_eq!(number(0.001), "0.001");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e300).parse::<f64>().unwrap(), 1e300);
    }
}
