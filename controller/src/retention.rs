//! Retention of executions (issue 17, life): which finished executions a
//! pipeline no longer keeps, by count (`--keep-executions`) and by age
//! (`--keep-days`), globally or per pipeline. Pure: the driver reads the
//! executions' ages from the store, asks [`expired`], and deletes what it
//! names with its logs; the artifacts nothing refers to any more go with
//! the next collection. Knows nothing of the store or the engine.
//!
//! An execution that has not ended is never expired, whatever its place
//! or age: it still needs its artifacts, its logs and its record. Nor is,
//! per stage, the newest ended execution in which that stage succeeded: it
//! is the stage's rollback target (a manual rollback's default, and an
//! automated rollback's only one), and it stays beyond N and D: N keeps
//! the newest N, and the targets older than those stay besides (so a
//! pipeline whose runs all succeed keeps exactly N).

use std::collections::BTreeMap;

/// What one pipeline keeps; `None` is no limit of that kind. An execution
/// goes when it falls outside either limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// The newest N executions (running ones count among them).
    pub executions: Option<u32>,
    /// Executions that ended within the last D days.
    pub days: Option<u32>,
}

impl Keep {
    fn or(self, fallback: Keep) -> Keep {
        let limit = |own: Option<u32>, global: Option<u32>| own.or(global).filter(|n| *n != UNLIMITED);
        Keep { executions: limit(self.executions, fallback.executions), days: limit(self.days, fallback.days) }
    }

    pub fn is_unlimited(&self) -> bool {
        self.executions.is_none() && self.days.is_none()
    }
}

/// A pipeline's `PIPELINE=unlimited`: no limit of that kind, whatever the
/// global rule says (as a rule of its own, it overrides the global one).
const UNLIMITED: u32 = u32::MAX;

/// Which limit of a [`Keep`] a flag sets.
type Field = fn(&mut Keep) -> &mut Option<u32>;

/// The controller's retention: a global rule and rules of named pipelines,
/// which override the global one kind by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub global: Keep,
    pub pipelines: BTreeMap<String, Keep>,
}

impl Retention {
    /// From the values of `--keep-executions` and `--keep-days`: `N` (every
    /// pipeline) or `PIPELINE=N` (that pipeline), each N at least 1. Every
    /// problem is reported at once.
    pub fn parse(keep_executions: &[String], keep_days: &[String]) -> Result<Self, Vec<String>> {
        let mut retention = Retention::default();
        let mut problems = Vec::new();
        let kinds: [(&str, &[String], Field); 2] =
            [("--keep-executions", keep_executions, |k| &mut k.executions), ("--keep-days", keep_days, |k| &mut k.days)];
        for (flag, values, field) in kinds {
            for value in values {
                let (pipeline, n) = match value.split_once('=') {
                    Some((p, n)) => (Some(p.trim()), n.trim()),
                    None => (None, value.trim()),
                };
                let n = match n.parse::<u32>() {
                    Ok(n) if (1..UNLIMITED).contains(&n) => n,
                    // A pipeline exempted from the global rule.
                    _ if n == "unlimited" && pipeline.is_some() => UNLIMITED,
                    _ => {
                        problems.push(format!(
                            "{flag} {value:?}: expected N, PIPELINE=N or PIPELINE=unlimited, with N a whole number from 1"
                        ));
                        continue;
                    }
                };
                let keep = match pipeline {
                    Some("") => {
                        problems.push(format!("{flag} {value:?}: the pipeline name is empty"));
                        continue;
                    }
                    Some(p) => retention.pipelines.entry(p.to_string()).or_default(),
                    None => &mut retention.global,
                };
                if field(keep).replace(n).is_some() {
                    problems.push(format!("{flag} {value:?}: given twice for {}", pipeline.unwrap_or("every pipeline")));
                }
            }
        }
        if problems.is_empty() { Ok(retention) } else { Err(problems) }
    }

    /// Whether any pipeline has a limit.
    pub fn is_off(&self) -> bool {
        self.global.is_unlimited() && self.pipelines.values().all(|k| k.or(Keep::default()).is_unlimited())
    }

    /// The pipelines with rules of their own that are not among `known`
    /// (a misspelt name keeps nothing from the global rule).
    pub fn unknown_pipelines<'a>(&'a self, known: &std::collections::BTreeSet<String>) -> Vec<&'a str> {
        self.pipelines.keys().filter(|p| !known.contains(*p)).map(String::as_str).collect()
    }

    /// What `pipeline` keeps: its own rule, the global one where it has none.
    pub fn for_pipeline(&self, pipeline: &str) -> Keep {
        self.pipelines.get(pipeline).copied().unwrap_or_default().or(self.global)
    }
}

/// One execution as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Age {
    pub id: String,
    /// Neither in progress nor stopping.
    pub ended: bool,
    /// When it ended (its last change), ms since the epoch.
    pub updated_at: u64,
    /// The stages that succeeded in it (when it has ended).
    pub succeeded: Vec<String>,
}

const DAY_MS: u64 = 86_400_000;

/// The executions of one pipeline, newest first, that `keep` lets go at
/// `now`. The rollback targets (see the module) always stay.
pub fn expired(keep: Keep, newest_first: &[Age], now: u64) -> Vec<String> {
    let targets = rollback_targets(newest_first);
    let cutoff = keep.days.map(|d| now.saturating_sub(u64::from(d) * DAY_MS));
    newest_first
        .iter()
        .enumerate()
        .filter(|(_, age)| age.ended && !targets.contains(age.id.as_str()))
        .filter(|(place, age)| {
            let beyond_count = keep.executions.is_some_and(|n| *place >= n as usize);
            let too_old = cutoff.is_some_and(|c| age.updated_at < c);
            beyond_count || too_old
        })
        .map(|(_, age)| age.id.clone())
        .collect()
}

/// For each stage, the newest ended execution in which it succeeded.
fn rollback_targets(newest_first: &[Age]) -> std::collections::BTreeSet<&str> {
    let mut stages = std::collections::BTreeSet::new();
    let mut targets = std::collections::BTreeSet::new();
    for age in newest_first.iter().filter(|a| a.ended) {
        for stage in &age.succeeded {
            if stages.insert(stage.as_str()) {
                targets.insert(age.id.as_str());
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An execution in which no stage succeeded (see `good`).
    fn age(id: &str, ended: bool, days_ago: u64) -> Age {
        Age { id: id.into(), ended, updated_at: 100 * DAY_MS - days_ago * DAY_MS, succeeded: vec![] }
    }

    fn good(id: &str, days_ago: u64, stages: &[&str]) -> Age {
        Age { succeeded: strings(stages), ..age(id, true, days_ago) }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_give_a_global_rule_and_rules_per_pipeline() {
        let r = Retention::parse(&strings(&["20", "web=5"]), &strings(&["api=30"])).unwrap();
        assert_eq!(r.global, Keep { executions: Some(20), days: None });
        assert_eq!(r.for_pipeline("web"), Keep { executions: Some(5), days: None });
        assert_eq!(r.for_pipeline("api"), Keep { executions: Some(20), days: Some(30) });
        assert_eq!(r.for_pipeline("other"), Keep { executions: Some(20), days: None });
        assert!(!r.is_off());
        assert!(Retention::parse(&[], &[]).unwrap().is_off());
        // One pipeline exempted from the global rule, kind by kind.
        let r = Retention::parse(&strings(&["20", "release=unlimited"]), &strings(&["30", "release=unlimited"])).unwrap();
        assert_eq!(r.for_pipeline("release"), Keep::default());
        assert!(r.for_pipeline("release").is_unlimited());
        assert_eq!(r.for_pipeline("web"), Keep { executions: Some(20), days: Some(30) });
        let r = Retention::parse(&strings(&["web=unlimited"]), &[]).unwrap();
        assert!(r.is_off());
        let known = ["web".to_string()].into();
        let r = Retention::parse(&strings(&["web=3", "wbe=3"]), &[]).unwrap();
        assert_eq!(r.unknown_pipelines(&known), ["wbe"]);
    }

    #[test]
    fn bad_flags_are_refused_all_at_once() {
        let problems =
            Retention::parse(&strings(&["0", "web=x", "=3", "4", "5"]), &strings(&["-1", "unlimited", "4294967295"]))
                .unwrap_err();
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert!(problems[5].contains("--keep-days \"unlimited\""), "only a pipeline may be unlimited: {problems:?}");
        assert!(problems[0].contains("--keep-executions \"0\""), "{problems:?}");
        assert!(problems[2].contains("pipeline name is empty"), "{problems:?}");
        assert!(problems[3].contains("given twice for every pipeline"), "{problems:?}");
        assert!(problems[4].contains("--keep-days \"-1\""), "{problems:?}");
    }

    #[test]
    fn the_newest_n_stay_and_running_executions_always_stay() {
        let ages = [age("e5", false, 0), age("e4", true, 1), age("e3", false, 2), age("e2", true, 3), age("e1", true, 4)];
        let keep = Keep { executions: Some(2), days: None };
        // e3 is beyond the newest two but still running: it stays.
        assert_eq!(expired(keep, &ages, 100 * DAY_MS), ["e2", "e1"]);
        assert_eq!(expired(Keep::default(), &ages, 100 * DAY_MS), Vec::<String>::new());
    }

    #[test]
    fn executions_that_ended_before_the_days_go_and_either_limit_is_enough() {
        let ages = [age("e4", true, 1), age("e3", false, 40), age("e2", true, 31), age("e1", true, 29)];
        let keep = Keep { executions: None, days: Some(30) };
        // e1 ended 29 days ago and stays; e3 started long ago but runs.
        assert_eq!(expired(keep, &ages, 100 * DAY_MS), ["e2"]);
        let both = Keep { executions: Some(3), days: Some(30) };
        assert_eq!(expired(both, &ages, 100 * DAY_MS), ["e2", "e1"]);
    }

    #[test]
    fn the_newest_execution_in_which_each_stage_succeeded_stays_as_its_rollback_target() {
        // Deploy failed in the five newest (or they run in PARALLEL): e2 is
        // Deploy's last good run, e1 is older and goes; e6 is Build's.
        let ages = [
            age("e7", false, 0),
            good("e6", 1, &["Build"]),
            good("e5", 2, &["Build"]),
            good("e4", 3, &["Build"]),
            age("e3", true, 4),
            good("e2", 40, &["Build", "Deploy"]),
            good("e1", 50, &["Build", "Deploy"]),
        ];
        let keep = Keep { executions: Some(2), days: None };
        // e2 stays beyond the newest two (e7, e6).
        assert_eq!(expired(keep, &ages, 100 * DAY_MS), ["e5", "e4", "e3", "e1"]);
        // Past the days too: the last good run of a pipeline that has not
        // succeeded in 30 days stays.
        let keep = Keep { executions: None, days: Some(30) };
        assert_eq!(expired(keep, &ages, 100 * DAY_MS), ["e1"]);
        // A running execution's stages are no target (it may yet fail or stop).
        let running = [Age { ended: false, ..good("e9", 0, &["Deploy"]) }, good("e8", 40, &["Deploy"])];
        assert_eq!(expired(Keep { executions: Some(1), days: Some(1) }, &running, 100 * DAY_MS), Vec::<String>::new());
    }
}
