//! The event types a notification rule subscribes to, named as CodeStar
//! Notifications names CodePipeline's (`codepipeline-pipeline-...`), and
//! which of them an engine notice is. Pure: no store, no clock.

use crate::engine::Notice;

/// Every event type a rule may name, as CodeStar Notifications' id.
pub const EVENT_TYPES: &[&str] = &[
    "codepipeline-pipeline-pipeline-execution-started",
    "codepipeline-pipeline-pipeline-execution-succeeded",
    "codepipeline-pipeline-pipeline-execution-failed",
    "codepipeline-pipeline-pipeline-execution-canceled",
    "codepipeline-pipeline-pipeline-execution-superseded",
    "codepipeline-pipeline-pipeline-execution-resumed",
    "codepipeline-pipeline-stage-execution-started",
    "codepipeline-pipeline-stage-execution-succeeded",
    "codepipeline-pipeline-stage-execution-failed",
    "codepipeline-pipeline-stage-execution-canceled",
    "codepipeline-pipeline-stage-execution-resumed",
    "codepipeline-pipeline-action-execution-started",
    "codepipeline-pipeline-action-execution-succeeded",
    "codepipeline-pipeline-action-execution-failed",
    "codepipeline-pipeline-action-execution-canceled",
    "codepipeline-pipeline-manual-approval-needed",
    "codepipeline-pipeline-manual-approval-succeeded",
    "codepipeline-pipeline-manual-approval-failed",
];

/// What the driver knows about a notice beyond the notice itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoticeContext {
    /// The action is a manual approval.
    pub approval: bool,
    /// An execution went back to InProgress after it had started (a stage
    /// retry), rather than starting; for a stage, it is the stage retried.
    pub resumed: bool,
}

/// The event types `notice` is, in the order they are delivered: an
/// approval's action events come with its approval event. Statuses with no
/// CodeStar event (`Stopping`, `Lost`, `Skipped`, a stage condition, one of
/// several approvals) are none.
pub fn event_types(notice: &Notice, ctx: NoticeContext) -> Vec<&'static str> {
    let status = notice.status.as_str();
    match (&notice.stage, &notice.action) {
        (Some(_), Some(_)) => {
            let action = match status {
                "InProgress" => Some("codepipeline-pipeline-action-execution-started"),
                "Succeeded" => Some("codepipeline-pipeline-action-execution-succeeded"),
                "Failed" => Some("codepipeline-pipeline-action-execution-failed"),
                "Abandoned" => Some("codepipeline-pipeline-action-execution-canceled"),
                _ => None,
            };
            let approval = match status {
                "InProgress" if ctx.approval => Some("codepipeline-pipeline-manual-approval-needed"),
                "Succeeded" if ctx.approval => Some("codepipeline-pipeline-manual-approval-succeeded"),
                "Failed" if ctx.approval => Some("codepipeline-pipeline-manual-approval-failed"),
                _ => None,
            };
            action.into_iter().chain(approval).collect()
        }
        (Some(_), None) => match status {
            "InProgress" if ctx.resumed => vec!["codepipeline-pipeline-stage-execution-resumed"],
            "InProgress" => vec!["codepipeline-pipeline-stage-execution-started"],
            "Succeeded" => vec!["codepipeline-pipeline-stage-execution-succeeded"],
            "Failed" => vec!["codepipeline-pipeline-stage-execution-failed"],
            "Stopped" => vec!["codepipeline-pipeline-stage-execution-canceled"],
            _ => vec![],
        },
        _ => match status {
            "InProgress" if ctx.resumed => vec!["codepipeline-pipeline-pipeline-execution-resumed"],
            "InProgress" => vec!["codepipeline-pipeline-pipeline-execution-started"],
            "Succeeded" => vec!["codepipeline-pipeline-pipeline-execution-succeeded"],
            "Failed" => vec!["codepipeline-pipeline-pipeline-execution-failed"],
            "Stopped" => vec!["codepipeline-pipeline-pipeline-execution-canceled"],
            "Superseded" => vec!["codepipeline-pipeline-pipeline-execution-superseded"],
            _ => vec![],
        },
    }
}

/// Checks a rule's event type ids: known, at least one, no repeats; every
/// unknown one is named.
pub fn check_event_types(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Err("a notification rule needs at least one event type id".into());
    }
    let unknown: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !EVENT_TYPES.contains(id)).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown event type id(s) {}: expected ids such as codepipeline-pipeline-pipeline-execution-failed (see docs/notifications.md)",
            unknown.join(", ")
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(format!("event type id {id} is named twice"));
        }
    }
    Ok(())
}

/// What `detailType` says for an event type, CodeStar-like:
/// `CodePipeline Action Execution State Change`.
pub fn detail_type(event_type: &str) -> &'static str {
    if event_type.contains("-manual-approval-") {
        "CodePipeline Manual Approval State Change"
    } else if event_type.contains("-action-execution-") {
        "CodePipeline Action Execution State Change"
    } else if event_type.contains("-stage-execution-") {
        "CodePipeline Stage Execution State Change"
    } else {
        "CodePipeline Pipeline Execution State Change"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ExecutionId;

    fn notice(stage: Option<&str>, action: Option<&str>, status: &str) -> Notice {
        Notice {
            at: 0,
            pipeline: "web".into(),
            execution_id: ExecutionId("e1".into()),
            stage: stage.map(str::to_string),
            action: action.map(str::to_string),
            status: status.into(),
            message: None,
        }
    }

    #[test]
    fn notices_become_codestar_event_types() {
        let plain = NoticeContext::default();
        assert_eq!(
            event_types(&notice(None, None, "InProgress"), plain),
            ["codepipeline-pipeline-pipeline-execution-started"]
        );
        let resumed = NoticeContext { resumed: true, ..plain };
        assert_eq!(
            event_types(&notice(None, None, "InProgress"), resumed),
            ["codepipeline-pipeline-pipeline-execution-resumed"]
        );
        assert_eq!(
            event_types(&notice(None, None, "Stopped"), plain),
            ["codepipeline-pipeline-pipeline-execution-canceled"]
        );
        assert_eq!(
            event_types(&notice(None, None, "Superseded"), plain),
            ["codepipeline-pipeline-pipeline-execution-superseded"]
        );
        assert!(event_types(&notice(None, None, "Stopping"), plain).is_empty());
        assert_eq!(
            event_types(&notice(Some("Build"), None, "Failed"), plain),
            ["codepipeline-pipeline-stage-execution-failed"]
        );
        assert!(event_types(&notice(Some("Build"), None, "Condition"), plain).is_empty());
        assert_eq!(
            event_types(&notice(Some("Build"), None, "InProgress"), resumed),
            ["codepipeline-pipeline-stage-execution-resumed"]
        );
        assert_eq!(
            event_types(&notice(Some("Build"), Some("Compile"), "Succeeded"), plain),
            ["codepipeline-pipeline-action-execution-succeeded"]
        );
        assert!(event_types(&notice(Some("Build"), Some("Compile"), "Lost"), plain).is_empty());
    }

    #[test]
    fn an_approval_is_an_action_and_an_approval_event() {
        let approval = NoticeContext { approval: true, ..Default::default() };
        assert_eq!(
            event_types(&notice(Some("Gate"), Some("Approve"), "InProgress"), approval),
            ["codepipeline-pipeline-action-execution-started", "codepipeline-pipeline-manual-approval-needed"]
        );
        assert_eq!(
            event_types(&notice(Some("Gate"), Some("Approve"), "Failed"), approval),
            ["codepipeline-pipeline-action-execution-failed", "codepipeline-pipeline-manual-approval-failed"]
        );
        // One approval of several required is no state change.
        assert!(event_types(&notice(Some("Gate"), Some("Approve"), "Approved"), approval).is_empty());
    }

    #[test]
    fn rules_name_known_event_types_once() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_event_types(&ids(&["codepipeline-pipeline-manual-approval-needed"])).is_ok());
        assert!(check_event_types(&[]).unwrap_err().contains("at least one"));
        let err = check_event_types(&ids(&["codepipeline-pipeline-pipeline-execution-started", "build-broke"])).unwrap_err();
        assert!(err.contains("build-broke") && !err.contains("started,"), "{err}");
        let twice = ids(&["codepipeline-pipeline-stage-execution-failed", "codepipeline-pipeline-stage-execution-failed"]);
        assert!(check_event_types(&twice).unwrap_err().contains("twice"));
        for id in EVENT_TYPES {
            assert!(id.starts_with("codepipeline-pipeline-"), "{id}");
            assert!(detail_type(id).starts_with("CodePipeline "), "{id}");
        }
    }
}
