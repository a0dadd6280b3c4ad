use super::*;

fn pipeline(json: &str) -> Arc<Pipeline> {
    Arc::new(crate::pipeline::parse(json).expect("test pipeline parses").pipeline)
}

fn three_stage() -> Arc<Pipeline> {
    pipeline(
        r#"{"pipeline": {"name": "web", "variables": [{"name": "ENV", "defaultValue": "staging"}], "stages": [
        {"name": "Source", "actions": [{"name": "Src", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": "/r"}, "outputArtifacts": [{"name": "src"}], "namespace": "SourceVariables"}]},
        {"name": "Build", "actions": [
            {"name": "A", "runOrder": 1, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
             "configuration": {"Commands": "echo #{SourceVariables.CommitId} #{variables.ENV} #{codepipeline.PipelineExecutionId}"},
             "inputArtifacts": [{"name": "src"}], "outputArtifacts": [{"name": "bin"}]},
            {"name": "B", "runOrder": 1, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
            {"name": "C", "runOrder": 2, "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"},
             "inputArtifacts": [{"name": "bin"}]}]},
        {"name": "Deploy", "actions": [{"name": "D", "actionTypeId": {"category": "Deploy", "owner": "Sluice", "provider": "noop", "version": "1"}}]}
    ]}}"#,
    )
}

/// Feeds an event the engine never refuses.
fn feed(engine: &mut Engine, now: Millis, event: Event) {
    assert_eq!(engine.handle(now, event), Ok(Handled::Applied));
}

fn start(engine: &mut Engine, p: Arc<Pipeline>, id: &str) {
    feed(
        engine,
        0,
        Event::Start {
            id: ExecutionId(id.into()),
            pipeline: p,
            version: 1,
            trigger: Trigger::new("StartPipelineExecution", "test"),
            variables: BTreeMap::new(),
            revisions: BTreeMap::new(),
            origins: BTreeMap::new(),
        },
    );
}

fn restore(engine: &mut Engine, now: Millis, p: Arc<Pipeline>, stored: Execution) {
    feed(engine, now, Event::Restore { executions: vec![(p, stored)] });
}

fn transition(engine: &mut Engine, now: Millis, stage: &str, state: TransitionState) {
    feed(engine, now, Event::SetTransition { pipeline: "web".into(), stage: stage.into(), state });
}

fn retry(
    engine: &mut Engine,
    now: Millis,
    p: Arc<Pipeline>,
    e: Execution,
    stage: &str,
    mode: RetryMode,
) -> Result<(), Refusal> {
    engine.handle(now, Event::RetryStage { pipeline: p, execution: Box::new(e), stage: stage.into(), mode }).map(|_| ())
}

/// A decision on the approval `Approve/Release`; what it did, in words.
fn decide(
    engine: &mut Engine,
    now: Millis,
    id: &ExecutionId,
    by: &str,
    decision: Decision,
    comment: &str,
) -> Result<String, Refusal> {
    let event = Event::PutApprovalResult {
        execution: id.clone(),
        stage: "Approve".into(),
        action: "Release".into(),
        by: by.into(),
        member_of: Vec::new(),
        decision,
        comment: comment.into(),
    };
    match engine.handle(now, event)? {
        Handled::Decided(said) => Ok(said),
        other => panic!("a decision was handled as {other:?}"),
    }
}

/// Time passes to `now`: the agent jobs that timed out.
fn expire(engine: &mut Engine, now: Millis) -> Vec<JobId> {
    feed(engine, now, Event::Timeout);
    engine.take_expired()
}

fn rollback(
    engine: &mut Engine,
    now: Millis,
    id: &str,
    p: Arc<Pipeline>,
    target: &Execution,
    trigger: Trigger,
) -> Result<(), Refusal> {
    let event = Event::Rollback {
        id: ExecutionId(id.into()),
        pipeline: p,
        version: 1,
        target: Box::new(target.clone()),
        stage: "Deploy".into(),
        trigger,
    };
    engine.handle(now, event).map(|_| ())
}

fn ok(outputs: &[(&str, &str)], vars: &[(&str, &str)]) -> ActionResult {
    ActionResult::Succeeded {
        summary: "ok".into(),
        output_variables: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        external_url: None,
        outputs: outputs.iter().map(|(n, d)| (n.to_string(), ArtifactRef { digest: d.to_string(), size: 1 })).collect(),
    }
}

fn drain(engine: &mut Engine) -> Vec<Dispatch> {
    std::iter::from_fn(|| engine.poll_dispatch()).collect()
}

fn finish(engine: &mut Engine, d: &Dispatch, result: ActionResult) {
    feed(engine, 1, Event::ActionFinished { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, result });
}

#[test]
fn stages_run_in_order_and_run_orders_group_actions() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine);
    assert_eq!(d.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["Src"]);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[("CommitId", "c0ffee")]));

    // runOrder 1: A and B together; C waits for both.
    let d = drain(&mut engine);
    assert_eq!(d.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["A", "B"]);
    let a = &d[0];
    assert_eq!(a.inputs, vec![("src".to_string(), ArtifactRef { digest: "aa".into(), size: 1 })]);
    assert_eq!(a.configuration, vec![("Commands".to_string(), "echo c0ffee staging e1".to_string())]);
    finish(&mut engine, &d[1], ok(&[], &[]));
    assert!(drain(&mut engine).is_empty(), "C must wait for A");
    finish(&mut engine, a, ok(&[("bin", "bb")], &[]));
    let d = drain(&mut engine);
    assert_eq!(d.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["C"]);
    assert_eq!(d[0].inputs[0].1.digest, "bb");
    finish(&mut engine, &d[0], ok(&[], &[]));
    let d = drain(&mut engine);
    assert_eq!(d[0].stage, "Deploy");
    finish(&mut engine, &d[0], ok(&[], &[]));
    let dirty = engine.take_dirty();
    assert_eq!(dirty[0].status, ExecutionStatus::Succeeded);
    assert!(engine.execution(&ExecutionId("e1".into())).is_none(), "finished executions leave memory");
}

#[test]
fn a_failure_settles_its_group_then_fails_the_execution() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ActionResult::Failed { message: "exit 1".into() });
    // B is still running: nothing ends yet.
    let exec = engine.execution(&ExecutionId("e1".into())).unwrap();
    assert_eq!(exec.status, ExecutionStatus::InProgress);
    finish(&mut engine, &d[1], ok(&[], &[]));
    let dirty = engine.take_dirty();
    let exec = &dirty[0];
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(exec.stages[1].status, Some(StageStatus::Failed));
    assert!(exec.status_summary.as_deref().unwrap().contains("action \"A\": exit 1"));
    assert_eq!(exec.stages[2].status, None, "later stages never start");
    assert!(drain(&mut engine).is_empty());
}

#[test]
fn stale_and_unknown_results_are_refused() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine).remove(0);
    feed(
        &mut engine,
        1,
        Event::ActionFinished { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch + 1, result: ok(&[], &[]) },
    );
    feed(&mut engine, 1, Event::ActionFinished { job_id: "nope".into(), lease_epoch: 1, result: ok(&[], &[]) });
    let exec = engine.execution(&ExecutionId("e1".into())).unwrap();
    assert_eq!(exec.stages[0].actions[0].status, Some(ActionStatus::InProgress));
}

#[test]
fn restore_hands_running_actions_out_again_under_a_new_epoch() {
    let mut engine = Engine::new();
    let p = three_stage();
    start(&mut engine, p.clone(), "e1");
    let first = drain(&mut engine).remove(0);
    let stored = Arc::unwrap_or_clone(engine.take_dirty().remove(0));

    let mut restarted = Engine::new();
    restore(&mut restarted, 5, p, stored);
    let again = drain(&mut restarted);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job_id, first.job_id);
    assert_eq!(again[0].lease_epoch, first.lease_epoch + 1);
    // The old hand-out's result is refused, the new one counts.
    finish(&mut restarted, &first, ok(&[("src", "aa")], &[]));
    assert!(drain(&mut restarted).is_empty());
    finish(&mut restarted, &again[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    assert_eq!(drain(&mut restarted).len(), 2);
}

#[test]
fn an_unresolvable_variable_fails_the_action_with_the_reason() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine);
    // The source action succeeds without the CommitId output variable.
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[]));
    let dispatched = drain(&mut engine);
    assert_eq!(dispatched.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["B"]);
    finish(&mut engine, &dispatched[0], ok(&[], &[]));
    let exec = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
    assert_eq!(exec.status, ExecutionStatus::Failed);
    let a = &exec.stages[1].actions[0];
    assert_eq!(a.status, Some(ActionStatus::Failed));
    assert!(a.error.as_deref().unwrap().contains("SourceVariables.CommitId"), "{:?}", a.error);
}

#[test]
fn stop_and_wait_lets_running_actions_finish_and_starts_nothing_new() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine).remove(0);
    let id = ExecutionId("e1".into());
    feed(&mut engine, 1, Event::Stop { id: id.clone(), mode: StopMode::Wait, reason: "by test".into() });
    assert_eq!(engine.execution(&id).unwrap().status, ExecutionStatus::Stopping);
    finish(&mut engine, &d, ok(&[("src", "aa")], &[("CommitId", "x")]));
    assert!(drain(&mut engine).is_empty(), "nothing new starts while stopping");
    let exec = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
    assert_eq!(exec.status, ExecutionStatus::Stopped);
    assert_eq!(exec.stages[0].actions[0].status, Some(ActionStatus::Succeeded));
    assert_eq!(exec.stages[0].status, Some(StageStatus::Stopped));
    assert_eq!(exec.stages[1].status, None);
}

#[test]
fn stop_and_abandon_ends_at_once_and_refuses_late_results() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "e1");
    let d = drain(&mut engine).remove(0);
    let id = ExecutionId("e1".into());
    feed(&mut engine, 1, Event::Stop { id: id.clone(), mode: StopMode::Abandon, reason: "by test".into() });
    let exec = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
    assert_eq!(exec.status, ExecutionStatus::Stopped);
    assert_eq!(exec.stages[0].actions[0].status, Some(ActionStatus::Abandoned));
    // The agent's late answer changes nothing.
    finish(&mut engine, &d, ok(&[("src", "aa")], &[]));
    assert!(engine.take_dirty().is_empty());
    assert!(drain(&mut engine).is_empty());
}

fn with_mode(mode: &str) -> Arc<Pipeline> {
    let mut p = (*three_stage()).clone();
    p.execution_mode = crate::pipeline::ExecutionMode::from_name(mode).expect("a mode");
    Arc::new(p)
}

fn dispatched_executions(engine: &mut Engine) -> Vec<String> {
    drain(engine).into_iter().map(|d| d.execution_id.0).collect()
}

#[test]
fn queued_executions_take_each_stage_in_start_order() {
    let mut engine = Engine::new();
    let p = with_mode("QUEUED");
    start(&mut engine, p.clone(), "e1");
    start(&mut engine, p.clone(), "e2");
    start(&mut engine, p, "e3");
    let first = drain(&mut engine);
    assert_eq!(first.iter().map(|d| d.execution_id.0.as_str()).collect::<Vec<_>>(), ["e1"]);
    // e1 leaves Source: e2 (not e3) enters it.
    finish(&mut engine, &first[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    let next = dispatched_executions(&mut engine);
    assert!(next.contains(&"e2".to_string()) && !next.contains(&"e3".to_string()), "{next:?}");
    assert_eq!(engine.execution(&ExecutionId("e3".into())).unwrap().waiting_for.as_deref(), Some("Source"));
    assert!(engine.executions().all(|e| e.status == ExecutionStatus::InProgress), "QUEUED supersedes nothing");
}

#[test]
fn superseded_replaces_an_older_waiting_execution() {
    let mut engine = Engine::new();
    let p = with_mode("SUPERSEDED");
    start(&mut engine, p.clone(), "e1");
    let first = drain(&mut engine);
    start(&mut engine, p.clone(), "e2");
    start(&mut engine, p, "e3");
    assert!(drain(&mut engine).is_empty(), "Source holds one execution at a time");
    let dirty = engine.take_dirty();
    let e2 = dirty.iter().find(|e| e.id.0 == "e2").unwrap();
    assert_eq!(e2.status, ExecutionStatus::Superseded);
    assert!(e2.status_summary.as_deref().unwrap().contains("e3"));
    finish(&mut engine, &first[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    let next = dispatched_executions(&mut engine);
    assert!(next.contains(&"e3".to_string()), "{next:?}");
}

#[test]
fn parallel_executions_do_not_wait_for_each_other() {
    let mut engine = Engine::new();
    let p = with_mode("PARALLEL");
    start(&mut engine, p.clone(), "e1");
    start(&mut engine, p, "e2");
    assert_eq!(dispatched_executions(&mut engine), ["e1", "e2"]);
}

#[test]
fn a_disabled_transition_holds_the_newest_execution_and_promotes_it_on_enable() {
    let mut engine = Engine::new();
    let p = with_mode("SUPERSEDED");
    transition(&mut engine, 0, "Build", TransitionState::Disabled);
    start(&mut engine, p.clone(), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    assert!(drain(&mut engine).is_empty(), "a disabled transition never promotes");
    start(&mut engine, p, "e2");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "bb")], &[("CommitId", "y")]));
    assert!(drain(&mut engine).is_empty());
    let dirty = engine.take_dirty();
    assert_eq!(dirty.iter().find(|e| e.id.0 == "e1").unwrap().status, ExecutionStatus::Superseded);
    transition(&mut engine, 1, "Build", TransitionState::Enabled);
    let next = drain(&mut engine);
    assert!(!next.is_empty() && next.iter().all(|d| d.execution_id.0 == "e2" && d.stage == "Build"), "{next:?}");
}

#[test]
fn queued_executions_all_wait_at_a_disabled_transition() {
    let mut engine = Engine::new();
    let p = with_mode("QUEUED");
    transition(&mut engine, 0, "Build", TransitionState::Disabled);
    for id in ["e1", "e2"] {
        start(&mut engine, p.clone(), id);
    }
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
    let d = drain(&mut engine);
    assert_eq!(d[0].execution_id.0, "e2");
    finish(&mut engine, &d[0], ok(&[("src", "bb")], &[("CommitId", "y")]));
    assert!(drain(&mut engine).is_empty());
    assert!(engine.executions().all(|e| e.status == ExecutionStatus::InProgress));
    transition(&mut engine, 1, "Build", TransitionState::Enabled);
    // In order: e1 takes Build, e2 waits for it.
    assert_eq!(dispatched_executions(&mut engine), ["e1", "e1"]);
}

#[test]
fn retry_runs_the_failed_actions_again_from_the_failed_stage() {
    for (mode, expected) in [(RetryMode::FailedActions, vec!["A"]), (RetryMode::AllActions, vec!["A", "B"])] {
        let mut engine = Engine::new();
        let p = three_stage();
        start(&mut engine, p.clone(), "e1");
        let d = drain(&mut engine);
        finish(&mut engine, &d[0], ok(&[("src", "aa")], &[("CommitId", "x")]));
        let d = drain(&mut engine);
        finish(&mut engine, &d[1], ok(&[], &[]));
        finish(&mut engine, &d[0], ActionResult::Failed { message: "boom".into() });
        let failed = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
        assert_eq!(failed.status, ExecutionStatus::Failed);
        let refused = retry(&mut engine, 2, p.clone(), failed.clone(), "Source", mode).unwrap_err();
        assert!(refused.to_string().contains("did not fail"), "{refused}");

        retry(&mut engine, 2, p, failed, "Build", mode).unwrap();
        let again = drain(&mut engine);
        assert_eq!(again.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), expected, "{mode:?}");
        assert!(again.iter().all(|d| d.attempt == 2), "a retry is a new attempt");
        for d in &again {
            finish(&mut engine, d, ok(&[("bin", "bb")], &[]));
        }
        let d = drain(&mut engine);
        assert_eq!(d[0].action, "C");
        finish(&mut engine, &d[0], ok(&[], &[]));
        let deploy = drain(&mut engine).remove(0);
        finish(&mut engine, &deploy, ok(&[], &[]));
        let done = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
        assert_eq!(done.status, ExecutionStatus::Succeeded);
        let refused = retry(&mut engine, 3, three_stage(), done, "Build", mode).unwrap_err();
        assert!(refused.to_string().contains("not Failed"), "{refused}");
    }
}

#[test]
fn a_pinned_revision_reaches_the_source_action_and_a_fetched_one_is_recorded() {
    let mut engine = Engine::new();
    let pinned: BTreeMap<String, String> = [("Src".to_string(), "abc123".to_string())].into();
    feed(
        &mut engine,
        0,
        Event::Start {
            id: ExecutionId("pinned".into()),
            pipeline: three_stage(),
            version: 1,
            trigger: Trigger::new("Webhook", "push"),
            variables: BTreeMap::new(),
            revisions: pinned,
            origins: BTreeMap::new(),
        },
    );
    let src = drain(&mut engine);
    assert!(src[0].variables.contains(&(PINNED_REVISION_VARIABLE.to_string(), "abc123".to_string())));
    finish(&mut engine, &src[0], ok(&[("src", "d1")], &[("CommitId", "abc123")]));
    let exec = engine.execution(&ExecutionId("pinned".into())).unwrap();
    let rev = &exec.source_revisions["Src"];
    assert_eq!((rev.revision_id.as_str(), rev.pinned, rev.revision_summary.as_deref()), ("abc123", true, Some("ok")));
    // Later actions see no pinned revision.
    let build = drain(&mut engine);
    assert_eq!(build.len(), 2);
    assert!(build.iter().all(|d| !d.variables.iter().any(|(k, _)| k == PINNED_REVISION_VARIABLE)));

    // Unpinned: nothing is passed, and what the plugin reports is kept.
    start(&mut engine, three_stage(), "head");
    let src = drain(&mut engine);
    assert!(!src[0].variables.iter().any(|(k, _)| k == PINNED_REVISION_VARIABLE));
    finish(&mut engine, &src[0], ok(&[("src", "d2")], &[("CommitId", "def456")]));
    let exec = engine.execution(&ExecutionId("head".into())).unwrap();
    assert_eq!(exec.source_revisions["Src"].revision_id, "def456");
    assert!(!exec.source_revisions["Src"].pinned);
}

fn approval_pipeline(required: u32, timeout_minutes: u32) -> Arc<Pipeline> {
    pipeline(&format!(
        r#"{{"pipeline": {{"name": "gate", "stages": [
        {{"name": "Source", "actions": [{{"name": "Src", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}]}}]}},
        {{"name": "Approve", "actions": [{{"name": "Release", "timeoutInMinutes": {timeout_minutes},
            "actionTypeId": {{"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}},
            "configuration": {{"RequiredApprovals": "{required}"}}}}]}},
        {{"name": "Deploy", "actions": [{{"name": "D", "actionTypeId": {{"category": "Deploy", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}}
    ]}}}}"#
    ))
}

fn two_stage(retry: &str) -> Arc<Pipeline> {
    pipeline(&format!(
        r#"{{"pipeline": {{"name": "web", "stages": [
        {{"name": "Source", "actions": [{{"name": "Src", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}]}}]}},
        {{"name": "Build", "actions": [{{"name": "B", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}{retry}}}]}}
    ]}}}}"#
    ))
}

fn start_by(engine: &mut Engine, p: Arc<Pipeline>, id: &str, by: &str) {
    feed(
        engine,
        0,
        Event::Start {
            id: ExecutionId(id.into()),
            pipeline: p,
            version: 1,
            trigger: Trigger::new("StartPipelineExecution", "test").by(by),
            variables: BTreeMap::new(),
            revisions: BTreeMap::new(),
            origins: BTreeMap::new(),
        },
    );
}

#[test]
fn an_approval_needs_distinct_approvers_other_than_the_starter() {
    let mut engine = Engine::new();
    start_by(&mut engine, approval_pipeline(2, 60), "e", "ann");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    assert!(drain(&mut engine).is_empty(), "an approval is never handed to an agent");
    let id = ExecutionId("e".into());
    let err = decide(&mut engine, 2, &id, "ann", Decision::Approved, "").unwrap_err().to_string();
    assert!(err.contains("started execution e and cannot approve it"), "{err}");
    assert_eq!(decide(&mut engine, 3, &id, "bob", Decision::Approved, "lgtm").unwrap(), "approved by bob (1 of 2): lgtm");
    let err = decide(&mut engine, 4, &id, "bob", Decision::Approved, "").unwrap_err().to_string();
    assert!(err.contains("already decided"), "{err}");
    assert!(drain(&mut engine).is_empty(), "one approval of two lets nothing through");
    assert_eq!(decide(&mut engine, 5, &id, "cy", Decision::Approved, "").unwrap(), "approved by bob, cy");
    let deploy = drain(&mut engine);
    assert_eq!(deploy.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["D"]);
    let run = &engine.execution(&id).unwrap().stages[1].actions[0];
    assert_eq!(run.status, Some(ActionStatus::Succeeded));
    let decisions = &run.approval.as_ref().unwrap().decisions;
    assert_eq!(decisions.iter().map(|d| (d.by.as_str(), d.at)).collect::<Vec<_>>(), [("bob", 3), ("cy", 5)]);
    // Nothing is waiting any more.
    assert!(decide(&mut engine, 6, &id, "dee", Decision::Approved, "").is_err());
}

// Separation of duties (issue 15, gov).
fn approvers_pipeline(approvers: &str) -> Arc<Pipeline> {
    pipeline(&format!(
        r#"{{"pipeline": {{"name": "gate", "stages": [
        {{"name": "Source", "actions": [{{"name": "Src", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}]}}]}},
        {{"name": "Approve", "actions": [{{"name": "Release",
            "actionTypeId": {{"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}},
            "configuration": {{"RequiredApprovals": "1", "Approvers": "{approvers}"}}}}]}}
    ]}}}}"#
    ))
}

fn decide_as(engine: &mut Engine, id: &str, by: &str, member_of: &[&str], decision: Decision) -> Result<Handled, Refusal> {
    let event = Event::PutApprovalResult {
        execution: ExecutionId(id.into()),
        stage: "Approve".into(),
        action: "Release".into(),
        by: by.into(),
        member_of: member_of.iter().map(|m| m.to_string()).collect(),
        decision,
        comment: String::new(),
    };
    engine.handle(5, event)
}

#[test]
fn the_author_the_pusher_and_those_outside_approvers_may_not_approve() {
    let mut engine = Engine::new();
    let mut trigger = Trigger::new("Webhook", "test").pushed_by(Some("pat".into()));
    trigger.version_author = Some("ann".into());
    let start = Event::Start {
        id: ExecutionId("e".into()),
        pipeline: approvers_pipeline("user:ann, user:pat, user:bob, team:release"),
        version: 3,
        trigger,
        variables: BTreeMap::new(),
        revisions: BTreeMap::new(),
        origins: BTreeMap::new(),
    };
    feed(&mut engine, 0, start);
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    let refused = |r: Result<Handled, Refusal>| {
        let refusal = r.unwrap_err();
        assert!(refusal.is_separation_of_duties(), "{refusal}");
        refusal.to_string()
    };
    assert_eq!(
        refused(decide_as(&mut engine, "e", "ann", &[], Decision::Approved)),
        "ann authored version 3 of \"gate\" and may not approve its execution"
    );
    assert_eq!(
        refused(decide_as(&mut engine, "e", "pat", &[], Decision::Approved)),
        "pat pushed the revision execution e runs and may not approve it"
    );
    assert_eq!(
        refused(decide_as(&mut engine, "e", "cy", &["team:ops", "role:approver"], Decision::Approved)),
        "cy is not among the approvers of Approve/Release (Approvers: user:ann, user:pat, user:bob, team:release)"
    );
    // Outside the approvers, not even a rejection counts.
    refused(decide_as(&mut engine, "e", "cy", &[], Decision::Rejected));
    // A team member approves.
    let said = decide_as(&mut engine, "e", "dee", &["team:release"], Decision::Approved).unwrap();
    assert_eq!(said, Handled::Decided("approved by dee".into()));
}

#[test]
fn a_rejection_fails_the_execution_and_a_timeout_fails_the_approval() {
    let mut engine = Engine::new();
    start_by(&mut engine, approval_pipeline(1, 60), "r", "ann");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    // The starter may reject (only approving is refused).
    assert_eq!(
        decide(&mut engine, 2, &ExecutionId("r".into()), "ann", Decision::Rejected, "not today").unwrap(),
        "rejected by ann: not today"
    );
    let dirty = engine.take_dirty();
    let rejected = dirty.iter().find(|e| e.id.0 == "r").unwrap();
    assert_eq!(rejected.status, ExecutionStatus::Failed);

    start_by(&mut engine, approval_pipeline(1, 1), "t", "ann");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    // Action started at 1 ms; a 1-minute timeout.
    assert_eq!(engine.poll_timeout(), Some(60_001), "the approval's deadline is the engine's next wake-up");
    assert!(expire(&mut engine, 60_000).is_empty());
    assert_eq!(engine.execution(&ExecutionId("t".into())).unwrap().status, ExecutionStatus::InProgress, "not yet");
    assert!(expire(&mut engine, 60_001).is_empty(), "approvals have no job to cancel");
    assert_eq!(engine.poll_timeout(), None, "nothing else can time out");
    let dirty = engine.take_dirty();
    let timed_out = dirty.iter().find(|e| e.id.0 == "t").unwrap();
    assert_eq!(timed_out.status, ExecutionStatus::Failed);
    assert_eq!(timed_out.stages[1].actions[0].error.as_deref(), Some("approval timed out after 1m"));
}

#[test]
fn an_action_no_agent_takes_fails_at_its_timeout_and_a_silent_agent_after_the_grace() {
    let mut engine = Engine::new();
    start(&mut engine, three_stage(), "w");
    let src = drain(&mut engine);
    // Never started by an agent: fails at the 60-minute default.
    assert_eq!(engine.poll_timeout(), Some(60 * 60_000));
    assert!(expire(&mut engine, 60 * 60_000 - 1).is_empty());
    assert_eq!(expire(&mut engine, 60 * 60_000), vec![src[0].job_id.clone()]);
    let exec = engine.take_dirty().into_iter().find(|e| e.id.0 == "w").unwrap();
    assert!(exec.stages[0].actions[0].error.as_deref().unwrap().starts_with("not started within 1h"), "{exec:?}");

    start(&mut engine, three_stage(), "s");
    let src = drain(&mut engine);
    feed(
        &mut engine,
        0,
        Event::ActionStarted { job_id: src[0].job_id.clone(), lease_epoch: src[0].lease_epoch, agent: "a".into() },
    );
    // Started: the deadline moves on by the grace.
    assert_eq!(engine.poll_timeout(), Some(60 * 60_000 + TIMEOUT_GRACE_MS));
    assert!(expire(&mut engine, 60 * 60_000 + TIMEOUT_GRACE_MS - 1).is_empty());
    assert_eq!(expire(&mut engine, 60 * 60_000 + TIMEOUT_GRACE_MS), vec![src[0].job_id.clone()]);
    assert_eq!(engine.poll_timeout(), None);
}

fn conditional(build_extra: &str, deploy_extra: &str) -> Arc<Pipeline> {
    pipeline(&format!(
        r##"{{"pipeline": {{"name": "cond", "variables": [{{"name": "ENV", "defaultValue": "staging"}}], "stages": [
        {{"name": "Source", "actions": [{{"name": "Src", "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
            "configuration": {{"Url": "/r"}}, "outputArtifacts": [{{"name": "src"}}]}}]}},
        {{"name": "Build", {build_extra} "actions": [
            {{"name": "A", "runOrder": 1, "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
             "inputArtifacts": [{{"name": "src"}}], "outputArtifacts": [{{"name": "bin"}}]}},
            {{"name": "B", "runOrder": 1, "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}}}]}},
        {{"name": "Deploy", {deploy_extra} "actions": [{{"name": "D", "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}},
            "inputArtifacts": [{{"name": "bin"}}]}}]}}
    ]}}}}"##
    ))
}

fn fail() -> ActionResult {
    ActionResult::Failed { message: "boom".into() }
}

fn status_of(engine: &mut Engine, id: &str) -> Execution {
    engine
        .take_dirty()
        .into_iter()
        .find(|e| e.id.0 == id)
        .map(Arc::unwrap_or_clone)
        .or_else(|| engine.execution(&ExecutionId(id.into())).cloned())
        .unwrap()
}

#[test]
fn before_entry_skips_or_fails_on_a_variable_check() {
    let check = |result: &str, value: &str| {
        format!(
            r##""beforeEntry": {{"conditions": [{{"result": "{result}", "rules": [{{"name": "IsProd",
                "ruleTypeId": {{"category": "Rule", "owner": "AWS", "provider": "VariableCheck", "version": "1"}},
                "configuration": {{"Variable": "#{{variables.ENV}}", "Value": "{value}", "Operator": "EQ"}}}}]}}]}},"##
        )
    };
    // ENV is staging: the Deploy check fails; SKIP goes on to the end.
    let mut engine = Engine::new();
    start(&mut engine, conditional("", &check("SKIP", "prod")), "skip");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    for d in drain(&mut engine) {
        finish(&mut engine, &d, ok(&[("bin", "b")], &[]));
    }
    assert!(drain(&mut engine).is_empty(), "Deploy's action never runs");
    let e = status_of(&mut engine, "skip");
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(e.stages[2].status, Some(StageStatus::Skipped));
    assert!(e.stages[2].rules[0].message.as_deref().unwrap().contains("\"staging\""), "{:?}", e.stages[2].rules);

    // FAIL fails the execution, naming the rule; a passing check lets it in.
    let mut engine = Engine::new();
    start(&mut engine, conditional("", &check("FAIL", "prod")), "fail");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    for d in drain(&mut engine) {
        finish(&mut engine, &d, ok(&[("bin", "b")], &[]));
    }
    let e = status_of(&mut engine, "fail");
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert!(e.status_summary.as_deref().unwrap().contains("beforeEntry condition failed: rule \"IsProd\""), "{e:?}");

    let mut engine = Engine::new();
    start(&mut engine, conditional("", &check("FAIL", "staging")), "pass");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    for d in drain(&mut engine) {
        finish(&mut engine, &d, ok(&[("bin", "b")], &[]));
    }
    assert_eq!(drain(&mut engine).iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["D"]);
}

#[test]
fn on_failure_retries_once_then_fails() {
    let retry = r#""onFailure": {"result": "RETRY", "retryConfiguration": {"retryMode": "FAILED_ACTIONS"}},"#;
    let mut engine = Engine::new();
    start(&mut engine, conditional(retry, ""), "r");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d")], &[]));
    let build = drain(&mut engine);
    let (a, b) = (&build[0], &build[1]);
    finish(&mut engine, a, fail());
    finish(&mut engine, b, ok(&[], &[]));
    // Only the failed action runs again, as attempt 2.
    let again = drain(&mut engine);
    assert_eq!(again.iter().map(|d| (d.action.as_str(), d.attempt)).collect::<Vec<_>>(), [("A", 2)]);
    finish(&mut engine, &again[0], fail());
    assert!(drain(&mut engine).is_empty(), "retried once only");
    let e = status_of(&mut engine, "r");
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert!(e.stages[1].auto_retried);
}

#[test]
fn a_commands_rule_runs_on_an_agent_and_on_success_rollback_asks_for_a_rollback() {
    let smoke = r#""onSuccess": {"conditions": [{"result": "ROLLBACK", "rules": [{"name": "Smoke",
        "ruleTypeId": {"category": "Rule", "owner": "AWS", "provider": "Commands", "version": "1"},
        "commands": ["./check"], "inputArtifacts": [{"name": "bin"}]}]}]},"#;
    let def = conditional("", smoke);
    let mut engine = Engine::new();
    // A first execution succeeds all the way (its smoke rule passes).
    start(&mut engine, def.clone(), "good");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d-good")], &[]));
    for d in drain(&mut engine) {
        finish(&mut engine, &d, ok(&[("bin", "b-good")], &[]));
    }
    let deploy = drain(&mut engine);
    finish(&mut engine, &deploy[0], ok(&[], &[]));
    let rule = drain(&mut engine);
    assert_eq!(rule.len(), 1);
    assert_eq!((rule[0].action.as_str(), rule[0].provider.as_str()), ("rule:Smoke", "shell"));
    assert_eq!(rule[0].inputs, vec![("bin".to_string(), ArtifactRef { digest: "b-good".into(), size: 1 })]);
    finish(&mut engine, &rule[0], ok(&[], &[]));
    let good = status_of(&mut engine, "good");
    assert_eq!(good.status, ExecutionStatus::Succeeded);

    // The second's smoke rule fails: it ends Failed and asks for a rollback.
    start(&mut engine, def.clone(), "bad");
    let src = drain(&mut engine);
    finish(&mut engine, &src[0], ok(&[("src", "d-bad")], &[]));
    for d in drain(&mut engine) {
        finish(&mut engine, &d, ok(&[("bin", "b-bad")], &[]));
    }
    let deploy = drain(&mut engine);
    finish(&mut engine, &deploy[0], ok(&[], &[]));
    let rule = drain(&mut engine);
    finish(&mut engine, &rule[0], fail());
    let bad = status_of(&mut engine, "bad");
    assert_eq!(bad.status, ExecutionStatus::Failed);
    assert!(bad.status_summary.as_deref().unwrap().contains("rolling back"), "{bad:?}");
    let requests = engine.take_rollbacks();
    assert_eq!(
        requests,
        vec![RollbackRequest { pipeline: "cond".into(), stage: "Deploy".into(), failed: ExecutionId("bad".into()) }]
    );

    // The rollback runs Deploy again with the good execution's artifacts, and only Deploy.
    rollback(&mut engine, 9, "rb", def.clone(), &good, Trigger::new("AutomatedRollback", "x")).unwrap();
    let deploy = drain(&mut engine);
    assert_eq!(deploy.iter().map(|d| d.action.as_str()).collect::<Vec<_>>(), ["D"]);
    assert_eq!(deploy[0].inputs, vec![("bin".to_string(), ArtifactRef { digest: "b-good".into(), size: 1 })]);
    finish(&mut engine, &deploy[0], ok(&[], &[]));
    let rule = drain(&mut engine);
    finish(&mut engine, &rule[0], ok(&[], &[]));
    let rb = status_of(&mut engine, "rb");
    assert_eq!(rb.status, ExecutionStatus::Succeeded);
    assert_eq!(rb.rollback.as_ref().unwrap().target, ExecutionId("good".into()));
    assert!(rollback(&mut engine, 10, "x", def, &bad, Trigger::new("RollbackStage", "x")).is_err());
}

fn lose(engine: &mut Engine, d: &Dispatch, agent: &str) {
    feed(engine, 2, Event::ActionAssigned { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, agent: agent.into() });
    feed(
        engine,
        3,
        Event::ActionLost { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, reason: format!("agent {agent} lost") },
    );
}

fn build_action(engine: &Engine, id: &str) -> ActionRun {
    engine.execution(&ExecutionId(id.into())).unwrap().stages[1].actions[0].clone()
}

#[test]
fn a_retryable_lost_action_runs_again_as_a_new_attempt_avoiding_the_lost_agent() {
    let mut engine = Engine::new();
    start(&mut engine, two_stage(r#", "retryOnAgentLost": true"#), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[]));
    let first = drain(&mut engine).remove(0);
    lose(&mut engine, &first, "ag-1");
    let notices = engine.take_notices();
    assert!(notices.iter().any(|n| n.status == "Lost" && n.message.as_deref() == Some("agent ag-1 lost")), "{notices:?}");
    let second = drain(&mut engine).remove(0);
    assert_eq!((second.attempt, second.lease_epoch), (first.attempt + 1, first.lease_epoch + 1));
    assert_ne!(second.job_id, first.job_id, "a new attempt is a new job");
    assert_eq!(second.lost_on, [AgentId::from("ag-1")]);
    assert_eq!(second.assigned, None);
    // The lost attempt's late result changes nothing.
    finish(&mut engine, &first, ActionResult::Failed { message: "late".into() });
    assert_eq!(build_action(&engine, "e1").status, Some(ActionStatus::InProgress));
    finish(&mut engine, &second, ok(&[], &[]));
    let done = engine.take_dirty().into_iter().find(|e| e.id.0 == "e1").unwrap();
    assert_eq!(done.status, ExecutionStatus::Succeeded);
    assert_eq!(done.stages[1].actions[0].lost_on, ["ag-1"]);
}

#[test]
fn a_lost_action_that_does_not_retry_fails_the_execution_with_the_reason() {
    let mut engine = Engine::new();
    start(&mut engine, two_stage(""), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[]));
    let first = drain(&mut engine).remove(0);
    lose(&mut engine, &first, "ag-1");
    assert!(drain(&mut engine).is_empty(), "not run again");
    let done = engine.take_dirty().into_iter().find(|e| e.id.0 == "e1").unwrap();
    assert_eq!(done.status, ExecutionStatus::Failed);
    let action = &done.stages[1].actions[0];
    assert_eq!(action.status, Some(ActionStatus::Lost));
    let summary = done.status_summary.clone().unwrap();
    assert!(summary.contains("action \"B\": agent ag-1 lost; not retried"), "{summary}");
}

#[test]
fn lost_retries_are_bounded() {
    let mut engine = Engine::new();
    engine.set_max_lost_retries(2);
    start(&mut engine, two_stage(r#", "retryOnAgentLost": true"#), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[]));
    for agent in ["ag-1", "ag-2"] {
        let d = drain(&mut engine).remove(0);
        lose(&mut engine, &d, agent);
    }
    let third = drain(&mut engine).remove(0);
    assert_eq!(third.attempt, 3);
    assert_eq!(third.lost_on, [AgentId::from("ag-1"), AgentId::from("ag-2")]);
    lose(&mut engine, &third, "ag-3");
    assert!(drain(&mut engine).is_empty(), "the third loss is final");
    let done = engine.take_dirty().into_iter().find(|e| e.id.0 == "e1").unwrap();
    assert_eq!(done.status, ExecutionStatus::Failed);
    let summary = done.status_summary.clone().unwrap();
    assert!(summary.contains("agent ag-3 lost; not retried: lost 3 times, the limit is 2 retries"), "{summary}");
}

#[test]
fn a_lost_action_of_a_stopping_execution_is_not_run_again() {
    let mut engine = Engine::new();
    start(&mut engine, two_stage(r#", "retryOnAgentLost": true"#), "e1");
    let d = drain(&mut engine);
    finish(&mut engine, &d[0], ok(&[("src", "aa")], &[]));
    let first = drain(&mut engine).remove(0);
    feed(&mut engine, 2, Event::Stop { id: ExecutionId("e1".into()), mode: StopMode::Wait, reason: "enough".into() });
    lose(&mut engine, &first, "ag-1");
    assert!(drain(&mut engine).is_empty());
    let done = engine.take_dirty().into_iter().find(|e| e.id.0 == "e1").unwrap();
    assert_eq!(done.status, ExecutionStatus::Stopped);
}

#[test]
fn an_assignment_survives_a_restart_and_names_the_agent_to_wait_for() {
    let mut engine = Engine::new();
    start(&mut engine, two_stage(""), "e1");
    let d = drain(&mut engine).remove(0);
    assert_eq!(d.assigned, None);
    feed(
        &mut engine,
        1,
        Event::ActionAssigned { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, agent: "ag-7".into() },
    );
    let stored = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
    let mut restarted = Engine::new();
    restore(&mut restarted, 5, two_stage(""), stored.clone());
    let again = drain(&mut restarted).remove(0);
    assert_eq!((again.job_id.as_str(), again.assigned.as_ref().map(AgentId::as_str)), (d.job_id.as_str(), Some("ag-7")));
    assert!(!again.started, "assigned, not known to have started");
    assert_eq!(again.lease_epoch, d.lease_epoch + 1);

    // Once the agent says it started, a restart knows that too.
    feed(
        &mut engine,
        2,
        Event::ActionStarted { job_id: d.job_id.clone(), lease_epoch: d.lease_epoch, agent: "ag-7".into() },
    );
    let stored = Arc::unwrap_or_clone(engine.take_dirty().remove(0));
    let mut restarted = Engine::new();
    restore(&mut restarted, 5, two_stage(""), stored);
    assert!(drain(&mut restarted).remove(0).started);
}

// The console's attempts (issue 16, pages).
#[test]
fn a_job_id_says_which_attempt_of_which_action_it_was() {
    let e = ExecutionId("6c1e-4b.x".into());
    let id = super::job_id(&e, 2, 0, 3);
    assert_eq!(super::job_place("6c1e-4b.x", &id), Some((2, 0, 3)));
    assert_eq!(super::job_place("other", &id), None);
    for bad in ["6c1e-4b.x.2.0", "6c1e-4b.x.2.0.3.4", "6c1e-4b.x.a.0.3", "6c1e-4b.x2.0.3", ""] {
        assert_eq!(super::job_place("6c1e-4b.x", bad), None, "{bad}");
    }
}

#[test]
fn the_decider_check_is_the_engines_own_and_pure() {
    let id = ExecutionId("e-1".into());
    let at = ApprovalAt { id: &id, pipeline: "web", version: 3, stage: "Gate", action: "Release" };
    let approval = ApprovalState {
        required: 2,
        approvers: "user:ann,team:release".into(),
        decisions: vec![ApprovalDecision { by: "dee".into(), approved: true, comment: String::new(), at: 0 }],
    };
    let mut trigger = Trigger::new("StartPipelineExecution", "");
    trigger.started_by = Some("sam".into());
    trigger.version_author = Some("val".into());
    let team = vec!["team:release".to_string()];
    let check = |user: &str, member_of: &[String], decision| {
        decider_refusal(&at, &approval, &trigger, &approvers::Decider { user, member_of }, decision)
    };
    assert!(check("ann", &[], Decision::Approved).is_none());
    assert!(check("dee", &team, Decision::Rejected).is_some_and(|r| matches!(r, Refusal::AlreadyDecided { .. })));
    assert!(check("vic", &[], Decision::Rejected).is_some_and(|r| matches!(r, Refusal::NotAnApprover { .. })));
    // The starter and the author may reject, not approve.
    assert!(check("sam", &team, Decision::Approved).is_some_and(|r| matches!(r, Refusal::StarterMayNotApprove { .. })));
    assert!(check("sam", &team, Decision::Rejected).is_none());
    assert!(check("val", &team, Decision::Approved).is_some_and(|r| matches!(r, Refusal::AuthorMayNotApprove { .. })));
}
