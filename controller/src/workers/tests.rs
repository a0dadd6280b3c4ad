use super::*;
use crate::engine::ExecutionId;
use crate::ops::{ExecutionDetails, FailureDetails, PutJobSuccessResult};

fn declaration() -> CreateCustomActionType {
    serde_json::from_value(serde_json::json!({
        "category": "Build", "provider": "Acme", "version": "1",
        "settings": {"executionUrlTemplate": "https://ci.example/{ExternalExecutionId}"},
        "configurationProperties": [
            {"name": "ProjectName", "required": true, "key": true, "secret": false, "queryable": true},
            {"name": "Mode", "required": false, "key": false, "secret": false}
        ],
        "inputArtifactDetails": {"minimumCount": 0, "maximumCount": 1},
        "outputArtifactDetails": {"minimumCount": 0, "maximumCount": 1}
    }))
    .unwrap()
}

fn workers() -> Workers {
    let mut w = Workers::new(b"test key", 60_000);
    w.restore_type(w.create_type(declaration(), false, 1).unwrap());
    w
}

fn dispatch(job: &str, project: &str, outputs: &[&str]) -> Dispatch {
    Dispatch {
        job_id: job.into(),
        lease_epoch: 1,
        execution_id: ExecutionId("e1".into()),
        pipeline: "p".into(),
        stage: "Build".into(),
        action: job.into(),
        attempt: 1,
        owner: "Custom".into(),
        provider: "Acme".into(),
        provider_version: "1".into(),
        configuration: vec![("ProjectName".into(), project.into())],
        variables: vec![],
        inputs: vec![("src".into(), ArtifactRef { digest: "d".repeat(64), size: 3 })],
        outputs: outputs.iter().map(|o| (o.to_string(), vec![])).collect(),
        capabilities: Default::default(),
        agent_labels: Default::default(),
        timeout_ms: 0,
        assigned: None,
        started: false,
        lost_on: vec![],
    }
}

fn queue(w: &mut Workers, d: &Dispatch, id: &str, now: u64) -> WorkerJob {
    let job = w.job_for(d, "Build", id.into(), format!("ASIA{id}"), now).unwrap();
    w.put_job(job.clone());
    job
}

fn type_id() -> ActionTypeId {
    ActionTypeId { category: "Build".into(), owner: "Custom".into(), provider: "Acme".into(), version: "1".into() }
}

fn query(project: &str) -> BTreeMap<String, String> {
    [("ProjectName".to_string(), project.to_string())].into()
}

#[test]
fn a_declaration_is_checked_and_a_deleted_version_cannot_come_back() {
    let mut w = workers();
    let again = w.create_type(declaration(), false, 2).unwrap_err();
    assert!(again.diagnostics().iter().any(|d| d.contains("already exists")), "{again:?}");
    let deleted = w.delete_type("Build", "Acme", "1", 3).unwrap();
    w.restore_type(deleted);
    assert!(w.type_of("Acme", "1").is_none());
    let recreated = w.create_type(declaration(), false, 4).unwrap_err();
    assert!(recreated.diagnostics().iter().any(|d| d.contains("cannot be created again")), "{recreated:?}");
    let next = CreateCustomActionType { version: "2".into(), ..declaration() };
    assert!(w.create_type(next, false, 5).is_ok());
    // Every problem at once; a plugin's name is not taken over.
    let mut bad = declaration();
    bad.version = "2".into();
    bad.category = "Nope".into();
    bad.output_artifact_details.maximum_count = 6;
    bad.configuration_properties[1].queryable = true;
    let err = w.create_type(bad, true, 6).unwrap_err();
    let diagnostics = err.diagnostics().join("\n");
    for expected in
        ["category must be", "outputArtifactDetails", "must be required", "at most one", "a plugin is registered"]
    {
        assert!(diagnostics.contains(expected), "{expected}: {diagnostics}");
    }
    assert!(matches!(w.delete_type("Build", "Acme", "9", 7), Err(OpError::ActionTypeNotFound(_))));
}

#[test]
fn polls_match_the_queryable_property_and_hand_a_job_out_once() {
    let mut w = workers();
    queue(&mut w, &dispatch("a", "web", &[]), "1", 10);
    queue(&mut w, &dispatch("b", "api", &[]), "2", 11);
    let mut n = 0;
    let mut nonce = || {
        n += 1;
        format!("n{n}")
    };
    let polled = w.poll(&type_id(), Some(5), &query("api"), "bot", 20, &mut nonce).unwrap();
    assert_eq!(polled.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["2"]);
    w.put_job(polled[0].clone());
    assert!(w.poll(&type_id(), Some(5), &query("api"), "bot", 21, &mut nonce).unwrap().is_empty());
    // The queryable property must be named, and only it.
    assert!(matches!(w.poll(&type_id(), None, &BTreeMap::new(), "bot", 22, &mut nonce), Err(OpError::Validation { .. })));
    let unknown = ActionTypeId { provider: "Other".into(), ..type_id() };
    assert!(matches!(w.poll(&unknown, None, &query("web"), "bot", 22, &mut nonce), Err(OpError::ActionTypeNotFound(_))));
    // The nonce decides who acknowledges.
    let job = w.job("2").unwrap().clone();
    assert!(matches!(w.acknowledge(&job, "n9", 23), Err(OpError::InvalidNonce(_))));
    let acked = w.acknowledge(&job, "n1", 23).unwrap().unwrap();
    assert_eq!(acked.status, JobStatus::InProgress);
}

#[test]
fn a_continuation_queues_a_new_job_and_success_needs_every_output() {
    let mut w = workers();
    let job = queue(&mut w, &dispatch("a", "web", &["out"]), "1", 10);
    let running = w.poll(&type_id(), None, &query("web"), "bot", 20, || "n".into()).unwrap().remove(0);
    w.put_job(running.clone());
    let next = || ("2".to_string(), "ASIA2".to_string());
    let op = PutJobSuccessResult { job_id: "1".into(), continuation_token: Some("step-2".into()), ..Default::default() };
    let uploaded =
        w.record_output(&running, &job.output_key("out"), ArtifactRef { digest: "e".repeat(64), size: 9 }).unwrap();
    w.put_job(uploaded.clone());
    let (ended, outcome) = w.succeed(&uploaded, &op, 30, next).unwrap();
    assert_eq!(ended.status, JobStatus::Succeeded);
    let Outcome::Continue(second) = outcome else { panic!("{outcome:?}") };
    assert_eq!((second.id.as_str(), second.continuation_token.as_deref()), ("2", Some("step-2")));
    assert_eq!(second.status, JobStatus::Queued);
    assert!(second.uploaded.contains_key("out"), "uploads carry on to the continuation");
    w.put_job(ended.clone());
    w.put_job(*second.clone());
    // An ended job takes no result.
    assert!(matches!(w.succeed(&ended, &op, 31, next), Err(OpError::InvalidJobState(_))));
    // Not yet polled: no result either.
    assert!(matches!(w.succeed(&second, &op, 31, next), Err(OpError::InvalidJobState(_))));
    let polled = w.poll(&type_id(), None, &query("web"), "bot", 40, || "m".into()).unwrap().remove(0);
    let done = PutJobSuccessResult {
        job_id: "2".into(),
        output_variables: [("Version".to_string(), "1.2.3".to_string())].into(),
        execution_details: Some(ExecutionDetails {
            summary: Some("built".into()),
            external_execution_id: Some("run-7".into()),
            percent_complete: None,
        }),
        ..Default::default()
    };
    let (_, outcome) = w.succeed(&polled, &done, 50, next).unwrap();
    let Outcome::Succeeded { summary, output_variables, external_url, outputs } = outcome else { panic!("{outcome:?}") };
    assert_eq!(summary, "built");
    assert_eq!(output_variables["Version"], "1.2.3");
    assert_eq!(external_url.as_deref(), Some("https://ci.example/run-7"));
    assert_eq!(outputs[0].0, "out");

    // Without the output uploaded, success is refused and the job goes on.
    let mut w = workers();
    queue(&mut w, &dispatch("c", "web", &["out"]), "3", 10);
    let polled = w.poll(&type_id(), None, &query("web"), "bot", 20, || "n".into()).unwrap().remove(0);
    let err = w.succeed(&polled, &PutJobSuccessResult { job_id: "3".into(), ..Default::default() }, 30, next).unwrap_err();
    assert!(err.to_string().contains("not uploaded yet"), "{err}");
    let failure = FailureDetails { kind: "JobFailed".into(), message: "tests failed".into(), external_execution_id: None };
    let (ended, outcome) = w.fail(&polled, &failure, 31).unwrap();
    assert_eq!(ended.status, JobStatus::Failed);
    assert_eq!(outcome, Outcome::Failed { message: "tests failed".into() });
}

#[test]
fn jobs_time_out_from_their_poll_and_credentials_are_per_job() {
    let mut w = workers();
    let a = queue(&mut w, &dispatch("a", "web", &[]), "1", 10);
    let b = queue(&mut w, &dispatch("b", "web", &["out"]), "2", 10);
    // Queued jobs wait for the action's own timeout, not the job's.
    assert_eq!(w.next_deadline(), None);
    assert!(w.expired(1_000_000).is_empty());
    for job in w.poll(&type_id(), Some(2), &query("web"), "bot", 100, || "n".into()).unwrap() {
        w.put_job(job);
    }
    assert_eq!(w.next_deadline(), Some(100 + 60_000));
    assert!(w.expired(60_099).is_empty());
    let expired = w.expired(60_100);
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|j| j.status == JobStatus::TimedOut));
    assert!(expired[0].message.as_deref().unwrap().contains("not acknowledged within 1 min"), "{expired:?}");
    let (ca, cb) = (w.credentials(&a), w.credentials(&b));
    assert_ne!(ca.secret_access_key, cb.secret_access_key);
    assert_ne!(ca.session_token, cb.session_token);
    assert_eq!(ca.secret_access_key.len(), 40);
    // Another key derives other secrets; the same key the same ones.
    assert_eq!(workers().credentials(&a).secret_access_key, ca.secret_access_key);
    assert_ne!(Workers::new(b"other", 1).credentials(&a).secret_access_key, ca.secret_access_key);
    // A job may write only its own outputs.
    let running = w.job("1").unwrap().clone();
    let err = w.record_output(&running, &b.output_key("out"), ArtifactRef { digest: "e".repeat(64), size: 1 }).unwrap_err();
    assert!(matches!(err, OpError::AccessDenied(_)), "{err}");
}

#[test]
fn a_restart_hands_the_same_attempt_out_again_and_the_running_job_is_kept() {
    let mut w = workers();
    let d = dispatch("a", "web", &[]);
    queue(&mut w, &d, "1", 10);
    // The same attempt under the same epoch: no second job.
    assert!(w.job_for(&d, "Build", "2".into(), "ASIA2".into(), 11).is_none());
    assert!(w.adopt(&d.job_id, 1).is_none());
    // Under the epoch a restart gives it, the job moves along.
    let moved = w.adopt(&d.job_id, 2).unwrap();
    assert_eq!((moved.id.as_str(), moved.lease_epoch), ("1", 2));
    assert!(w.adopt(&"other".into(), 2).is_none());
}
