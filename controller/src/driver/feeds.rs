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
    /// pinned executions carry.
    pub(super) fn pin_upstreams(
        &mut self,
        def: &Pipeline,
        revisions: &mut BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Origin>, OpError> {
        let mut origins = BTreeMap::new();
        for sub in feed::subscriptions(def) {
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
                    let Some(e) = recent.into_iter().find(|e| feed::reach(e, &stage_of(&sub, e)) == Reach::Passed) else {
                        continue;
                    };
                    revisions.insert(sub.action.clone(), e.id.0.clone());
                    e
                }
            };
            origins.extend(carried(&upstream));
        }
        Ok(origins)
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
        if stage_of(sub, &trigger) != stage {
            return Ok(());
        }
        // Whoever wrote the downstream's version must still be able to read
        // every upstream it takes: a revoked permission stops the feed.
        let author = Caller::new(record.author.clone(), if record.author == "admin" { Role::Admin } else { Role::Operator });
        let directory = self.directory.snapshot();
        if let Some(denied) =
            subs.iter().find(|s| !directory.decide(&author, READ_PIPELINE, &policy::pipeline(&s.pipeline)).is_allowed())
        {
            let why = format!(
                "{} (author of version {}) may no longer read pipeline \"{}\": upstream successes start nothing",
                record.author, record.version, denied.pipeline
            );
            info!(%downstream, %upstream, "{why}");
            self.hold(now, downstream, action, why);
            return Ok(());
        }
        let consumed: HashMap<String, FeedConsumed> =
            self.store.feeds_consumed(downstream)?.into_iter().map(|c| (c.action.clone(), c)).collect();
        let mut feeds = Vec::new();
        for s in &subs {
            let executions = self
                .recent_executions(&s.pipeline, RECENT)?
                .iter()
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
        let consumed: HashMap<String, FeedConsumed> =
            self.store.feeds_consumed(name)?.into_iter().map(|c| (c.action.clone(), c)).collect();
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
