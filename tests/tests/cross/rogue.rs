//! An enrolled agent turned hostile, against a real controller: a real
//! QUIC client holding a valid certificate (`sluice_tests::rogue`) sends
//! crafted frames, and every one is refused and logged while a real agent
//! keeps running a real pipeline through the same controller. Also: seeded
//! arbitrary messages from an enrolled agent leave the controller serving,
//! and a panic in the driver ends the controller's process. Build the
//! binaries first: `cargo build --workspace --bins`.

use serde_json::Value;
use sluice_protocol::{FromAgent, JobResult, PolledRevision, ProducedArtifact, StreamReply, StreamRequest, ToAgent};
use sluice_tests::rogue::{self, Claims, Rogue, Window};
use sluice_tests::{Cluster, WAIT, git_pipeline, make_repo, output_text, wait_until};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Source (git) and Build (shell) actions, both for agents labelled by
/// their operator `role=build`; no polling.
fn real_pipeline(name: &str, repo: &Path) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout", "pollIntervalSeconds": 0,
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["git"]}}, "agentLabels": {{"role": "build"}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Work",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "cat README"}}, "inputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["sh"]}}, "agentLabels": {{"role": "build"}}}}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// One git source action for agents with `labels`, polled every
/// `interval` seconds, and a stage after it.
fn source_pipeline(name: &str, repo: &Path, labels: &str, interval: u32) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout", "pollIntervalSeconds": {interval},
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["git"]}}, "agentLabels": {labels}}}]}},
  {{"name": "Approve", "actions": [{{"name": "Ok",
     "actionTypeId": {{"category": "Approval", "owner": "Sluice", "provider": "manual", "version": "1"}}}}]}}]}}}}"#,
        repo = repo.display()
    )
}

/// A source and a shell action that waits for `marker`, for any agent:
/// whoever holds it keeps it running until the marker appears.
fn busy_pipeline(name: &str, repo: &Path, marker: &Path) -> String {
    format!(
        r#"{{"pipeline": {{"name": "{name}", "stages": [
  {{"name": "Source", "actions": [{{"name": "Checkout", "pollIntervalSeconds": 0,
     "actionTypeId": {{"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"}},
     "configuration": {{"Url": "{repo}"}}, "outputArtifacts": [{{"name": "src"}}],
     "capabilities": {{"exec": ["git"]}}}}]}},
  {{"name": "Build", "actions": [{{"name": "Wait",
     "actionTypeId": {{"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"}},
     "configuration": {{"Commands": "while [ ! -e {marker} ]; do sleep 0.1; done"}},
     "inputArtifacts": [{{"name": "src"}}], "capabilities": {{"exec": ["sh"]}}}}]}}]}}}}"#,
        repo = repo.display(),
        marker = marker.display()
    )
}

/// Runs the real pipeline once more and asserts it succeeds.
fn real_run_succeeds(cluster: &Cluster) -> Value {
    let out = cluster.sluice(&["pipeline", "start", "real", "--output", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["pipelineExecutionId"].as_str().unwrap().to_string();
    let e = cluster.execution_end("real", &id, WAIT);
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e:#}\n{}", cluster.controller_log());
    e
}

fn agent(cluster: &Cluster, id: &str) -> Value {
    cluster.agents_json().unwrap().into_iter().find(|a| a["id"] == id).unwrap_or_else(|| panic!("no agent {id}"))
}

fn log_has(cluster: &Cluster, what: &str) {
    wait_until(&format!("the controller to log {what:?}"), WAIT, || cluster.controller_log().contains(what).then_some(()))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
}

/// How long a rogue listens for a message that must not come, after the
/// controller's step that would have sent it: the message's way over
/// loopback, with room for a loaded machine.
const NOTHING_MORE: Duration = Duration::from_secs(1);

fn refusal(reply: StreamReply) -> String {
    match reply {
        StreamReply::Error { message } => message,
        StreamReply::Ok { size } => panic!("the controller granted it ({size} bytes)"),
    }
}

/// A result's acknowledgement reaches the agent with the job that the
/// same commit handed out next, first and in one write (issue 19): sent
/// apart, they often left as two packets, which the agent's QUIC answered
/// with an ACK of its own, which woke the controller again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_acknowledgement_goes_out_before_the_next_job() {
    let cluster = tokio::task::block_in_place(|| Cluster::new().start()).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    let token = tokio::task::block_in_place(|| cluster.join_token(Some(1))).unwrap();
    let ca = std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt")).unwrap();
    let fleet = cluster.fleet.parse().unwrap();
    let endpoint = rogue::endpoint().unwrap();
    let enrolled = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let claims = Claims { labels: BTreeMap::new(), running: vec![], slots: 1 };
    let mut rogue = Rogue::connect(&endpoint, fleet, &enrolled, claims, Window::Normal).await.unwrap();
    let _alive = rogue.keep_alive();
    let noop = r#"{"name": "Build", "actions": [{"name": "Noop",
     "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]}"#;
    let id = tokio::task::block_in_place(|| cluster.create_pipeline("acked", &git_pipeline("acked", "", &repo, noop)));
    let job = |m: ToAgent| match m {
        ToAgent::Job(job) => Some(job),
        _ => None,
    };
    let source = rogue.expect(WAIT, job).await.expect("the source job");
    // The source's output, uploaded while the rogue holds its job.
    let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".to_string();
    let put = StreamRequest::PutArtifact { digest: hello.clone(), size: 5, offset: 0 };
    let stored = rogue.transfer(&put, b"hello").await.unwrap();
    assert!(matches!(stored, StreamReply::Ok { size: 5 }), "{stored:?}");
    let (job_id, lease_epoch) = (source.job_id.clone(), source.lease_epoch);
    rogue.send(&FromAgent::JobStarted { job_id: job_id.clone(), lease_epoch }).await.unwrap();
    let result = JobResult::Succeeded {
        summary: "checked out".into(),
        output_variables: BTreeMap::new(),
        external_url: None,
        outputs: vec![ProducedArtifact { name: "src".into(), digest: hello, size: 5 }],
    };
    rogue.send(&FromAgent::JobFinished { job_id: job_id.clone(), lease_epoch, result }).await.unwrap();
    // The next acknowledgement and the next job, in the order they came
    // (heartbeats' acknowledgements and polls aside).
    let mut next = Vec::new();
    while next.len() < 2 {
        let pick = |m: ToAgent| matches!(m, ToAgent::ResultAck { .. } | ToAgent::Job(_)).then_some(m);
        let message = rogue.expect(WAIT, pick).await;
        next.push(message.unwrap_or_else(|| panic!("after {next:?}, nothing\n{}", cluster.controller_log())));
    }
    assert!(matches!(&next[0], ToAgent::ResultAck { job_id: acked } if *acked == job_id), "{next:#?}");
    assert!(matches!(&next[1], ToAgent::Job(job) if job.execution_id == id && job.action == "Noop"), "{next:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_agent_gets_nothing_it_was_not_given_while_a_real_one_works() {
    let mut cluster = tokio::task::block_in_place(|| {
        Cluster::new().controller_args(&["--agent-upload-quota", "64KiB"]).agent(&["role=build"]).start()
    })
    .unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    let (src, src_size, shell_digest, waiting) = tokio::task::block_in_place(|| {
        let id = cluster.create_pipeline("real", &real_pipeline("real", &repo));
        let e = cluster.execution_end("real", &id, WAIT);
        assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e:#}");
        let src = e["stages"][0]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string();
        let src_size = e["stages"][0]["actions"][0]["outputArtifacts"][0]["size"].as_u64().unwrap();
        let plugins = cluster.sluice_json(&["plugin", "list"]).unwrap();
        let shell = plugins["plugins"].as_array().unwrap().iter().find(|p| p["provider"] == "shell@1").unwrap();
        // An action no agent may take: it waits, unassigned.
        let waiting = cluster.create_pipeline("waiting", &source_pipeline("waiting", &repo, r#"{"pool": "nowhere"}"#, 0));
        (src, src_size, shell["digest"].as_str().unwrap().to_string(), waiting)
    });
    // A job any agent may take (the rogue's labels match it), running on
    // the real agent.
    let marker = cluster.dir.path().join("release-busy");
    let (busy, real_agent) = tokio::task::block_in_place(|| {
        let busy = cluster.create_pipeline("busy", &busy_pipeline("busy", &repo, &marker));
        let agent = wait_until("the busy action to run", WAIT, || {
            let e = cluster.sluice_json(&["execution", "get", "busy", &busy]).ok()?;
            let action = &e["stages"][1]["actions"][0];
            (action["status"] == "InProgress").then(|| action["agent"].as_str().map(str::to_string)).flatten()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.controller_log()));
        (busy, agent)
    });

    // Enrolled with a token that gives no labels and allows none.
    let token = tokio::task::block_in_place(|| cluster.join_token(Some(3))).unwrap();
    let ca = std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt")).unwrap();
    let fleet = cluster.fleet.parse().unwrap();
    let endpoint = rogue::endpoint().unwrap();
    let enrolled = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    // Its hello lists the waiting action's job (job ids follow from the
    // execution id) and the job the real agent runs, whose labels it
    // matches, claims the label the real pipeline asks for and one nobody
    // gave, and a thousand slots.
    let running: Vec<String> = (0..3)
        .map(|attempt| format!("{waiting}.0.0.{attempt}"))
        .chain((0..3).map(|attempt| format!("{busy}.1.0.{attempt}")))
        .collect();
    let claims = Claims {
        labels: [("role", "build"), ("env", "prod"), ("os", "linux")].map(|(k, v)| (k.to_string(), v.to_string())).into(),
        running,
        slots: 1000,
    };
    let mut rogue = Rogue::connect(&endpoint, fleet, &enrolled, claims, Window::Normal).await.unwrap();
    let _alive = rogue.keep_alive();
    // A job would be handed out in the step that welcomes the rogue (the
    // one that logs its hello): wait for that step, then give a job on its
    // way a second to arrive. Proving that none comes needs a bounded wait.
    tokio::task::block_in_place(|| log_has(&cluster, "the agent lists jobs it does not hold: refused"));
    let got_job = rogue.expect(NOTHING_MORE, |m| matches!(m, ToAgent::Job(_)).then_some(m)).await;
    assert!(got_job.is_none(), "the rogue was handed {got_job:?}");
    tokio::task::block_in_place(|| {
        log_has(&cluster, "the agent lists jobs it does not hold: refused");
        log_has(&cluster, "labels the agent claims for itself that its join token does not allow: ignored");
        log_has(&cluster, "the agent asks for more slots than --max-agent-slots: capped");
        let me = agent(&cluster, &enrolled.agent_id);
        assert_eq!(me["labels"].get("role"), None, "{me}");
        assert_eq!(me["labels"].get("env"), None, "{me}");
        assert_eq!(me["labels"]["os"], "linux", "observed facts count: {me}");
        assert_eq!(me["slots"], 64, "{me}");
        let e = cluster.sluice_json(&["execution", "get", "waiting", &waiting]).unwrap();
        assert_eq!(e["stages"][0]["actions"][0]["agent"], Value::Null, "{e:#}");
        let e = cluster.sluice_json(&["execution", "get", "busy", &busy]).unwrap();
        assert_eq!(e["stages"][1]["actions"][0]["agent"].as_str(), Some(real_agent.as_str()), "{e:#}");
        std::fs::write(&marker, "").unwrap();
        let e = cluster.execution_end("busy", &busy, WAIT);
        assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e:#}");
    });

    // Transfers it holds no job for.
    let digest = "ab".repeat(32);
    let message =
        refusal(rogue.transfer(&StreamRequest::UploadOffset { digest: digest.clone(), size: 10 }, &[]).await.unwrap());
    assert!(message.contains("holds no job that declares output artifacts"), "{message}");
    let put = StreamRequest::PutArtifact { digest: digest.clone(), size: 10, offset: 0 };
    assert!(refusal(rogue.transfer(&put, b"0123456789").await.unwrap()).contains("holds no job"));
    let fetch = StreamRequest::FetchArtifact { digest: src.clone(), offset: 0 };
    let message = refusal(rogue.transfer(&fetch, &[]).await.unwrap());
    assert!(message.contains("is an input of no job"), "{message}");
    let plugin = StreamRequest::FetchPlugin { digest: shell_digest.clone() };
    let message = refusal(rogue.transfer(&plugin, &[]).await.unwrap());
    assert!(message.contains("belongs to no job or poll"), "{message}");
    tokio::task::block_in_place(|| log_has(&cluster, "transfer refused"));

    // Renewals without end: a few are signed, the rest refused.
    let (renewed, refused) = {
        let (mut renewed, mut refused) = (0, 0);
        for _ in 0..10 {
            let (_, csr_pem) = rogue::key_and_csr().unwrap();
            rogue.send(&FromAgent::RenewCertificate { csr_pem }).await.unwrap();
        }
        while renewed + refused < 10 {
            match rogue
                .expect(WAIT, |m| match m {
                    ToAgent::Renewed { .. } => Some(true),
                    ToAgent::RenewalRefused { reason } => {
                        assert!(reason.contains("asks for renewals too often"), "{reason}");
                        Some(false)
                    }
                    _ => None,
                })
                .await
            {
                Some(true) => renewed += 1,
                Some(false) => refused += 1,
                None => panic!("renewals went unanswered"),
            }
        }
        (renewed, refused)
    };
    assert!(renewed <= 3 && refused >= 7, "{renewed} renewed, {refused} refused");
    tokio::task::block_in_place(|| log_has(&cluster, "certificate renewal refused"));

    // The operator labels the rogue: it now legitimately holds a source
    // job of its own pipeline and answers that pipeline's polls.
    tokio::task::block_in_place(|| {
        let out = cluster.sluice(&["agent", "label", &enrolled.agent_id, "pollee=yes", "spare=1"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = cluster.sluice(&["agent", "label", &enrolled.agent_id, "spare-"]);
        assert!(out.status.success(), "{}", output_text(&out));
        let out = cluster.sluice(&["agent", "label", &enrolled.agent_id, "os=windows"]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        let me = agent(&cluster, &enrolled.agent_id);
        assert_eq!(me["labels"]["pollee"], "yes", "{me}");
        assert_eq!(me["labels"].get("spare"), None, "{me}");
    });
    let polled = tokio::task::block_in_place(|| {
        cluster.create_pipeline("polled", &source_pipeline("polled", &repo, r#"{"pollee": "yes"}"#, 1))
    });
    let job = rogue
        .expect(WAIT, |m| match m {
            ToAgent::Job(job) => Some(job),
            _ => None,
        })
        .await
        .expect("the rogue's own job");
    assert_eq!(job.execution_id, polled);
    // Its job declares an output: uploads now go through, within the quota.
    let message =
        refusal(rogue.transfer(&StreamRequest::UploadOffset { digest: digest.clone(), size: 1 << 20 }, &[]).await.unwrap());
    assert!(message.contains("upload quota is used up"), "{message}");
    // A digest booked small and then sent big is checked again: the quota
    // counts the largest size asked.
    let small = "cd".repeat(32);
    let offset = rogue.transfer(&StreamRequest::UploadOffset { digest: small.clone(), size: 1 }, &[]).await.unwrap();
    assert!(matches!(offset, StreamReply::Ok { size: 0 }), "{offset:?}");
    let big = StreamRequest::PutArtifact { digest: small.clone(), size: 1 << 20, offset: 0 };
    let message = refusal(rogue.transfer(&big, &[0u8; 4096]).await.unwrap());
    assert!(message.contains("upload quota is used up"), "{message}");
    // An upload cut off leaves its bytes in a partial file: they count
    // against the agent until the collector removes them, across jobs.
    let cut = "ef".repeat(32);
    let put = StreamRequest::PutArtifact { digest: cut.clone(), size: 60 << 10, offset: 0 };
    let partial = cluster.data_dir().join("artifacts/tmp").join(format!("{cut}.partial"));
    rogue.transfer_cut(&put, &[7u8; 40 << 10], &partial).await.unwrap();
    tokio::task::block_in_place(|| {
        wait_until("the cut upload's partial file", WAIT, || partial.exists().then_some(())).unwrap();
    });
    // Still nothing of others'.
    assert!(refusal(rogue.transfer(&fetch, &[]).await.unwrap()).contains("is an input of no job"));
    assert!(refusal(rogue.transfer(&plugin, &[]).await.unwrap()).contains("belongs to no job or poll"));

    // Polls answered with a revision made to hurt: non-ASCII (cut at byte
    // 7 it panicked the driver) and option-like.
    for revision in ["abcdefé-non-ascii", "--upload-pack=touch /tmp/sluice-pwned"] {
        let poll_id = rogue
            .expect(WAIT, |m| match m {
                ToAgent::Poll(p) => Some(p.poll_id),
                _ => None,
            })
            .await
            .expect("a poll");
        let result = Ok(PolledRevision { id: revision.into(), summary: "\x1b]0;owned\x07".into(), created: None });
        rogue.send(&FromAgent::PollResult { poll_id, result }).await.unwrap();
    }
    tokio::task::block_in_place(|| {
        log_has(&cluster, "poll answer refused: the revision id \"abcdefé-non-ascii\" is not printable ASCII");
        log_has(&cluster, "starts with '-'");
        let state = cluster.sluice_json(&["pipeline", "state", "polled"]).unwrap();
        let error =
            state["stageStates"][0]["actionStates"][0]["polling"]["lastError"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("invalid revision"), "{state:#}");
        let history = cluster.sluice_json(&["pipeline", "history", "polled"]).unwrap();
        assert_eq!(history["pipelineExecutionSummaries"].as_array().unwrap().len(), 1, "{history:#}");
    });

    // A result naming an output its action never declared fails the action,
    // for that reason.
    let result = JobResult::Succeeded {
        summary: "done".into(),
        output_variables: BTreeMap::new(),
        external_url: None,
        outputs: vec![ProducedArtifact { name: "loot".into(), digest: src.clone(), size: 1 }],
    };
    rogue.send(&FromAgent::JobFinished { job_id: job.job_id.clone(), lease_epoch: job.lease_epoch, result }).await.unwrap();
    tokio::task::block_in_place(|| {
        let e = cluster.execution_end("polled", &polled, WAIT);
        let error = e["stages"][0]["actions"][0]["errorDetails"]["message"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains("the agent's result was refused: output artifact \"loot\" is not one the action declares"),
            "{e:#}"
        );
        log_has(&cluster, "the agent's result was refused");
    });

    // Its next job: the cut upload's bytes still count (60 KiB booked of
    // 64 KiB), though the job that made them is over.
    let again = tokio::task::block_in_place(|| {
        cluster.create_pipeline("again", &source_pipeline("again", &repo, r#"{"pollee": "yes"}"#, 0))
    });
    let job = rogue
        .expect(WAIT, |m| match m {
            ToAgent::Job(job) if job.execution_id == again => Some(job),
            _ => None,
        })
        .await
        .expect("the rogue's next job");
    let message =
        refusal(rogue.transfer(&StreamRequest::UploadOffset { digest: "12".repeat(32), size: 8 << 10 }, &[]).await.unwrap());
    assert!(message.contains("upload quota is used up: 61441 bytes"), "{message}");
    // A result naming an artifact it uploaded for this job, with a size
    // other than the stored blob's, fails the action, for that reason.
    let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".to_string();
    let put = StreamRequest::PutArtifact { digest: hello.clone(), size: 5, offset: 0 };
    let stored = rogue.transfer(&put, b"hello").await.unwrap();
    assert!(matches!(stored, StreamReply::Ok { size: 5 }), "{stored:?}");
    let result = JobResult::Succeeded {
        summary: "done".into(),
        output_variables: BTreeMap::new(),
        external_url: None,
        outputs: vec![ProducedArtifact { name: "src".into(), digest: hello.clone(), size: 6 }],
    };
    rogue.send(&FromAgent::JobFinished { job_id: job.job_id.clone(), lease_epoch: job.lease_epoch, result }).await.unwrap();
    tokio::task::block_in_place(|| {
        let e = cluster.execution_end("again", &again, WAIT);
        let error = e["stages"][0]["actions"][0]["errorDetails"]["message"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(&format!("output artifact \"src\" ({hello}) is not stored with 6 bytes")), "{e:#}");
    });
    // A result naming another pipeline's stored artifact, with its right
    // size, that this agent never uploaded (nor claimed) for the job fails
    // the action, for that reason.
    let fourth = tokio::task::block_in_place(|| {
        cluster.create_pipeline("fourth", &source_pipeline("fourth", &repo, r#"{"pollee": "yes"}"#, 0))
    });
    let job = rogue
        .expect(WAIT, |m| match m {
            ToAgent::Job(job) if job.execution_id == fourth => Some(job),
            _ => None,
        })
        .await
        .expect("the rogue's fourth job");
    let result = JobResult::Succeeded {
        summary: "done".into(),
        output_variables: BTreeMap::new(),
        external_url: None,
        outputs: vec![ProducedArtifact { name: "src".into(), digest: src.clone(), size: src_size }],
    };
    rogue.send(&FromAgent::JobFinished { job_id: job.job_id.clone(), lease_epoch: job.lease_epoch, result }).await.unwrap();
    tokio::task::block_in_place(|| {
        let e = cluster.execution_end("fourth", &fourth, WAIT);
        let error = e["stages"][0]["actions"][0]["errorDetails"]["message"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(&format!("output artifact \"src\" ({src}) was not uploaded by this agent while it held the job")),
            "{e:#}"
        );
    });
    // A result whose external URL is not http(s) fails the action, for
    // that reason.
    let third = tokio::task::block_in_place(|| {
        cluster.create_pipeline("third", &source_pipeline("third", &repo, r#"{"pollee": "yes"}"#, 0))
    });
    let job = rogue
        .expect(WAIT, |m| match m {
            ToAgent::Job(job) if job.execution_id == third => Some(job),
            _ => None,
        })
        .await
        .expect("the rogue's third job");
    let result = JobResult::Succeeded {
        summary: "done".into(),
        output_variables: BTreeMap::new(),
        external_url: Some("javascript:alert(1)".into()),
        outputs: vec![],
    };
    rogue.send(&FromAgent::JobFinished { job_id: job.job_id.clone(), lease_epoch: job.lease_epoch, result }).await.unwrap();
    tokio::task::block_in_place(|| {
        let e = cluster.execution_end("third", &third, WAIT);
        let error = e["stages"][0]["actions"][0]["errorDetails"]["message"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains("the agent's result was refused: the external URL \"javascript:alert(1)\" is not http(s)"),
            "{e:#}"
        );
    });

    // Listing a job it could take by its labels changes nothing either: a
    // drained agent (which may be given back jobs it runs) lists a waiting
    // job of its own pipeline, and gets it only once enabled, as new work.
    let drained = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let work = tokio::task::block_in_place(|| {
        for args in [vec!["agent", "label", &drained.agent_id, "only=drained"], vec!["agent", "drain", &drained.agent_id]] {
            let out = cluster.sluice(&args);
            assert!(out.status.success(), "{}", output_text(&out));
        }
        cluster.create_pipeline("drained", &source_pipeline("drained", &repo, r#"{"only": "drained"}"#, 0))
    });
    let running: Vec<String> = (0..3).map(|attempt| format!("{work}.0.0.{attempt}")).collect();
    let claims = Claims { labels: BTreeMap::new(), running, slots: 1 };
    let mut drained_rogue = Rogue::connect(&endpoint, fleet, &drained, claims, Window::Normal).await.unwrap();
    let _alive_too = drained_rogue.keep_alive();
    // As above: once the controller lists it connected, the step that
    // welcomed it (and would have handed it the job) is over.
    tokio::task::block_in_place(|| {
        wait_until("the drained rogue to be connected", WAIT, || {
            (agent(&cluster, &drained.agent_id)["connected"] == true).then_some(())
        })
        .unwrap()
    });
    let got_job = drained_rogue.expect(NOTHING_MORE, |m| matches!(m, ToAgent::Job(_)).then_some(m)).await;
    assert!(got_job.is_none(), "the drained rogue was handed {got_job:?}");
    tokio::task::block_in_place(|| {
        let out = cluster.sluice(&["agent", "enable", &drained.agent_id]);
        assert!(out.status.success(), "{}", output_text(&out));
    });
    let job = drained_rogue.expect(WAIT, |m| match m {
        ToAgent::Job(job) => Some(job),
        _ => None,
    });
    assert_eq!(job.await.expect("the job, once enabled").execution_id, work);

    // A second rogue that never reads its control stream, flooding
    // heartbeats (each queues an answer): disconnected, memory bounded.
    let mute = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let claims = Claims { labels: BTreeMap::new(), running: vec![], slots: 1 };
    let mute = Rogue::connect(&endpoint, fleet, &mute, claims, Window::Tiny).await.unwrap();
    let flood = async {
        for _ in 0..200_000 {
            if mute.send(&FromAgent::Heartbeat { running: vec![] }).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, flood).await.expect("the flood was never cut off");
    tokio::time::timeout(WAIT, mute.conn.closed()).await.expect("the mute agent stays connected");
    tokio::task::block_in_place(|| log_has(&cluster, "agent does not read its stream"));

    // Through all of it, the real agent kept working.
    tokio::task::block_in_place(|| {
        real_run_succeeds(&cluster);
        assert!(cluster.agent_exit(0).is_none(), "the real agent stopped");
    });
}

/// xorshift64*: a seeded, replayable stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// A string meant to hurt: non-ASCII, controls, option-like, empty,
    /// long, or an id of something that exists.
    fn text(&mut self, known: &[String]) -> String {
        const PIECES: &[&str] = &["é", "😀", "\x1b[2J", "\0", "\n", "-", "--upload-pack=", "a", "0", " ", "\u{202e}", "🦀"];
        match self.below(6) {
            0 if !known.is_empty() => known[self.below(known.len())].clone(),
            1 => String::new(),
            2 => "x".repeat(self.below(200_000)),
            _ => (0..self.below(40)).map(|_| PIECES[self.below(PIECES.len())]).collect(),
        }
    }
    fn message(&mut self, known: &[String]) -> FromAgent {
        match self.below(7) {
            0 => FromAgent::Heartbeat { running: (0..self.below(5)).map(|_| self.text(known)).collect() },
            1 => FromAgent::JobStarted { job_id: self.text(known), lease_epoch: self.next() % 4 },
            2 => FromAgent::Log { job_id: self.text(known), seq: self.next() % 8, text: self.text(known) },
            3 => {
                let result = if self.below(2) == 0 {
                    JobResult::Failed { message: self.text(known), retryable: self.below(2) == 0 }
                } else {
                    JobResult::Succeeded {
                        summary: self.text(known),
                        output_variables: (0..self.below(4)).map(|_| (self.text(known), self.text(known))).collect(),
                        external_url: Some(self.text(known)),
                        outputs: (0..self.below(3))
                            .map(|_| ProducedArtifact {
                                name: self.text(known),
                                digest: self.text(known),
                                size: self.next(),
                            })
                            .collect(),
                    }
                };
                FromAgent::JobFinished { job_id: self.text(known), lease_epoch: self.next() % 4, result }
            }
            4 => FromAgent::RenewCertificate { csr_pem: self.text(known) },
            5 => {
                let result = if self.below(3) == 0 {
                    Err(self.text(known))
                } else {
                    Ok(PolledRevision { id: self.text(known), summary: self.text(known), created: Some(self.next()) })
                };
                FromAgent::PollResult { poll_id: self.text(known), result }
            }
            _ => FromAgent::Hello(sluice_protocol::Hello {
                protocol_version: sluice_protocol::PROTOCOL_VERSION,
                agent_version: self.text(known),
                labels: (0..self.below(4)).map(|_| (self.text(known), self.text(known))).collect(),
                slots: self.next() as u32,
                running: (0..self.below(4)).map(|_| self.text(known)).collect(),
                plugins: vec![self.text(known)],
                instance: self.next(),
            }),
        }
    }
}

/// Seeded arbitrary (well-framed) messages from an enrolled agent: the
/// controller answers its API all along and a real pipeline still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_messages_from_an_enrolled_agent_leave_the_controller_serving() {
    let seed: u64 = std::env::var("SLUICE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1e55);
    let count: usize = std::env::var("SLUICE_FUZZ_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    eprintln!("fuzzing with SLUICE_FUZZ_SEED={seed} SLUICE_FUZZ_MESSAGES={count}");
    let cluster = tokio::task::block_in_place(|| Cluster::new().agent(&["role=build"]).start()).unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    let first = tokio::task::block_in_place(|| {
        let id = cluster.create_pipeline("real", &real_pipeline("real", &repo));
        cluster.execution_end("real", &id, WAIT);
        cluster.create_pipeline("polled", &source_pipeline("polled", &repo, r#"{"role": "nowhere"}"#, 1))
    });
    // Ids that exist, so that some messages reach deep paths.
    let known: Vec<String> = vec![
        format!("{first}.0.0.1"),
        format!("{first}.0.0.0"),
        "ab".repeat(32),
        "CommitId".into(),
        "https://example.com".into(),
        "role".into(),
    ];
    let token = tokio::task::block_in_place(|| cluster.join_token(Some(1))).unwrap();
    let ca = std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt")).unwrap();
    let fleet = cluster.fleet.parse().unwrap();
    let endpoint = rogue::endpoint().unwrap();
    let enrolled = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let claims = Claims { labels: BTreeMap::new(), running: known.clone(), slots: 4 };
    let mut fuzzer = Rogue::connect(&endpoint, fleet, &enrolled, claims, Window::Normal).await.unwrap();
    // The operator gives it the polled source: it holds that pipeline's
    // job and answers its polls, so messages reach the result and poll paths.
    tokio::task::block_in_place(|| {
        let out = cluster.sluice(&["agent", "label", &enrolled.agent_id, "role=nowhere"]);
        assert!(out.status.success(), "{}", output_text(&out));
    });
    let mut known = known;
    let mut rng = Rng(seed | 1);
    // Every poll handed to it is answered with an arbitrary revision; the
    // run lasts until it has answered a few (one a second), whatever count.
    let mut polls_answered = 0;
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 0;
    while n < count || (polls_answered < 5 && std::time::Instant::now() < deadline) {
        n += 1;
        let mut answers = Vec::new();
        while let Ok(message) = fuzzer.inbox.try_recv() {
            match message {
                ToAgent::Job(job) => known.push(job.job_id),
                ToAgent::Poll(poll) => {
                    let result = Ok(PolledRevision { id: rng.text(&[]), summary: rng.text(&known), created: None });
                    answers.push(FromAgent::PollResult { poll_id: poll.poll_id.clone(), result });
                    known.push(poll.poll_id);
                }
                _ => {}
            }
        }
        for answer in answers {
            if sluice_protocol::encode(&answer).is_ok() {
                fuzzer
                    .send(&answer)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: the controller closed the stream: {e:#}"));
                polls_answered += 1;
            }
        }
        if n % 100 == 0 {
            // Pacing, not a wait: lets the controller drain its queue now
            // and then, as a real agent's link would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let message = rng.message(&known);
        if sluice_protocol::encode(&message).is_err() {
            continue; // over the frame limit: no agent can send it
        }
        if let Err(e) = fuzzer.send(&message).await {
            panic!("seed {seed}: message {n} could not be sent, the controller closed the stream: {e:#}");
        }
        if n % 500 == 0 {
            let pid = cluster.controller_pid().unwrap();
            assert!(Path::new(&format!("/proc/{pid}")).exists(), "seed {seed}: the controller exited at message {n}");
        }
    }
    tokio::task::block_in_place(|| {
        let out = cluster.sluice(&["pipeline", "list", "--output", "json"]);
        assert!(out.status.success(), "seed {seed}: the API stopped answering: {}", output_text(&out));
        real_run_succeeds(&cluster);
        assert!(!cluster.controller_log().contains("panicked"), "seed {seed}:\n{}", cluster.controller_log());
    });
    eprintln!("{n} messages sent, {polls_answered} polls answered");
}

/// A panic in the driver ends the controller (exit 70), so that a
/// supervisor restarts it and recovery replays, instead of a process that
/// answers every request with an error. The panic comes from a test hook
/// compiled into debug builds only (no input is known to cause one).
// Fleet (issue 19): idle heartbeats are answered by the connection's own
// task, and the driver reads when each agent was last heard from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_agent_past_its_lease_and_silence_cuts_it_off() {
    let cluster =
        tokio::task::block_in_place(|| Cluster::new().controller_args(&["--lease-timeout", "3s"]).start()).unwrap();
    let token = tokio::task::block_in_place(|| cluster.join_token(Some(2))).unwrap();
    let ca = std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt")).unwrap();
    let fleet = cluster.fleet.parse().unwrap();
    let endpoint = rogue::endpoint().unwrap();
    let claims = || Claims { labels: BTreeMap::new(), running: vec![], slots: 1 };
    let beating = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let mut beating_agent = Rogue::connect(&endpoint, fleet, &beating, claims(), Window::Normal).await.unwrap();
    let _alive = beating_agent.keep_alive();
    // The attacker's side: a connection kept open by QUIC's own
    // keep-alives, that says nothing after its hello, is not an agent.
    let mute = rogue::enroll(&endpoint, fleet, &ca, &token).await.unwrap();
    let mut mute_agent = Rogue::connect(&endpoint, fleet, &mute, claims(), Window::Normal).await.unwrap();

    let refused = mute_agent.expect(WAIT, |m| match m {
        ToAgent::Refused { reason } => Some(reason),
        _ => None,
    });
    let reason = refused.await.unwrap_or_else(|| panic!("the mute agent was kept\n{}", cluster.controller_log()));
    assert!(reason.contains("silent for 3s"), "{reason}");
    // Three leases on, the one that beats is still there, each of its
    // heartbeats answered.
    tokio::time::sleep(Duration::from_secs(9)).await;
    tokio::task::block_in_place(|| {
        assert_eq!(agent(&cluster, &beating.agent_id)["connected"], true, "{}", cluster.controller_log());
        assert_eq!(agent(&cluster, &mute.agent_id)["connected"], false);
    });
    let mut acks = 0;
    while let Ok(message) = beating_agent.inbox.try_recv() {
        acks += usize::from(message == ToAgent::HeartbeatAck);
    }
    assert!(acks >= 8, "{acks} heartbeats of about 11 were acknowledged");
    assert!(beating_agent.conn.close_reason().is_none());
}

#[test]
fn a_driver_panic_ends_the_controller_process() {
    let mut cluster = Cluster::new().controller_env("SLUICE_DEBUG_DRIVER_PANIC_ON_PIPELINE", "boom").start().unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("README", "hello\n")]);
    // Serving before.
    cluster.create_pipeline("fine", &source_pipeline("fine", &repo, "{}", 0));
    let file = cluster.dir.path().join("boom.json");
    std::fs::write(&file, source_pipeline("boom", &repo, "{}", 0)).unwrap();
    let _ = cluster.sluice(&["pipeline", "create", file.to_str().unwrap()]);
    let status = wait_until("the controller to exit", WAIT, || cluster.controller_exit()).unwrap();
    assert_eq!(status.code(), Some(70), "{}", cluster.controller_log());
    assert!(cluster.controller_log().contains("the driver panicked; exiting"), "{}", cluster.controller_log());
    // A restart recovers what was committed.
    cluster.start_controller().unwrap();
    let list = cluster.sluice_json(&["pipeline", "list"]).unwrap();
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1, "{list:#}");
}
