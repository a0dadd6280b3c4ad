//! Pipelines that feed pipelines (issue 21, feed), in the driver.
//!
//! - Create and update check every `pipeline@1` source: the author may
//!   read the upstream (`codepipeline:GetPipeline`, asked before anything
//!   else, so that a refusal says nothing of whether it exists), it exists
//!   and has the stage and the artifacts named, and no cycle forms.
//! - A stage success is noted in the commit that records it
//!   ([`Driver::note_feed_trigger`]) and judged once that commit is done
//!   ([`Driver::judge_feeds`]): for each downstream subscribed to it, the
//!   fan-in rule ([`crate::feed::decide`]) over the recent executions of
//!   every upstream it takes, and what it decides is applied: a start (with
//!   the set's members pinned and the set recorded, one transaction), or a
//!   hold kept for `pipeline state`.
//! - Every start pins an upstream execution for each `pipeline@1` source
//!   (given and checked, or the upstream's newest that passed the stage)
//!   and carries the members' lineage as the execution's `origins`.
//! - The source action itself never reaches an agent: its dispatch is
//!   answered here with the pinned execution's artifacts (by digest) and
//!   variables ([`Driver::resolve_pipeline_sources`]).

use super::Driver;
use crate::auth::{Caller, Role};
use crate::engine::{ActionResult, Dispatch, Event, Execution, ExecutionId, Origin, Trigger};
use crate::feed::{self, Candidate, Decision, Feed, Reach, Subscription};
use crate::ops::{OpError, UpstreamState};
use crate::pipeline::{Declaration, Pipeline};
use crate::store::{Change, FeedConsumed};
use crate::{policy, views};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tracing::{info, warn};

/// Recent executions of an upstream the rule looks at (newest first):
/// enough for the runs of a few revisions in flight at once.
const RECENT: usize = 30;
/// Who may subscribe to a pipeline: who may read it.
const READ_PIPELINE: &str = "codepipeline:GetPipeline";

#[derive(Default)]
pub(super) struct Feeds {
    /// By upstream pipeline: (downstream pipeline, its source action).
    subscribers: HashMap<String, Vec<(String, String)>>,
    /// Stage successes committed and not judged yet: (pipeline, execution, stage).
    triggers: Vec<(String, ExecutionId, String)>,
    /// Set while triggers are judged: the starts they make commit too.
    judging: bool,
    /// `pipeline@1` dispatches, answered in the commit loop.
    resolving: Vec<Dispatch>,
    /// Why the newest upstream success of a downstream started nothing, by
    /// downstream and source action: (reason, when). Cleared by a start.
    held: HashMap<String, BTreeMap<String, (String, u64)>>,
}

/// The stage a subscription waits for in one upstream execution: the
/// configured one, else the last stage of the version that execution ran.
fn stage_of(sub: &Subscription, e: &Execution) -> String {
    sub.stage.clone().or_else(|| e.stages.last().map(|s| s.name.clone())).unwrap_or_default()
}

/// What an execution carries downstream, with summaries: its origins, its
/// own id and its source revisions.
fn carried(e: &Execution) -> BTreeMap<String, Origin> {
    let mut out = e.origins.clone();
    out.insert(e.pipeline.clone(), Origin { revision_id: e.id.0.clone(), revision_summary: None });
    for (action, r) in &e.source_revisions {
        let origin = Origin { revision_id: r.revision_id.clone(), revision_summary: r.revision_summary.clone() };
        out.insert(format!("{}/{action}", e.pipeline), origin);
    }
    out
}

/// The first 8 characters of an id, for messages.
fn short(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(at, _)| &id[..at])
}

impl Driver {
    /// Re-reads who a pipeline subscribes to (created, updated, at start).
    pub(super) fn refresh_feeds(&mut self, name: &str, def: &Pipeline) {
        self.forget_feeds(name);
        for sub in feed::subscriptions(def) {
            self.feeds.subscribers.entry(sub.pipeline).or_default().push((name.to_string(), sub.action));
        }
    }

    /// A deleted pipeline subscribes to nothing (its upstreams stay; a
    /// pipeline that subscribed to it fails its source action until updated).
    pub(super) fn forget_feeds(&mut self, name: &str) {
        for list in self.feeds.subscribers.values_mut() {
            list.retain(|(d, _)| d != name);
        }
        self.feeds.held.remove(name);
    }

    /// CreatePipeline and UpdatePipeline: every `pipeline@1` source of `decl`.
    pub(super) fn check_feeds(&mut self, caller: &Caller, decl: &Declaration) -> Result<(), OpError> {
        let name = decl.pipeline.name.clone();
        let Some(first) = decl.pipeline.stages.first() else { return Ok(()) };
        let mut problems = Vec::new();
        let directory = self.directory.snapshot();
        for (i, action) in first.actions.iter().enumerate() {
            if !feed::is_pipeline_source(action) {
                continue;
            }
            let path = format!("pipeline.stages[0].actions[{i}].configuration");
            let sub = match feed::subscription(action) {
                Ok(sub) => sub,
                Err(e) => {
                    problems.push(format!("{path}: {e}"));
                    continue;
                }
            };
            // Permission first: a refusal must not tell whether it exists.
            let resource = policy::pipeline(&sub.pipeline);
            let decision = directory.decide(caller, READ_PIPELINE, &resource);
            if !decision.is_allowed() {
                let refusal = directory.refusal(caller, READ_PIPELINE, &resource, &decision);
                return Err(OpError::AccessDenied(format!(
                    "source action \"{}\" subscribes to pipeline \"{}\", which you may not read: {refusal}",
                    sub.action, sub.pipeline
                )));
            }
            if sub.pipeline == name {
                problems
                    .push(format!("{path}.{}: a pipeline cannot feed itself (cycle {name} -> {name})", feed::PIPELINE_KEY));
                continue;
            }
            let Some(record) = self.store.pipeline(&sub.pipeline, None)? else {
                problems.push(format!("{path}.{}: pipeline \"{}\" does not exist", feed::PIPELINE_KEY, sub.pipeline));
                continue;
            };
            let upstream = self.definition(&record.name, record.version)?;
            problems.extend(check_upstream(&path, &sub, &upstream));
        }
        if !problems.is_empty() {
            return Err(OpError::Validation {
                message: format!("pipeline declaration is invalid ({} problems)", problems.len()),
                diagnostics: problems,
            });
        }
        self.check_no_cycle(&name, feed::upstreams(&decl.pipeline))
    }

    /// Refuses a subscription that closes a cycle, naming it.
    fn check_no_cycle(&mut self, name: &str, upstreams: BTreeSet<String>) -> Result<(), OpError> {
        if upstreams.is_empty() {
            return Ok(());
        }
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (upstream, list) in &self.feeds.subscribers {
            for (downstream, _) in list.iter().filter(|(d, _)| d != name) {
                graph.entry(downstream.clone()).or_default().insert(upstream.clone());
            }
        }
        graph.insert(name.to_string(), upstreams);
        match feed::find_cycle(&graph, name) {
            Some(cycle) => Err(OpError::Validation {
                message: format!("pipelines would feed each other in a cycle: {}", cycle.join(" -> ")),
                diagnostics: vec![format!("pipeline.stages[0]: cycle {}", cycle.join(" -> "))],
            }),
            None => Ok(()),
        }
    }

    /// Pins an upstream execution for every `pipeline@1` source of `def`:
    /// the one given (checked: it exists, is of that upstream, and passed
    /// the stage) or the upstream's newest that passed it (none: left
    /// unpinned, and the action fails saying so). Returns the lineage the
    /// pinned executions carry, and the records of what the start takes
    /// (`feed_sets`) for each source whose pin is newer than the last set's:
    /// any start (created, started by hand or by the rule) takes its pins,
    /// so a judgment run again later does not start the same set twice.
    pub(super) fn pin_upstreams(
        &mut self,
        now: u64,
        start: &ExecutionId,
        def: &Pipeline,
        revisions: &mut BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, Origin>, Vec<Change>), OpError> {
        let mut origins = BTreeMap::new();
        let mut taken = Vec::new();
        let subs = feed::subscriptions(def);
        let consumed = if subs.is_empty() { HashMap::new() } else { self.consumed_by(&def.name, &subs)? };
        for sub in subs {
            let upstream = match revisions.get(&sub.action) {
                Some(id) => {
                    let e = self.execution(&sub.pipeline, id).map_err(|_| {
                        OpError::invalid(format!(
                            "the revision for \"{}\": pipeline \"{}\" has no execution {id}",
                            sub.action, sub.pipeline
                        ))
                    })?;
                    let stage = stage_of(&sub, &e);
                    if feed::reach(&e, &stage) != Reach::Passed {
                        return Err(OpError::invalid(format!(
                            "the revision for \"{}\": execution {id} of \"{}\" did not pass stage {stage}",
                            sub.action, sub.pipeline
                        )));
                    }
                    e
                }
                None => {
                    let recent = self.recent_executions(&sub.pipeline, RECENT).unwrap_or_default();
                    let passed = |e: &Execution| e.rollback.is_none() && feed::reach(e, &stage_of(&sub, e)) == Reach::Passed;
                    let Some(e) = recent.into_iter().find(passed) else {
                        continue;
                    };
                    revisions.insert(sub.action.clone(), e.id.0.clone());
                    e
                }
            };
            if consumed.get(&sub.action).is_none_or(|c| c.upstream_ordinal < upstream.ordinal) {
                taken.push(Change::FeedConsumed(FeedConsumed {
                    pipeline: def.name.clone(),
                    action: sub.action.clone(),
                    upstream_execution_id: upstream.id.0.clone(),
                    upstream_ordinal: upstream.ordinal,
                    upstream_pipeline: sub.pipeline.clone(),
                    execution_id: start.0.clone(),
                    started_at: now,
                }));
            }
            origins.extend(carried(&upstream));
        }
        Ok((origins, taken))
    }

    /// Notes a stage success for [`Driver::judge_feeds`]; called for every
    /// notice of a commit.
    pub(super) fn note_feed_trigger(&mut self, notice: &crate::engine::Notice) {
        if notice.action.is_none()
            && notice.status == "Succeeded"
            && let Some(stage) = &notice.stage
            && self.feeds.subscribers.get(&notice.pipeline).is_some_and(|l| !l.is_empty())
        {
            self.feeds.triggers.push((notice.pipeline.clone(), notice.execution_id.clone(), stage.clone()));
        }
    }

    /// Judges the noted stage successes, after the commit that recorded
    /// them; the starts they make commit (and note) in turn, judged here too.
    pub(super) fn judge_feeds(&mut self, now: u64) {
        if self.feeds.judging || self.feeds.triggers.is_empty() {
            return;
        }
        self.feeds.judging = true;
        while !self.feeds.triggers.is_empty() {
            for (upstream, id, stage) in std::mem::take(&mut self.feeds.triggers) {
                let subscribers = self.feeds.subscribers.get(&upstream).cloned().unwrap_or_default();
                for (downstream, action) in subscribers {
                    if let Err(e) = self.judge(now, &downstream, &action, &upstream, &id, &stage) {
                        warn!(%downstream, %upstream, execution = %id, "judging an upstream success failed: {e}");
                        self.hold(now, &downstream, &action, format!("{e}"));
                    }
                }
            }
        }
        self.feeds.judging = false;
    }

    /// Start-up (after recovery, before serving), and after a downstream's
    /// sources change: judges again, for every `pipeline@1` source (or those
    /// of `only`), the newest upstream execution that passed its stage. A
    /// controller stopped between committing a stage success and judging it
    /// loses nothing (the set starts now), a set started already is not
    /// started again (`feed_sets` says it was taken: [`Decision::Already`]),
    /// and the hold reasons, kept in memory only, are computed again.
    pub(super) fn rejudge_feeds(&mut self, now: u64, only: Option<&str>) {
        let mut triggers = BTreeSet::new();
        for (upstream, list) in self.feeds.subscribers.clone() {
            let list: Vec<_> = list.into_iter().filter(|(d, _)| only.is_none_or(|o| o == d)).collect();
            if list.is_empty() {
                continue;
            }
            let recent = match self.recent_executions(&upstream, RECENT) {
                Ok(recent) => recent,
                Err(e) => {
                    warn!(%upstream, "reading recent executions to judge its subscribers again failed: {e}");
                    continue;
                }
            };
            for (downstream, action) in list {
                let Some(sub) = self.subscription_of(&downstream, &action) else { continue };
                if let Some(e) =
                    recent.iter().find(|e| e.rollback.is_none() && feed::reach(e, &stage_of(&sub, e)) == Reach::Passed)
                {
                    triggers.insert((upstream.clone(), e.id.clone(), stage_of(&sub, e)));
                }
            }
        }
        self.feeds.triggers.extend(triggers);
        self.judge_feeds(now);
    }

    /// The subscription of a downstream's source action, in its current version.
    fn subscription_of(&mut self, downstream: &str, action: &str) -> Option<Subscription> {
        let record = self.store.pipeline(downstream, None).ok().flatten()?;
        let def = self.definition(downstream, record.version).ok()?;
        feed::subscriptions(&def).into_iter().find(|s| s.action == action)
    }

    /// The last set taken per source action of a downstream, without the
    /// records of another upstream than the action's current one (its
    /// source was pointed elsewhere by an update): those are no floor.
    fn consumed_by(&mut self, downstream: &str, subs: &[Subscription]) -> Result<HashMap<String, FeedConsumed>, OpError> {
        let mut out = HashMap::new();
        for c in self.store.feeds_consumed(downstream)? {
            let Some(sub) = subs.iter().find(|s| s.action == c.action) else { continue };
            let of = if c.upstream_pipeline.is_empty() {
                let id = ExecutionId(c.upstream_execution_id.clone());
                self.store.execution(&id)?.map(|e| e.pipeline)
            } else {
                Some(c.upstream_pipeline.clone())
            };
            if of.is_none_or(|p| p == sub.pipeline) {
                out.insert(c.action.clone(), c);
            }
        }
        Ok(out)
    }

    fn hold(&mut self, now: u64, downstream: &str, action: &str, why: String) {
        self.feeds.held.entry(downstream.to_string()).or_default().insert(action.to_string(), (why, now));
    }

    /// One downstream source and one upstream execution that passed `stage`.
    fn judge(
        &mut self,
        now: u64,
        downstream: &str,
        action: &str,
        upstream: &str,
        id: &ExecutionId,
        stage: &str,
    ) -> Result<(), OpError> {
        let record =
            self.store.pipeline(downstream, None)?.ok_or_else(|| super::pipelines::not_found_pipeline(downstream))?;
        let def = self.definition(downstream, record.version)?;
        let subs = feed::subscriptions(&def);
        let Some(sub) = subs.iter().find(|s| s.action == action && s.pipeline == upstream) else { return Ok(()) };
        let trigger = self.execution(upstream, &id.0)?;
        // A rollback re-runs a stage with an older execution's revisions:
        // what it restores was fed downstream already (or superseded).
        if stage_of(sub, &trigger) != stage || trigger.rollback.is_some() {
            return Ok(());
        }
        // Whoever wrote the downstream's version must still be able to read
        // every upstream it takes: a revoked permission stops the feed.
        let author = Caller::new(record.author.clone(), if record.author == "admin" { Role::Admin } else { Role::Operator });
        let directory = self.directory.snapshot();
        let judge = directory.judge(&author);
        if let Some(denied) = subs.iter().find(|s| !judge.allows(READ_PIPELINE, &policy::pipeline(&s.pipeline))) {
            let why = format!(
                "{} (author of version {}) may no longer read pipeline \"{}\": upstream successes start nothing",
                record.author, record.version, denied.pipeline
            );
            info!(%downstream, %upstream, "{why}");
            self.hold(now, downstream, action, why);
            return Ok(());
        }
        let consumed = self.consumed_by(downstream, &subs)?;
        let mut feeds = Vec::new();
        for s in &subs {
            let executions = self
                .recent_executions(&s.pipeline, RECENT)?
                .iter()
                .filter(|e| e.rollback.is_none())
                .map(|e| Candidate {
                    id: e.id.0.clone(),
                    ordinal: e.ordinal,
                    lineage: feed::lineage(e),
                    reach: feed::reach(e, &stage_of(s, e)),
                })
                .collect();
            feeds.push(Feed {
                action: s.action.clone(),
                pipeline: s.pipeline.clone(),
                stage: s.stage.clone().unwrap_or_else(|| "its last stage".into()),
                executions,
                consumed: consumed.get(&s.action).map(|c| (c.upstream_execution_id.clone(), c.upstream_ordinal)),
            });
        }
        match feed::decide(&feeds, action, &id.0) {
            Decision::Start(set) => self.start_set(now, downstream, &feeds, set, upstream, id, stage),
            Decision::Hold(why) | Decision::NoSet(why) => {
                info!(%downstream, %upstream, execution = %id, "no start: {why}");
                self.hold(now, downstream, action, why);
                Ok(())
            }
            Decision::Already(_) => Ok(()),
        }
    }

    /// Starts the downstream with a set, recording what it took in the
    /// same transaction.
    #[allow(clippy::too_many_arguments)]
    fn start_set(
        &mut self,
        now: u64,
        downstream: &str,
        feeds: &[Feed],
        set: BTreeMap<String, String>,
        upstream: &str,
        id: &ExecutionId,
        stage: &str,
    ) -> Result<(), OpError> {
        let new_id = ExecutionId(uuid::Uuid::new_v4().to_string());
        let changes: Vec<Change> = feeds
            .iter()
            .filter_map(|f| {
                let member = set.get(&f.action)?;
                let ordinal = f.executions.iter().find(|c| &c.id == member)?.ordinal;
                Some(Change::FeedConsumed(FeedConsumed {
                    pipeline: downstream.to_string(),
                    action: f.action.clone(),
                    upstream_execution_id: member.clone(),
                    upstream_ordinal: ordinal,
                    upstream_pipeline: f.pipeline.clone(),
                    execution_id: new_id.0.clone(),
                    started_at: now,
                }))
            })
            .collect();
        let detail = format!("execution {} of {upstream} passed {stage}", short(&id.0));
        let trigger = Trigger::new(feed::TRIGGER_TYPE, detail);
        self.start_execution_as(now, new_id.clone(), downstream, BTreeMap::new(), set, trigger, changes)?;
        self.feeds.held.remove(downstream);
        info!(%downstream, %upstream, upstream_execution = %id, execution = %new_id, "upstream started a downstream execution");
        Ok(())
    }

    /// Routes a dispatch of a `pipeline@1` action to the controller
    /// itself; `false` for any other.
    pub(super) fn take_pipeline_source(&mut self, dispatch: &Dispatch) -> bool {
        let ours = dispatch.owner == feed::OWNER
            && dispatch.provider == feed::PROVIDER
            && dispatch.provider_version == feed::VERSION;
        if ours {
            self.feeds.resolving.push(dispatch.clone());
        }
        ours
    }

    /// Answers the `pipeline@1` dispatches of the step.
    pub(super) fn resolve_pipeline_sources(&mut self, now: u64) {
        let dispatches = std::mem::take(&mut self.feeds.resolving);
        for d in &dispatches {
            let result = self.pipeline_source_result(d).unwrap_or_else(|message| ActionResult::Failed { message });
            let (job_id, lease_epoch) = (d.job_id.clone(), d.lease_epoch);
            self.feed(now, Event::ActionFinished { job_id, lease_epoch, result });
        }
    }

    /// The pinned upstream execution's artifacts (by digest, never
    /// copied) and variables, as the source action's result.
    fn pipeline_source_result(&mut self, d: &Dispatch) -> Result<ActionResult, String> {
        let exec = self.engine.execution(&d.execution_id).ok_or("the execution is gone")?.clone();
        let def = self.definition(&d.pipeline, exec.version).map_err(|e| format!("{e:#}"))?;
        let decl = def.stages.first().and_then(|s| s.action(&d.action)).ok_or("the action is gone")?;
        let sub = feed::subscription(decl)?;
        let Some(pinned) = exec.source_revisions.get(&d.action) else {
            return Err(format!(
                "no execution of pipeline \"{}\" has passed {} yet: nothing to take",
                sub.pipeline,
                sub.stage.as_deref().unwrap_or("its last stage")
            ));
        };
        let upstream = self.execution(&sub.pipeline, &pinned.revision_id).map_err(|e| e.to_string())?;
        let mut outputs = Vec::new();
        for (output, taken) in &sub.artifacts {
            let Some(artifact) = upstream.artifacts.get(taken) else {
                let has: Vec<&str> = upstream.artifacts.keys().map(String::as_str).collect();
                return Err(format!(
                    "execution {} of \"{}\" has no artifact \"{taken}\" (it has: {})",
                    upstream.id,
                    sub.pipeline,
                    if has.is_empty() { "none".to_string() } else { has.join(", ") }
                ));
            };
            outputs.push((output.clone(), artifact.clone()));
        }
        let mut variables: BTreeMap<String, String> = upstream.variables.clone();
        for (namespace, values) in &upstream.namespaces {
            for (key, value) in values {
                variables.insert(format!("{namespace}.{key}"), value.clone());
            }
        }
        variables.insert("PipelineName".into(), upstream.pipeline.clone());
        variables.insert("PipelineExecutionId".into(), upstream.id.0.clone());
        let stage = stage_of(&sub, &upstream);
        Ok(ActionResult::Succeeded {
            summary: format!("execution {} of {} (passed {stage})", upstream.id, upstream.pipeline),
            output_variables: variables,
            external_url: None,
            outputs,
        })
    }

    /// What `pipeline state` shows of each `pipeline@1` source: its
    /// upstream, the execution the newest set took and why the newest
    /// upstream success started nothing, if it did not.
    pub(super) fn upstream_states(&mut self, name: &str, def: &Pipeline) -> Result<Vec<UpstreamState>, OpError> {
        let subs = feed::subscriptions(def);
        if subs.is_empty() {
            return Ok(Vec::new());
        }
        let consumed = self.consumed_by(name, &subs)?;
        let held = self.feeds.held.get(name).cloned().unwrap_or_default();
        Ok(subs
            .into_iter()
            .map(|s| UpstreamState {
                held: held.get(&s.action).map(|(why, _)| why.clone()),
                held_since: held.get(&s.action).map(|(_, at)| views::time(*at)),
                last_taken: consumed.get(&s.action).map(|c| c.upstream_execution_id.clone()),
                source_action: s.action,
                pipeline_name: s.pipeline,
                stage_name: s.stage,
            })
            .collect())
    }
}

/// The upstream has the stage (by default its last) and, in it or
/// before, an action producing each artifact taken.
fn check_upstream(path: &str, sub: &Subscription, upstream: &Pipeline) -> Vec<String> {
    let stage = match &sub.stage {
        Some(stage) => stage.clone(),
        None => upstream.stages.last().map(|s| s.name.clone()).unwrap_or_default(),
    };
    let Some(index) = upstream.stages.iter().position(|s| s.name == stage) else {
        let stages: Vec<&str> = upstream.stages.iter().map(|s| s.name.as_str()).collect();
        return vec![format!(
            "{path}.{}: pipeline \"{}\" has no stage \"{stage}\" (its stages: {})",
            feed::STAGE_KEY,
            sub.pipeline,
            stages.join(", ")
        )];
    };
    let produced: BTreeSet<&str> = upstream.stages[..=index]
        .iter()
        .flat_map(|s| s.actions.iter().flat_map(|a| a.output_artifacts.iter().map(|o| o.name.as_str())))
        .collect();
    sub.artifacts
        .iter()
        .filter(|(_, taken)| !produced.contains(taken.as_str()))
        .map(|(_, taken)| {
            format!(
                "{path}.{}: pipeline \"{}\" produces no artifact \"{taken}\" by stage {stage}",
                feed::ARTIFACTS_KEY,
                sub.pipeline
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Durability of upstream triggers (issue 21, feedfix), with a real
    //! controller on a real SQLite store: the store is left as a `kill -9`
    //! between committing upstream successes and judging them leaves it,
    //! the controller starts on it, and again on a copy of what it wrote.
    use super::*;
    use crate::driver::{ControllerConfig, command::Command, start};
    use crate::engine::{ActionRun, ExecutionStatus, SourceRevision, StageRun, StageStatus};
    use crate::ops::{GetPipelineState, Operation};
    use crate::store::{Durability, Location, PipelineRecord};
    use std::path::Path;

    fn source(action: &str, upstream: &str) -> String {
        format!(
            r#"{{"name": "{action}", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "pipeline", "version": "1"}},
                "configuration": {{"Pipeline": "{upstream}"}}}}"#
        )
    }

    /// A pipeline of a Source stage (`sources`) and a Build stage.
    fn declaration(name: &str, sources: &[String]) -> String {
        format!(
            r#"{{"pipeline": {{"name": "{name}", "stages": [
                {{"name": "Source", "actions": [{}]}},
                {{"name": "Build", "actions": [{{"name": "Make",
                  "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
                  "configuration": {{"Commands": "true"}}, "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
            sources.join(", ")
        )
    }

    fn record(name: &str, sources: &[String]) -> Change {
        Change::Pipeline(PipelineRecord {
            name: name.into(),
            version: 1,
            definition: declaration(name, sources),
            created_at: 1,
            updated_at: 1,
            author: "admin".into(),
        })
    }

    /// An ended execution of `pipeline` whose Build stage ended `build`,
    /// carrying `origins`, its source `Src` at `revision`.
    fn ended(
        pipeline: &str,
        id: &str,
        ordinal: u64,
        build: StageStatus,
        revision: &str,
        origins: &[(&str, &str)],
    ) -> Change {
        let stage = |name: &str, status| StageRun {
            name: name.into(),
            status: Some(status),
            actions: vec![ActionRun { name: "A".into(), run_order: 1, attempt: 1, ..ActionRun::default() }],
            rules: vec![],
            passed: vec![],
            auto_retried: false,
        };
        let status = if build == StageStatus::Succeeded { ExecutionStatus::Succeeded } else { ExecutionStatus::Failed };
        Change::Execution(std::sync::Arc::new(Execution {
            id: ExecutionId(id.into()),
            pipeline: pipeline.into(),
            version: 1,
            status,
            status_summary: None,
            trigger: Trigger::new("Webhook", String::new()),
            started_at: ordinal,
            updated_at: ordinal,
            variables: BTreeMap::new(),
            stages: vec![stage("Source", StageStatus::Succeeded), stage("Build", build)],
            artifacts: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            ordinal,
            waiting_for: None,
            source_revisions: BTreeMap::from([(
                "Src".to_string(),
                SourceRevision { revision_id: revision.into(), revision_summary: None, pinned: false },
            )]),
            rollback: None,
            origins: origins
                .iter()
                .map(|(k, v)| (k.to_string(), Origin { revision_id: v.to_string(), revision_summary: None }))
                .collect(),
        }))
    }

    fn config(dir: &Path) -> ControllerConfig {
        // As `main` does before anything speaks TLS.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let local = "127.0.0.1:0".parse().unwrap();
        let mut config = ControllerConfig::new(dir.to_path_buf(), local, local);
        config.api_scheme = crate::https::Scheme::Http;
        config.min_free_space = 0;
        config
    }

    fn executions(dir: &Path, pipeline: &str) -> Vec<Execution> {
        Location::Sqlite.open(dir, Durability::Process).unwrap().executions(pipeline, 100).unwrap()
    }

    async fn state(controller: &crate::driver::Controller, name: &str) -> Vec<UpstreamState> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = GetPipelineState { name: name.into() }.into_request();
        let command = Command::Call { request, caller: Caller::new("admin", Role::Admin), reply };
        controller.driver.send(command).await.unwrap();
        let response = answer.await.unwrap().unwrap();
        GetPipelineState::output_of(response).unwrap().upstreams
    }

    /// Copies a data dir (the store and its write-ahead log, the keys) as a
    /// machine that lost power would find it; the lock file stays behind.
    fn copy_dir(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_name() == "lock" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&target).unwrap();
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trigger_lost_to_a_stop_is_judged_at_start_exactly_once_and_holds_are_shown_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        crate::ca::create_private_dir(&first).unwrap();
        crate::ca::create_private_dir(&second).unwrap();
        // lib -> {b, c} -> z, and y takes b and d; commit c1 built by lib
        // (l1), by b and c (both passed), d failed for it. The controller
        // stopped before judging: z never started, nothing recorded.
        let lib = [("lib", "l1"), ("lib/Src", "c1")];
        let git = r#"{"name": "Src", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": "/nowhere", "Branch": "main"}, "pollIntervalSeconds": 0}"#;
        let mut changes = vec![
            record("lib", &[git.to_string()]),
            record("b", &[source("Src", "lib")]),
            record("c", &[source("Src", "lib")]),
            record("d", &[source("Src", "lib")]),
            record("z", &[source("FromB", "b"), source("FromC", "c")]),
            record("y", &[source("FromB", "b"), source("FromD", "d")]),
        ];
        changes.push(ended("lib", "l1", 10, StageStatus::Succeeded, "c1", &[]));
        changes.push(ended("b", "b1", 11, StageStatus::Succeeded, "l1", &lib));
        changes.push(ended("c", "c1x", 12, StageStatus::Succeeded, "l1", &lib));
        changes.push(ended("d", "d1", 13, StageStatus::Failed, "l1", &lib));
        // b, c and d took l1 (as their starts recorded).
        changes.extend(["b", "c", "d"].map(|p| taken(p, "Src", "lib", "l1", 10)));
        Location::Sqlite.open(&first, Durability::Process).unwrap().apply(&changes).unwrap();

        let controller = start(config(&first)).await.unwrap();
        // Judged before serving: z started once, with b1 and c1x.
        let runs = executions(&first, "z");
        assert_eq!(runs.len(), 1, "{runs:?}");
        let z = &runs[0];
        assert_eq!(z.trigger.trigger_type, feed::TRIGGER_TYPE);
        assert_eq!(z.source_revisions["FromB"].revision_id, "b1");
        assert_eq!(z.source_revisions["FromC"].revision_id, "c1x");
        // y is held by d's failure, and says so.
        let y = state(&controller, "y").await;
        let held = y.iter().find_map(|u| u.held.clone()).expect("y is held");
        assert!(held.contains("held by execution d1 of d"), "{held}");
        assert!(executions(&first, "y").is_empty());
        let z_state = state(&controller, "z").await;
        assert_eq!(z_state.iter().map(|u| u.last_taken.clone().unwrap()).collect::<Vec<_>>(), ["b1", "c1x"]);

        // A stop right after z started: a controller on what was written
        // starts nothing again, and shows y's hold again.
        copy_dir(&first, &second);
        let again = start(config(&second)).await.unwrap();
        assert_eq!(executions(&second, "z").len(), 1);
        for upstream in ["lib", "b", "c", "d"] {
            assert_eq!(executions(&second, upstream).len(), 1, "{upstream} started again");
        }
        assert!(executions(&second, "y").is_empty());
        let y = state(&again, "y").await;
        assert!(y.iter().any(|u| u.held.as_deref().is_some_and(|h| h.contains("held by execution d1 of d"))), "{y:?}");
        controller.close();
        again.close();
    }

    fn taken(pipeline: &str, action: &str, upstream: &str, id: &str, ordinal: u64) -> Change {
        Change::FeedConsumed(FeedConsumed {
            pipeline: pipeline.into(),
            action: action.into(),
            upstream_execution_id: id.into(),
            upstream_ordinal: ordinal,
            upstream_pipeline: upstream.into(),
            execution_id: format!("{pipeline}-earlier"),
            started_at: 1,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_feeds_nothing_and_a_source_pointed_elsewhere_is_not_held_back_by_its_old_upstream() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        crate::ca::create_private_dir(&dir).unwrap();
        let git = r#"{"name": "Src", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": "/nowhere", "Branch": "main"}, "pollIntervalSeconds": 0}"#;
        let (l1, l2) = ([("lib", "l1"), ("lib/Src", "c1")], [("lib", "l2"), ("lib/Src", "c2")]);
        let mut changes = vec![
            record("lib", &[git.to_string()]),
            record("b", &[source("Src", "lib")]),
            record("c", &[source("Src", "lib")]),
            // `single` follows c alone; `moved` followed b with its source
            // `Up` and was updated to follow c (its record of b's run stays).
            record("single", &[source("Up", "c")]),
            record("moved", &[source("Up", "c")]),
            ended("lib", "l1", 10, StageStatus::Succeeded, "c1", &[]),
            ended("c", "c1x", 12, StageStatus::Succeeded, "l1", &l1),
            ended("lib", "l2", 20, StageStatus::Succeeded, "c2", &[]),
            ended("c", "c2x", 21, StageStatus::Succeeded, "l2", &l2),
            ended("b", "b3", 50, StageStatus::Succeeded, "l2", &l2),
            taken("b", "Src", "lib", "l2", 20),
            taken("c", "Src", "lib", "l2", 20),
            taken("single", "Up", "c", "c2x", 21),
            // Written before records named their upstream: found by the execution.
            taken("moved", "Up", "", "b3", 50),
        ];
        // c's Build rolled back to c1x's (commit c1), after c2x: newest of c.
        let Change::Execution(mut rollback) = ended("c", "c-rb", 30, StageStatus::Succeeded, "l1", &l1) else {
            unreachable!()
        };
        std::sync::Arc::make_mut(&mut rollback).rollback =
            Some(crate::engine::Rollback { stage: "Build".into(), target: ExecutionId("c1x".into()) });
        changes.push(Change::Execution(rollback));
        Location::Sqlite.open(&dir, Durability::Process).unwrap().apply(&changes).unwrap();

        let controller = start(config(&dir)).await.unwrap();
        // The rollback started nothing: `single` took c2x, and c1x's
        // commit is not sent downstream again.
        assert!(executions(&dir, "single").is_empty(), "{:?}", executions(&dir, "single"));
        // `moved` takes c's newest build (c2x, older than b3 it took from b).
        let moved = executions(&dir, "moved");
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].source_revisions["Up"].revision_id, "c2x");
        let state = state(&controller, "moved").await;
        assert_eq!(state[0].last_taken.as_deref(), Some("c2x"));

        // Created after c2x passed, `fresh` starts with it (as any create
        // starts): a stop right after, and a start on what was written,
        // does not start it again with the same c2x.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let create =
            crate::ops::CreatePipeline { pipeline_declaration: declaration("fresh", &[source("Up", "c")]), team: None };
        let command = Command::Call { request: create.into_request(), caller: Caller::new("admin", Role::Admin), reply };
        controller.driver.send(command).await.unwrap();
        answer.await.unwrap().unwrap();
        assert_eq!(executions(&dir, "fresh").len(), 1);
        let copy = tmp.path().join("copy");
        crate::ca::create_private_dir(&copy).unwrap();
        copy_dir(&dir, &copy);
        let again = start(config(&copy)).await.unwrap();
        let fresh = executions(&copy, "fresh");
        assert_eq!(fresh.len(), 1, "{fresh:?}");
        assert_eq!(fresh[0].source_revisions["Up"].revision_id, "c2x");
        controller.close();
        again.close();
    }
}
