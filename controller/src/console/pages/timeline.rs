//! One execution shaped for its timeline (pure): why anything waited, and
//! the artifacts it made. Input is what `GetPipelineExecution` and
//! `GetPipelineState` answer; nothing here asks anything.

use crate::ops::{ActionRunView, GetPipelineExecutionOutput, GetPipelineStateOutput, StageRunView};

/// Something that held the execution, in the order of its stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The stage, or `stage / action`.
    pub place: String,
    pub why: String,
    /// Whether it still holds the execution.
    pub now: bool,
}

/// An artifact of the execution, with the action that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRow {
    pub name: String,
    pub stage: String,
    pub action: String,
    pub digest: String,
    pub size: u64,
}

/// Why anything of `run` waited: a disabled transition into the stage it
/// has not entered (from `state`, when this execution is the one held), a
/// stage another execution holds, approvals (waiting, or who decided), an
/// action no agent took yet (the scheduler's reason: no agent with the
/// labels, no free slot, ...), attempts lost with their agent.
pub fn waits(run: &GetPipelineExecutionOutput, state: Option<&GetPipelineStateOutput>) -> Vec<Wait> {
    let running = matches!(run.pipeline_execution.status.as_str(), "InProgress" | "Stopping");
    let mut out = Vec::new();
    let entered = run.stages.iter().rposition(|s| s.status.is_some());
    let next = entered.map_or(0, |i| i + 1);
    for (i, stage) in run.stages.iter().enumerate() {
        if i == next && running && entered.is_none_or(|e| run.stages[e].status.as_deref() == Some("Succeeded")) {
            out.push(before_stage(run, stage, state));
        }
        for action in &stage.actions {
            action_waits(stage, action, &mut out);
        }
    }
    out
}

/// The reason a running execution has not entered `stage`.
fn before_stage(run: &GetPipelineExecutionOutput, stage: &StageRunView, state: Option<&GetPipelineStateOutput>) -> Wait {
    let place = stage.stage_name.clone();
    let transition = state
        .and_then(|s| s.stage_states.iter().find(|st| st.stage_name == stage.stage_name))
        .map(|st| &st.inbound_transition_state)
        .filter(|t| !t.enabled);
    let why = match transition {
        Some(t) => {
            let reason = t.disabled_reason.clone().flatten().unwrap_or_else(|| "no reason given".into());
            let by = t.last_changed_by.as_deref().map(|b| format!(", by {b}")).unwrap_or_default();
            let at = t.last_changed_at.as_deref().map(|a| format!(" at {a}")).unwrap_or_default();
            format!("the transition into {place} is disabled: {reason}{by}{at}")
        }
        None => match &run.pipeline_execution.status_summary {
            Some(summary) => format!("waiting to enter {place}: {summary}"),
            None => format!("waiting to enter {place} (another execution holds it, or the stage is about to start)"),
        },
    };
    Wait { place, why, now: true }
}

fn action_waits(stage: &StageRunView, action: &ActionRunView, out: &mut Vec<Wait>) {
    let place = format!("{} / {}", stage.stage_name, action.action_name);
    let running = action.status.as_deref() == Some("InProgress");
    if let Some(approval) = &action.approval {
        let approved: Vec<&str> = approval.decisions.iter().filter(|d| d.approved).map(|d| d.by.as_str()).collect();
        let why = if running {
            let who = if approval.approvers.is_empty() { String::new() } else { format!(" from {}", approval.approvers) };
            format!("waits for approval{who}: {} of {} given", approved.len(), approval.required)
        } else if let Some(rejected) = approval.decisions.iter().find(|d| !d.approved) {
            format!("waited for approval; rejected by {}: {}", rejected.by, rejected.comment)
        } else {
            format!("waited for approval; approved by {}", approved.join(", "))
        };
        out.push(Wait { place: place.clone(), why, now: running });
    }
    // An approval's own reason ("waiting for 1 more approval(s)") is said above.
    if let Some(reason) = action.waiting_reason.as_deref().filter(|_| running && action.approval.is_none()) {
        out.push(Wait { place: place.clone(), why: format!("not started yet: {reason}"), now: true });
    }
    if !action.lost_on.is_empty() {
        let why = format!("ran again after its agent was lost ({})", action.lost_on.join(", "));
        out.push(Wait { place, why, now: false });
    }
}

/// Fills in why each running action of `run` has not started, as the
/// scheduler says it now (no agent with the labels, no free slot, ...):
/// `GetPipelineState` has it for the execution each stage last ran, while
/// `GetPipelineExecution` keeps only what the engine recorded.
pub fn live_reasons(run: &mut GetPipelineExecutionOutput, state: Option<&GetPipelineStateOutput>) {
    let Some(state) = state else { return };
    let id = run.pipeline_execution.pipeline_execution_id.clone();
    for stage in &mut run.stages {
        let Some(live) = state.stage_states.iter().find(|s| s.stage_name == stage.stage_name) else { continue };
        if live.latest_execution.as_ref().is_none_or(|l| l.pipeline_execution_id != id) {
            continue;
        }
        for action in stage.actions.iter_mut().filter(|a| a.waiting_reason.is_none()) {
            let reason = live
                .action_states
                .iter()
                .find(|a| a.action_name == action.action_name)
                .and_then(|a| a.latest_execution.as_ref())
                .and_then(|e| e.waiting_reason.clone());
            action.waiting_reason = reason;
        }
    }
}

/// Every artifact the execution produced, in stage and action order.
pub fn artifacts(run: &GetPipelineExecutionOutput) -> Vec<ArtifactRow> {
    run.stages
        .iter()
        .flat_map(|s| {
            s.actions.iter().flat_map(move |a| {
                a.output_artifacts.iter().map(move |o| ArtifactRow {
                    name: o.name.clone(),
                    stage: s.stage_name.clone(),
                    action: a.action_name.clone(),
                    digest: o.digest.clone(),
                    size: o.size,
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(name: &str, status: Option<&str>, extra: serde_json::Value) -> serde_json::Value {
        let mut a = json!({
            "actionName": name, "runOrder": 1, "status": status, "attempt": 1, "agent": null, "summary": null,
            "errorDetails": null, "lostOn": [], "externalExecutionUrl": null, "startTime": null,
            "lastUpdateTime": null, "outputArtifacts": [], "outputVariables": {}, "approval": null,
            "waitingReason": null, "inputArtifacts": [], "resolvedConfiguration": {}
        });
        a.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        a
    }

    fn run(status: &str, stages: serde_json::Value) -> GetPipelineExecutionOutput {
        serde_json::from_value(json!({
            "pipelineExecution": {
                "pipelineName": "web", "pipelineVersion": 1, "pipelineExecutionId": "e1", "status": status,
                "statusSummary": null, "trigger": {"triggerType": "StartPipelineExecution", "triggerDetail": ""},
                "startTime": "t", "lastUpdateTime": "t", "variables": [], "sourceRevisions": [], "rollbackMetadata": null
            },
            "stages": stages
        }))
        .unwrap()
    }

    fn stage(name: &str, status: Option<&str>, actions: Vec<serde_json::Value>) -> serde_json::Value {
        json!({"stageName": name, "status": status, "conditionRules": [], "actions": actions})
    }

    #[test]
    fn a_disabled_transition_holds_the_stage_it_leads_into() {
        let r = run(
            "InProgress",
            json!([
                stage("Build", Some("Succeeded"), vec![action("Make", Some("Succeeded"), json!({}))]),
                stage("Deploy", None, vec![action("Ship", None, json!({}))]),
            ]),
        );
        let state: GetPipelineStateOutput = serde_json::from_value(json!({
            "pipelineName": "web", "pipelineVersion": 1, "created": "t", "updated": "t", "latestExecution": null,
            "stageStates": [
                {"stageName": "Build", "inboundTransitionState": {"enabled": true}, "actionStates": [], "latestExecution": null},
                {"stageName": "Deploy", "inboundTransitionState": {"enabled": false, "disabledReason": "freeze",
                 "lastChangedBy": "ann", "lastChangedAt": "2026-12-06T07:00:00Z"}, "actionStates": [], "latestExecution": null}
            ]
        }))
        .unwrap();
        let w = waits(&r, Some(&state));
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].place, "Deploy");
        assert_eq!(w[0].why, "the transition into Deploy is disabled: freeze, by ann at 2026-12-06T07:00:00Z");
        assert!(w[0].now);
        // Without the state (or with the transition enabled): waiting to enter.
        assert!(waits(&r, None)[0].why.starts_with("waiting to enter Deploy"));
        // A finished execution waits for nothing before a stage.
        assert!(
            waits(&run("Failed", json!([stage("Build", Some("Failed"), vec![]), stage("Deploy", None, vec![])])), None)
                .is_empty()
        );
    }

    #[test]
    fn approvals_agents_and_lost_attempts_say_why_they_waited() {
        let approval = json!({"approval": {"required": 2, "approvers": "team:release",
            "decisions": [{"by": "ann", "approved": true, "comment": "ok", "at": 1}]}});
        let r = run(
            "InProgress",
            json!([
                stage("Build", Some("Succeeded"), vec![action("Make", Some("Succeeded"), json!({"lostOn": ["ag-1"]}))]),
                stage(
                    "Gate",
                    Some("InProgress"),
                    vec![
                        action("Approve", Some("InProgress"), approval),
                        action(
                            "Scan",
                            Some("InProgress"),
                            json!({"waitingReason": "no connected agent has the labels os=plan9"})
                        ),
                    ]
                ),
            ]),
        );
        let w = waits(&r, None);
        let lines: Vec<(String, String, bool)> = w.into_iter().map(|w| (w.place, w.why, w.now)).collect();
        assert_eq!(
            lines,
            [
                ("Build / Make".into(), "ran again after its agent was lost (ag-1)".into(), false),
                ("Gate / Approve".into(), "waits for approval from team:release: 1 of 2 given".into(), true),
                ("Gate / Scan".into(), "not started yet: no connected agent has the labels os=plan9".into(), true),
            ]
        );
        let decided = json!({"approval": {"required": 1, "approvers": "", "decisions": [
            {"by": "bob", "approved": false, "comment": "not today", "at": 2}]}});
        let r = run("Failed", json!([stage("Gate", Some("Failed"), vec![action("Approve", Some("Failed"), decided)])]));
        assert_eq!(waits(&r, None)[0].why, "waited for approval; rejected by bob: not today");
    }

    #[test]
    fn the_schedulers_reason_comes_from_the_state_of_the_same_execution() {
        let mut r = run(
            "InProgress",
            json!([stage("Build", Some("InProgress"), vec![action("Make", Some("InProgress"), json!({}))])]),
        );
        let state = |id: &str| -> GetPipelineStateOutput {
            serde_json::from_value(json!({
                "pipelineName": "web", "pipelineVersion": 1, "created": "t", "updated": "t", "latestExecution": null,
                "stageStates": [{"stageName": "Build", "inboundTransitionState": {"enabled": true},
                    "latestExecution": {"pipelineExecutionId": id, "status": "InProgress"},
                    "actionStates": [{"actionName": "Make", "latestExecution": {"status": "InProgress", "summary": null,
                        "lastStatusChange": null, "errorDetails": null, "externalExecutionUrl": null, "agent": null,
                        "attempt": 1, "waitingReason": "no connected agent has os=plan9"}}]}]
            }))
            .unwrap()
        };
        // Another execution's reason is not this one's.
        live_reasons(&mut r, Some(&state("e0")));
        assert_eq!(r.stages[0].actions[0].waiting_reason, None);
        live_reasons(&mut r, Some(&state("e1")));
        assert_eq!(r.stages[0].actions[0].waiting_reason.as_deref(), Some("no connected agent has os=plan9"));
        assert_eq!(waits(&r, None)[0].why, "not started yet: no connected agent has os=plan9");
    }

    #[test]
    fn artifacts_name_the_action_that_made_them() {
        let out = json!({"outputArtifacts": [{"name": "bin", "digest": "d1", "size": 10}]});
        let r = run("Succeeded", json!([stage("Build", Some("Succeeded"), vec![action("Make", Some("Succeeded"), out)])]));
        let rows = artifacts(&r);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].name.as_str(), rows[0].stage.as_str(), rows[0].action.as_str()), ("bin", "Build", "Make"));
    }
}
