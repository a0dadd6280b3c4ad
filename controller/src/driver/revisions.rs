//! The revision flow and artifacts of executions (issue 16, pages).
//!
//! `ListRevisions` and `GetRevisionFlow` read the executions that carried
//! a source revision (one store query over every pipeline through the
//! store's index of executions by revision,
//! [`crate::store::Store::executions_with_revision`], running executions
//! taken from the engine) and keep only those of pipelines the caller may
//! read: the operation's own permission is on `*`, so this filter is what
//! keeps another team's commits and stages out of the answer. The shaping
//! of one execution into its flow is pure ([`flow_of`]).

use super::Driver;
use super::pipelines::not_found_pipeline;
use crate::engine::{ActionStatus, Execution, ExecutionStatus, StageStatus};
use crate::ops::{
    Context, FlowAction, FlowStage, FlowStop, GetArtifact, GetArtifactOutput, GetRevisionFlow, GetRevisionFlowOutput,
    Handle, ListRevisions, ListRevisionsOutput, MIN_REVISION_PREFIX, OpError, RevisionFlowExecution, RevisionFlowPipeline,
    RevisionSummary, paging,
};
use crate::{policy, views};
use std::collections::BTreeMap;

/// How many executions one revision query reads at most: a revision
/// reaches a few pipelines a few times; a prefix may match more.
const FLOW_EXECUTIONS: usize = 500;

/// Who may see an execution in the flow: who may read it on its own.
const READ_EXECUTION: &str = "codepipeline:GetPipelineExecution";

impl Driver {
    /// Executions carrying a revision starting with `prefix`, newest
    /// first, of pipelines the caller may read; running ones as they are now.
    fn readable_with_revision(&mut self, prefix: &str, most: usize, ctx: &Context) -> Result<Vec<Execution>, OpError> {
        let directory = self.directory.snapshot();
        let judge = directory.judge(&ctx.caller);
        let mut list = self.store.executions_with_revision(prefix, most)?;
        list.retain(|e| judge.allows(READ_EXECUTION, &policy::pipeline(&e.pipeline)));
        for e in &mut list {
            if let Some(live) = self.engine.execution(&e.id) {
                *e = live.clone();
            }
        }
        Ok(list)
    }
}

impl Handle<ListRevisions> for Driver {
    fn handle(&mut self, op: ListRevisions, ctx: &Context) -> Result<ListRevisionsOutput, OpError> {
        let limit = paging::limit(op.max_results, 20, 200)?;
        let prefix = op.prefix.as_deref().map(str::trim).unwrap_or_default();
        // Ten executions per revision asked is plenty (a revision reaches a
        // few pipelines a few times), and keeps the driver's step short:
        // the query finds them by index but reads each one it answers whole.
        let executions = self.readable_with_revision(prefix, (limit * 10).min(FLOW_EXECUTIONS), ctx)?;
        Ok(ListRevisionsOutput { revisions: summaries(&executions, prefix, limit) })
    }
}

impl Handle<GetRevisionFlow> for Driver {
    fn handle(&mut self, op: GetRevisionFlow, ctx: &Context) -> Result<GetRevisionFlowOutput, OpError> {
        let asked = op.revision.trim();
        if asked.is_empty() {
            return Err(OpError::invalid("give a revision id, or a prefix of one"));
        }
        let executions = self.readable_with_revision(asked, FLOW_EXECUTIONS, ctx)?;
        let revision = resolve(&executions, asked)?;
        let mut pipelines: BTreeMap<String, Vec<RevisionFlowExecution>> = BTreeMap::new();
        let mut summary = None;
        for e in &executions {
            let Some((action, _, carried_summary)) = carried(e).find(|(_, id, _)| *id == revision) else {
                continue;
            };
            summary = summary.or_else(|| carried_summary.cloned());
            pipelines.entry(e.pipeline.clone()).or_default().push(flow_of(e, action));
        }
        Ok(GetRevisionFlowOutput {
            revision_id: revision,
            revision_summary: summary,
            pipelines: pipelines
                .into_iter()
                .map(|(pipeline_name, executions)| RevisionFlowPipeline { pipeline_name, executions })
                .collect(),
        })
    }
}

/// Every revision an execution carries: its own source actions' (by
/// action name) first, then what its `pipeline@1` sources brought from
/// upstream (issue 21, feed; by `PIPELINE/ACTION`, or `PIPELINE` for an
/// upstream execution), as (key, revision id, summary).
fn carried(e: &Execution) -> impl Iterator<Item = (&str, &str, Option<&String>)> {
    let own = e.source_revisions.iter().map(|(a, r)| (a.as_str(), r.revision_id.as_str(), r.revision_summary.as_ref()));
    let upstream = e.origins.iter().map(|(k, o)| (k.as_str(), o.revision_id.as_str(), o.revision_summary.as_ref()));
    own.chain(upstream)
}

/// The one revision `asked` names: itself when some execution carried
/// exactly it, else the one revision it is a prefix of (at least
/// [`MIN_REVISION_PREFIX`] characters).
fn resolve(executions: &[Execution], asked: &str) -> Result<String, OpError> {
    let mut matches: Vec<&str> =
        executions.iter().flat_map(|e| carried(e).map(|(_, id, _)| id)).filter(|id| id.starts_with(asked)).collect();
    matches.sort_unstable();
    matches.dedup();
    if matches.contains(&asked) {
        return Ok(asked.to_string());
    }
    match matches.as_slice() {
        [] => Err(OpError::NotFound(format!("no execution you may read carried a revision {asked:?}"))),
        [one] if asked.chars().count() >= MIN_REVISION_PREFIX => Ok(one.to_string()),
        [_] => Err(OpError::invalid(format!(
            "a revision prefix needs at least {MIN_REVISION_PREFIX} characters; {asked:?} has fewer"
        ))),
        many => {
            let shown: Vec<&str> = many.iter().take(10).copied().collect();
            Err(OpError::invalid(format!(
                "{asked:?} is a prefix of {} revisions ({}{}); give more of it",
                many.len(),
                shown.join(", "),
                if many.len() > shown.len() { ", ..." } else { "" }
            )))
        }
    }
}

/// Distinct revisions starting with `prefix`, in the order their newest
/// execution started (newest first), with the pipelines that carried them.
fn summaries(executions: &[Execution], prefix: &str, limit: usize) -> Vec<RevisionSummary> {
    let mut out: Vec<RevisionSummary> = Vec::new();
    for e in executions {
        for (_, id, summary) in carried(e).filter(|(_, id, _)| id.starts_with(prefix)) {
            if let Some(seen) = out.iter_mut().find(|s| s.revision_id == id) {
                if !seen.pipelines.contains(&e.pipeline) {
                    seen.pipelines.push(e.pipeline.clone());
                }
                if seen.revision_summary.is_none() {
                    seen.revision_summary = summary.cloned();
                }
            } else if out.len() < limit {
                out.push(RevisionSummary {
                    revision_id: id.to_string(),
                    revision_summary: summary.cloned(),
                    pipelines: vec![e.pipeline.clone()],
                    last_seen: views::time(e.started_at),
                });
            }
        }
    }
    out
}

/// One execution as far as it went: every stage with its status (none
/// when not reached) and where it stopped.
pub(super) fn flow_of(e: &Execution, source_action: &str) -> RevisionFlowExecution {
    let stages = e
        .stages
        .iter()
        .map(|s| FlowStage {
            stage_name: s.name.clone(),
            status: s.status.map(|x| x.as_str().to_string()),
            actions: s
                .actions
                .iter()
                .map(|a| FlowAction { action_name: a.name.clone(), status: a.status.map(|x| x.as_str().to_string()) })
                .collect(),
        })
        .collect();
    RevisionFlowExecution {
        pipeline_execution_id: e.id.0.clone(),
        status: e.status.as_str().to_string(),
        status_summary: e.status_summary.clone(),
        source_action: source_action.to_string(),
        trigger_type: e.trigger.trigger_type.clone(),
        start_time: views::time(e.started_at),
        last_update_time: views::time(e.updated_at),
        stages,
        stopped_at: stopped_at(e),
    }
}

/// Where an execution stopped, or is now: the last stage it entered when
/// that stage did not succeed (at its first failed, then first running,
/// action), or the stage after it when it did but the execution went no
/// further (a disabled transition, a stop, a newer execution). None when
/// it succeeded through every stage.
fn stopped_at(e: &Execution) -> Option<FlowStop> {
    if e.status == ExecutionStatus::Succeeded {
        return None;
    }
    let last = e.stages.iter().rposition(|s| s.status.is_some());
    let Some(index) = last else {
        let first = e.stages.first()?;
        return Some(FlowStop {
            stage_name: first.name.clone(),
            action_name: None,
            status: "NotEntered".into(),
            before_stage: true,
        });
    };
    let stage = &e.stages[index];
    let status = stage.status.expect("the last stage entered has a status");
    if matches!(status, StageStatus::Succeeded | StageStatus::Skipped) {
        let next = e.stages.get(index + 1)?;
        return Some(FlowStop {
            stage_name: next.name.clone(),
            action_name: None,
            status: "NotEntered".into(),
            before_stage: true,
        });
    }
    let blamed = [ActionStatus::Failed, ActionStatus::Abandoned, ActionStatus::Lost, ActionStatus::InProgress]
        .iter()
        .find_map(|wanted| stage.actions.iter().find(|a| a.status == Some(*wanted)));
    Some(FlowStop {
        stage_name: stage.name.clone(),
        action_name: blamed.map(|a| a.name.clone()),
        status: blamed.and_then(|a| a.status).map_or(status.as_str(), |s| s.as_str()).to_string(),
        before_stage: false,
    })
}

/// GetArtifact: an artifact of the execution, by name, and the action
/// that produced it.
impl Handle<GetArtifact> for Driver {
    fn handle(&mut self, op: GetArtifact, _: &Context) -> Result<GetArtifactOutput, OpError> {
        if self.store.pipeline(&op.pipeline_name, None)?.is_none() {
            return Err(not_found_pipeline(&op.pipeline_name));
        }
        let e = self.execution(&op.pipeline_name, &op.pipeline_execution_id)?;
        let produced = e.stages.iter().rev().find_map(|s| {
            s.actions
                .iter()
                .rev()
                .find_map(|a| a.outputs.iter().find(|(name, _)| *name == op.artifact_name).map(|(_, r)| (s, a, r)))
        });
        let Some((stage, action, artifact)) = produced else {
            return Err(OpError::NotFound(format!(
                "execution {} has no artifact {:?}",
                op.pipeline_execution_id, op.artifact_name
            )));
        };
        Ok(GetArtifactOutput {
            name: op.artifact_name.clone(),
            digest: artifact.digest.clone(),
            size: artifact.size,
            stage_name: stage.name.clone(),
            action_name: action.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ActionRun, ExecutionId, SourceRevision, StageRun, Trigger};

    fn action(name: &str, status: Option<ActionStatus>) -> ActionRun {
        ActionRun { name: name.into(), run_order: 1, attempt: 1, status, ..ActionRun::default() }
    }

    fn stage(name: &str, status: Option<StageStatus>, actions: Vec<ActionRun>) -> StageRun {
        StageRun { name: name.into(), status, actions, rules: vec![], passed: vec![], auto_retried: false }
    }

    fn run(id: &str, pipeline: &str, started: u64, status: ExecutionStatus, stages: Vec<StageRun>, rev: &str) -> Execution {
        Execution {
            id: ExecutionId(id.into()),
            pipeline: pipeline.into(),
            version: 1,
            status,
            status_summary: None,
            trigger: Trigger::new("Webhook", String::new()),
            started_at: started,
            updated_at: started,
            variables: BTreeMap::new(),
            stages,
            artifacts: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            ordinal: 0,
            waiting_for: None,
            source_revisions: BTreeMap::from([(
                "Source".to_string(),
                SourceRevision { revision_id: rev.into(), revision_summary: Some(format!("commit {rev}")), pinned: false },
            )]),
            rollback: None,
            origins: BTreeMap::new(),
        }
    }

    use ActionStatus as A;
    use StageStatus as S;

    #[test]
    fn a_flow_says_where_each_execution_stopped() {
        let ok = |n| stage(n, Some(S::Succeeded), vec![action("Run", Some(A::Succeeded))]);
        let unreached = |n| stage(n, None, vec![action("Run", None)]);
        // Through every stage.
        let done = run("1", "web", 1, ExecutionStatus::Succeeded, vec![ok("Source"), ok("Build")], "abc");
        assert_eq!(flow_of(&done, "Source").stopped_at, None);
        // Failed at an action of a stage; the next stage never reached.
        let failed_build =
            stage("Build", Some(S::Failed), vec![action("Lint", Some(A::Succeeded)), action("Test", Some(A::Failed))]);
        let failed =
            run("2", "web", 2, ExecutionStatus::Failed, vec![ok("Source"), failed_build, unreached("Deploy")], "abc");
        let flow = flow_of(&failed, "Source");
        let stop = flow.stopped_at.unwrap();
        assert_eq!(
            (stop.stage_name.as_str(), stop.action_name.as_deref(), stop.status.as_str()),
            ("Build", Some("Test"), "Failed")
        );
        assert!(!stop.before_stage);
        assert_eq!(flow.stages[2].status, None);
        assert_eq!(flow.stages[1].actions[1].status.as_deref(), Some("Failed"));
        // Held before a stage (a disabled transition): the stage it did not enter.
        let held =
            run("3", "web", 3, ExecutionStatus::InProgress, vec![ok("Source"), ok("Build"), unreached("Deploy")], "abc");
        let stop = flow_of(&held, "Source").stopped_at.unwrap();
        assert_eq!((stop.stage_name.as_str(), stop.status.as_str(), stop.before_stage), ("Deploy", "NotEntered", true));
        // Running: where it is now, at the running action.
        let approving = stage("Gate", Some(S::InProgress), vec![action("Approve", Some(A::InProgress))]);
        let running = run("4", "web", 4, ExecutionStatus::InProgress, vec![ok("Source"), approving], "abc");
        let stop = flow_of(&running, "Source").stopped_at.unwrap();
        assert_eq!(
            (stop.stage_name.as_str(), stop.action_name.as_deref(), stop.status.as_str()),
            ("Gate", Some("Approve"), "InProgress")
        );
        // Never entered a stage, and an execution of no stages.
        let none = run("5", "web", 5, ExecutionStatus::Stopped, vec![unreached("Source")], "abc");
        assert_eq!(flow_of(&none, "Source").stopped_at.unwrap().stage_name, "Source");
        assert_eq!(flow_of(&run("6", "web", 6, ExecutionStatus::Stopped, vec![], "abc"), "Source").stopped_at, None);
    }

    #[test]
    fn revisions_resolve_from_a_prefix_and_list_once_each() {
        let e = |id: &str, pipeline: &str, started: u64, rev: &str| {
            run(id, pipeline, started, ExecutionStatus::Succeeded, vec![], rev)
        };
        let list = vec![
            e("3", "api", 30, "abc123"),
            e("2", "web", 20, "abd000"),
            e("1", "web", 10, "abc123"),
            e("0", "web", 5, "ab"),
        ];
        assert_eq!(resolve(&list, "abc1").unwrap(), "abc123");
        assert_eq!(resolve(&list, "abc123").unwrap(), "abc123");
        // An exact id shorter than the minimum prefix is still found as it is.
        assert_eq!(resolve(&list, "ab").unwrap(), "ab");
        let ambiguous = resolve(&list, "abc").unwrap_err().to_string();
        assert!(ambiguous.contains("at least 4"), "{ambiguous}");
        let many = resolve(&list[..3], "ab").unwrap_err().to_string();
        assert!(many.contains("prefix of 2 revisions") && many.contains("abc123, abd000"), "{many}");
        assert!(matches!(resolve(&list, "zzzz"), Err(OpError::NotFound(_))));
        let all = summaries(&list, "", 10);
        let ids: Vec<&str> = all.iter().map(|s| s.revision_id.as_str()).collect();
        assert_eq!(ids, ["abc123", "abd000", "ab"]);
        assert_eq!(all[0].pipelines, ["api", "web"]);
        assert_eq!(all[0].revision_summary.as_deref(), Some("commit abc123"));
        assert_eq!(summaries(&list, "abd", 10).len(), 1);
        assert_eq!(summaries(&list, "", 1).len(), 1);
    }
}
