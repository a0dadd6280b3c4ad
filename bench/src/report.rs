//! What a run found: figures with their budget (docs/design.md section 8), the
//! machine they were measured on, and the command; printed as a table or as
//! one JSON document. Knows nothing of how figures are measured.

use serde_json::{Value, json};
use std::time::Duration;

/// A bound from the budget.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Below(f64),
    AtLeast(f64),
}

impl Budget {
    fn holds(self, value: f64) -> bool {
        match self {
            Budget::Below(b) => value < b,
            Budget::AtLeast(b) => value >= b,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Budget::Below(b) => format!("< {} {unit}", number(b)),
            Budget::AtLeast(b) => format!(">= {} {unit}", number(b)),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub budget: Option<Budget>,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &'static str) -> Self {
        Self { name: name.to_string(), value, unit, budget: None }
    }

    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// `None` when the figure has no budget.
    pub fn holds(&self) -> Option<bool> {
        self.budget.map(|b| b.holds(self.value))
    }
}

/// The outcome of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub parameters: Value,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    pub fn new(scenario: &'static str, parameters: Value) -> Self {
        Self { scenario, parameters, figures: Vec::new(), notes: Vec::new() }
    }

    pub fn figure(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// A whole run.
pub struct Report {
    pub smoke: bool,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    fn verdict(&self, f: &Figure) -> &'static str {
        match (self.smoke, f.holds()) {
            (_, None) => "-",
            (true, Some(_)) => "(smoke)",
            (false, Some(true)) => "ok",
            (false, Some(false)) => "SHORT",
        }
    }

    /// Figures that miss their budget, as `scenario: figure`.
    pub fn shortfalls(&self) -> Vec<String> {
        if self.smoke {
            return Vec::new();
        }
        self.scenarios
            .iter()
            .flat_map(|s| {
                s.figures.iter().filter(|f| f.holds() == Some(false)).map(move |f| {
                    format!(
                        "{}: {} is {} {}, budget {}",
                        s.scenario,
                        f.name,
                        number(f.value),
                        f.unit,
                        f.budget.map(|b| b.text(f.unit)).unwrap_or_default()
                    )
                })
            })
            .collect()
    }

    pub fn table(&self) -> String {
        let mut rows = vec![["scenario".to_string(), "figure".into(), "measured".into(), "budget".into(), "verdict".into()]];
        for s in &self.scenarios {
            for f in &s.figures {
                rows.push([
                    s.scenario.to_string(),
                    f.name.clone(),
                    format!("{} {}", number(f.value), f.unit),
                    f.budget.map(|b| b.text(f.unit)).unwrap_or_else(|| "-".into()),
                    self.verdict(f).to_string(),
                ]);
            }
        }
        let m = machine();
        let mut out = format!(
            "machine: {}, {} cores, {} MiB, Linux {}\n\n",
            m["cpu"].as_str().unwrap_or_default(),
            m["cores"],
            m["memoryMiB"],
            m["kernel"].as_str().unwrap_or_default()
        );
        let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        for (n, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&format!("| {} |\n", rule.join(" | ")));
            }
        }
        for s in &self.scenarios {
            for note in &s.notes {
                out.push_str(&format!("\n{}: {note}", s.scenario));
            }
        }
        out.push('\n');
        let short = self.shortfalls();
        if self.smoke {
            out.push_str(
                "\nsmoke run: every scenario ran with tiny sizes; the figures are not comparable with the budget\n",
            );
        } else if short.is_empty() {
            out.push_str("\nevery figure with a budget holds it\n");
        } else {
            out.push_str("\nfalls short of the budget:\n");
            for s in short {
                out.push_str(&format!("  - {s}\n"));
            }
        }
        out
    }

    pub fn json(&self, command: &[String]) -> Value {
        json!({
            "command": command,
            "smoke": self.smoke,
            "machine": machine(),
            "scenarios": self.scenarios.iter().map(|s| json!({
                "scenario": s.scenario,
                "parameters": s.parameters,
                "figures": s.figures.iter().map(|f| json!({
                    "figure": f.name,
                    "value": f.value,
                    "unit": f.unit,
                    "budget": f.budget.map(|b| b.text(f.unit)),
                    "verdict": self.verdict(f),
                })).collect::<Vec<_>>(),
                "notes": s.notes,
            })).collect::<Vec<_>>(),
            "shortfalls": self.shortfalls(),
        })
    }
}

/// CPU model, cores, memory and kernel, from /proc.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memoryMiB": memory_kib / 1024,
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// A number as a person reads it: few digits, no exponent.
pub fn number(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The `p`-th percentile (0..=100) of samples, nearest rank.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// The machine's CPU time so far, from the first line of `/proc/stat`:
/// busy and total, in seconds summed over all cores. The difference of two
/// readings says how much of the cores a phase used, and whether it left
/// them idle (a stall) or was bound by them.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub busy: f64,
    pub total: f64,
}

impl CpuTime {
    pub fn now() -> anyhow::Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    fn parse(stat: &str) -> anyhow::Result<Self> {
        let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or_else(|| anyhow::anyhow!("no cpu line"))?;
        let ticks: Vec<f64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
        // user nice system idle iowait irq softirq steal ...; USER_HZ is 100 on Linux.
        let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        let total: f64 = ticks.iter().take(8).sum();
        Ok(Self { busy: (total - idle) / 100.0, total: total / 100.0 })
    }

    /// What was used between `earlier` and this reading.
    pub fn since(self, earlier: Self) -> Self {
        Self { busy: self.busy - earlier.busy, total: self.total - earlier.total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_iowait_as_idle() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        let t = CpuTime::parse(stat).unwrap();
        assert!((t.busy - 1.5).abs() < 1e-9 && (t.total - 10.0).abs() < 1e-9, "{t:?}");
        assert!(CpuTime::parse("intr 1 2\n").is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn a_missed_budget_is_named() {
        let mut s = ScenarioReport::new("overhead", json!({}));
        s.figure(Figure::new("p50", 2.0, "ms").budget(Budget::Below(1.0)));
        s.figure(Figure::new("p99", 2.0, "ms").budget(Budget::Below(5.0)));
        let report = Report { smoke: false, scenarios: vec![s] };
        assert_eq!(report.shortfalls(), ["overhead: p50 is 2.00 ms, budget < 1.00 ms"]);
        assert!(report.table().contains("SHORT"));
    }
}
