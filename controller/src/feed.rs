//! Pipelines that feed pipelines (issue 21, feed), the pure part: the
//! `pipeline@1` source's configuration, the cycle check over the graph of
//! pipelines, the lineage an execution carries, and the fan-in rule that
//! decides, when an upstream's stage succeeds, whether a downstream starts
//! and with which upstream execution for each of its `pipeline@1` sources.
//! No store, no clock: the driver (`driver/feeds.rs`) gathers the upstream
//! executions and applies the decision. docs/pipelines.md states the rule.

use crate::engine::{Execution, ExecutionStatus, StageStatus};
use crate::pipeline::{Action, Pipeline};
use std::collections::{BTreeMap, BTreeSet};

/// The built-in provider: `Sluice/pipeline@1`, a Source action.
pub const OWNER: &str = "Sluice";
pub const PROVIDER: &str = "pipeline";
pub const VERSION: &str = "1";
/// Its configuration keys.
pub const PIPELINE_KEY: &str = "Pipeline";
pub const STAGE_KEY: &str = "Stage";
pub const ARTIFACTS_KEY: &str = "Artifacts";
/// The trigger type of an execution an upstream started.
pub const TRIGGER_TYPE: &str = "PipelineExecution";

/// Whether an action is a `pipeline@1` source.
pub fn is_pipeline_source(action: &Action) -> bool {
    let id = &action.action_type_id;
    id.category == "Source" && id.owner == OWNER && id.provider == PROVIDER && id.version == VERSION
}

/// What one `pipeline@1` source action subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The source action of the downstream.
    pub action: String,
    /// The upstream pipeline.
    pub pipeline: String,
    /// Its stage whose success starts the downstream; `None`: its last stage.
    pub stage: Option<String>,
    /// Each output artifact of the action and the upstream artifact it
    /// takes (by name): `Artifacts` lists upstream names in the order of
    /// the action's `outputArtifacts`; without it each output takes the
    /// upstream artifact of its own name.
    pub artifacts: Vec<(String, String)>,
}

/// Reads a `pipeline@1` action's configuration.
pub fn subscription(action: &Action) -> Result<Subscription, String> {
    let pipeline = action.configuration.get(PIPELINE_KEY).map(str::trim).unwrap_or_default();
    if pipeline.is_empty() {
        return Err(format!("a {PROVIDER}@{VERSION} source names its upstream pipeline in \"{PIPELINE_KEY}\""));
    }
    if pipeline.contains("#{") {
        return Err(format!("\"{PIPELINE_KEY}\" is a pipeline name, not a variable reference"));
    }
    let stage = action.configuration.get(STAGE_KEY).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let outputs: Vec<String> = action.output_artifacts.iter().map(|a| a.name.clone()).collect();
    let taken: Vec<String> = match action.configuration.get(ARTIFACTS_KEY) {
        Some(list) => list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect(),
        None => outputs.clone(),
    };
    if taken.len() != outputs.len() {
        return Err(format!(
            "\"{ARTIFACTS_KEY}\" names {} upstream artifact(s) for {} output artifact(s); give one per output, in order",
            taken.len(),
            outputs.len()
        ));
    }
    Ok(Subscription {
        action: action.name.clone(),
        pipeline: pipeline.to_string(),
        stage,
        artifacts: outputs.into_iter().zip(taken).collect(),
    })
}

/// Every `pipeline@1` source of a pipeline that reads well.
pub fn subscriptions(pipeline: &Pipeline) -> Vec<Subscription> {
    pipeline
        .stages
        .first()
        .map(|s| s.actions.iter().filter(|a| is_pipeline_source(a)).filter_map(|a| subscription(a).ok()).collect())
        .unwrap_or_default()
}

/// The upstream pipelines a pipeline subscribes to.
pub fn upstreams(pipeline: &Pipeline) -> BTreeSet<String> {
    subscriptions(pipeline).into_iter().map(|s| s.pipeline).collect()
}

/// A cycle through `start` in the graph (pipeline -> the pipelines it
/// subscribes to), as the path `start -> ... -> start`; `None` without one.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    // Depth first from `start`, with the path so far; a graph of pipelines
    // is small and acyclic elsewhere (every earlier write was checked).
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().expect("never empty").clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if path.contains(next) || !done.insert(next.clone()) {
                continue;
            }
            path.push(next.clone());
            if walk(graph, start, path, done) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// What an execution carries downstream: `PIPELINE` to its own id,
/// `PIPELINE/ACTION` to each revision its source actions carry (for a
/// `pipeline@1` source, the upstream execution's id), and everything its
/// own upstreams carried (its `origins`).
pub type Lineage = BTreeMap<String, String>;

pub fn lineage(e: &Execution) -> Lineage {
    let mut out: Lineage = e.origins.iter().map(|(k, o)| (k.clone(), o.revision_id.clone())).collect();
    out.insert(e.pipeline.clone(), e.id.0.clone());
    for (action, r) in &e.source_revisions {
        out.insert(format!("{}/{action}", e.pipeline), r.revision_id.clone());
    }
    out
}

/// Two lineages agree when every key they share has the same value: the
/// same commit of a shared source, the same execution of a shared upstream.
pub fn consistent(a: &Lineage, b: &Lineage) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().all(|(k, v)| large.get(k).is_none_or(|w| w == v))
}

/// Where an upstream execution is with respect to the subscribed stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The stage succeeded.
    Passed,
    /// Still running: it may yet pass the stage.
    Pending,
    /// Failed or stopped before passing it: a retry may still pass it.
    Held(String),
    /// Superseded, or its version has no such stage: it never will.
    Gone,
}

/// How an execution stands at `stage`.
pub fn reach(e: &Execution, stage: &str) -> Reach {
    let Some(s) = e.stages.iter().find(|s| s.name == stage) else { return Reach::Gone };
    if s.status == Some(StageStatus::Succeeded) {
        return Reach::Passed;
    }
    match e.status {
        ExecutionStatus::InProgress | ExecutionStatus::Stopping => Reach::Pending,
        ExecutionStatus::Superseded | ExecutionStatus::Succeeded => Reach::Gone,
        ExecutionStatus::Failed | ExecutionStatus::Stopped => {
            let why = e.status_summary.clone().unwrap_or_else(|| e.status.as_str().to_lowercase());
            Reach::Held(format!("{} ({why})", e.status.as_str()))
        }
    }
}

/// One upstream execution, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Start order among its pipeline's executions.
    pub ordinal: u64,
    pub lineage: Lineage,
    pub reach: Reach,
}

/// One `pipeline@1` source of the downstream and its upstream's recent
/// executions.
#[derive(Debug, Clone)]
pub struct Feed {
    pub action: String,
    pub pipeline: String,
    pub stage: String,
    pub executions: Vec<Candidate>,
    /// The upstream execution the newest set started by the rule took for
    /// this source (id, ordinal): sets never go back past it.
    pub consumed: Option<(String, u64)>,
}

/// What the rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the downstream with these upstream executions, by source action.
    Start(BTreeMap<String, String>),
    /// A consistent set is coming but not complete: wait (the reason says for what).
    Hold(String),
    /// No consistent set can be made with this execution.
    NoSet(String),
    /// The set was started already, or a newer one was.
    Already(String),
}

/// The fan-in rule: `trigger` (an execution of `feeds[i].pipeline` that
/// just passed `feeds[i].stage`, for the source `action`) starts the
/// downstream when, for every other source, the newest execution of its
/// upstream that passed its stage, not older than the one the last set
/// took, agrees with the trigger and the members chosen before it (in
/// the order of `feeds`) on every key their lineages share. When a source
/// has none, an execution of its upstream that agrees and is still
/// running holds the set, as does one that failed or stopped (a retry may
/// pass it); with neither, no consistent set exists for this trigger.
pub fn decide(feeds: &[Feed], action: &str, trigger: &str) -> Decision {
    let Some(own) = feeds.iter().find(|f| f.action == action) else {
        return Decision::NoSet(format!("no source action {action}"));
    };
    let Some(first) = own.executions.iter().find(|c| c.id == trigger) else {
        return Decision::NoSet(format!("execution {trigger} of {} is not among its recent ones", own.pipeline));
    };
    if first.reach != Reach::Passed {
        return Decision::NoSet(format!("execution {trigger} of {} has not passed {}", own.pipeline, own.stage));
    }
    if let Some((id, ordinal)) = &own.consumed
        && (first.ordinal < *ordinal || id == trigger)
    {
        return Decision::Already(format!(
            "a set with execution {id} of {} (newer or the same) started already",
            own.pipeline
        ));
    }
    let mut chosen: Vec<(&str, &Candidate)> = vec![(action, first)];
    for feed in feeds.iter().filter(|f| f.action != action) {
        let floor = feed.consumed.as_ref().map_or(0, |(_, o)| *o);
        let mut recent: Vec<&Candidate> = feed.executions.iter().filter(|c| c.ordinal >= floor).collect();
        recent.sort_by(|a, b| b.ordinal.cmp(&a.ordinal).then_with(|| b.id.cmp(&a.id)));
        let agrees = |c: &Candidate| chosen.iter().all(|(_, m)| consistent(&m.lineage, &c.lineage));
        if let Some(member) = recent.iter().copied().find(|c| c.reach == Reach::Passed && agrees(c)) {
            chosen.push((feed.action.as_str(), member));
            continue;
        }
        let carried = shared_revisions(first, &feed.pipeline);
        let waiting = recent.iter().copied().find(|c| matches!(c.reach, Reach::Pending | Reach::Held(_)) && agrees(c));
        return match waiting {
            Some(c) if c.reach == Reach::Pending => Decision::Hold(format!(
                "waiting for execution {} of {} to pass {}{carried}",
                c.id, feed.pipeline, feed.stage
            )),
            Some(Candidate { id, reach: Reach::Held(why), .. }) => Decision::Hold(format!(
                "held by execution {id} of {}: {why} before passing {}{carried}; retry it, or a newer revision replaces this set",
                feed.pipeline, feed.stage
            )),
            _ => Decision::NoSet(format!(
                "{} has no execution that passed or may pass {} consistent with execution {trigger} of {}{carried}",
                feed.pipeline, feed.stage, own.pipeline
            )),
        };
    }
    let set: BTreeMap<String, String> = chosen.iter().map(|(a, c)| (a.to_string(), c.id.clone())).collect();
    let same = feeds.iter().all(|f| f.consumed.as_ref().map(|(id, _)| id) == set.get(&f.action));
    if same {
        return Decision::Already("this set started already".into());
    }
    Decision::Start(set)
}

/// ` (carrying P/A@rev, ...)`: the source revisions of a trigger, for a
/// reason; only those that came from elsewhere than `pipeline` itself.
fn shared_revisions(trigger: &Candidate, pipeline: &str) -> String {
    let shown: Vec<String> = trigger
        .lineage
        .iter()
        .filter(|(k, _)| k.contains('/') && !k.starts_with(&format!("{pipeline}/")))
        .take(4)
        .map(|(k, v)| format!("{k}@{}", v.chars().take(12).collect::<String>()))
        .collect();
    if shown.is_empty() { String::new() } else { format!(" (carrying {})", shown.join(", ")) }
}

#[cfg(test)]
mod tests;
