//! The sandbox, exercised with real components built from `plugins/`: each
//! misbehaviour fails its own action with a specific reason, and the same
//! runtime keeps serving afterwards.

use super::*;

pub(crate) struct Fixture {
    pub runtime: Arc<Runtime>,
    pub dir: tempfile::TempDir,
}

pub(crate) fn fixture(memory_limit: usize) -> Fixture {
    fixture_with(memory_limit, Allocation::OnDemand)
}

pub(crate) fn fixture_with(memory_limit: usize, allocation: Allocation) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        memory_limit,
        cache_dir: Some(dir.path().join("cache")),
        allocation,
        max_output_bytes: 16 << 20,
        // These tests are about the wasm sandbox; confinement of
        // programs has its own tests (`tests/sandbox.rs`).
        confinement: sandbox::Confinement::Unconfined,
        ..RuntimeConfig::default()
    })
    .unwrap();
    Fixture { runtime, dir }
}

pub(crate) fn hostile(f: &Fixture) -> Arc<LoadedPlugin> {
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("hostile")).unwrap();
    f.runtime.load(&bytes, None).unwrap()
}

pub(crate) fn invocation(f: &Fixture, mode: &str, grants: Grants, timeout: Duration) -> Invocation {
    let root = f.dir.path().join(format!("job-{mode}-{}", rand_suffix()));
    let input = root.join("inputs/src");
    let output = root.join("outputs/out");
    let workspace = root.join("workspace");
    for d in [&input, &output, &workspace] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(input.join("file.txt"), "input").unwrap();
    Invocation {
        pipeline: "p".into(),
        execution_id: "e".into(),
        stage: "s".into(),
        action: "a".into(),
        attempt: 1,
        configuration: vec![("Mode".into(), mode.into())],
        variables: vec![],
        inputs: vec![("src".into(), input)],
        outputs: vec![("out".into(), output, vec![])],
        workspace,
        grants,
        secrets: BTreeMap::new(),
        timeout,
        cancel: Cancel::default(),
    }
}

pub(crate) fn run(f: &Fixture, mode: &str, grants: Grants, timeout: Duration) -> (Outcome, Vec<String>) {
    run_with(f, mode, &[], grants, timeout)
}

pub(crate) fn run_with(
    f: &Fixture,
    mode: &str,
    config: &[(&str, &str)],
    grants: Grants,
    timeout: Duration,
) -> (Outcome, Vec<String>) {
    let plugin = hostile(f);
    let mut inv = invocation(f, mode, grants, timeout);
    inv.configuration.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let log: Arc<dyn LogSink> = Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string()));
    let outcome = f.runtime.run_action(&plugin, &inv, log);
    let lines = lines.lock().unwrap().clone();
    (outcome, lines)
}

pub(crate) fn failure(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

pub(crate) fn sh() -> Grants {
    Grants { exec: vec!["sh".into()], ..Grants::default() }
}

#[test]
fn describe_reads_what_the_plugin_says() {
    let f = fixture(64 << 20);
    let info = f.runtime.describe(&hostile(&f)).unwrap();
    assert_eq!((info.name.as_str(), info.version.as_str(), info.category.as_str()), ("hostile", "1", "Test"));
    assert!(info.configuration.iter().any(|p| p.name == "Mode" && p.required));
    assert_eq!(info.capabilities.exec, ["sh"]);
}

#[test]
fn a_trap_fails_the_action_and_the_runtime_keeps_serving() {
    let f = fixture(64 << 20);
    let (outcome, _) = run(&f, "trap", Grants::default(), Duration::from_secs(30));
    assert!(failure(&outcome).starts_with("plugin trapped"), "{outcome:?}");
    let (outcome, _) = run(&f, "ok", Grants::default(), Duration::from_secs(30));
    assert!(matches!(outcome, Outcome::Succeeded { ref summary, .. } if summary == "ok"), "{outcome:?}");
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let f = fixture(64 << 20);
    // Compiled before the clock (the run below finds it in the runtime's
    // caches): the bound is for the deadline, not for a cold compile on a
    // busy machine.
    hostile(&f);
    let started = Instant::now();
    let (outcome, _) = run(&f, "loop", Grants::default(), Duration::from_millis(300));
    assert!(failure(&outcome).contains("deadline"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let (outcome, _) = run(&f, "ok", Grants::default(), Duration::from_secs(30));
    assert!(matches!(outcome, Outcome::Succeeded { .. }));
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let f = fixture(64 << 20);
    let (outcome, _) = run(&f, "memory", Grants::default(), Duration::from_secs(30));
    assert_eq!(failure(&outcome), "plugin exceeded its memory limit of 64 MiB");
}

#[test]
fn pooled_instances_keep_the_limits_and_are_reused() {
    let f = fixture_with(64 << 20, Allocation::Pooling { concurrent_calls: 2 });
    // Where the address space allows pools (every 64-bit Linux we run on),
    // they are in force; a fallback would be announced, not silent.
    assert_eq!(f.runtime.allocation(), Allocation::Pooling { concurrent_calls: 2 });
    let (outcome, _) = run(&f, "memory", Grants::default(), Duration::from_secs(30));
    assert_eq!(failure(&outcome), "plugin exceeded its memory limit of 64 MiB");
    // More calls than slots, one after another: each returns its slot.
    for _ in 0..5 {
        let (outcome, _) = run(&f, "ok", Grants::default(), Duration::from_secs(30));
        assert!(matches!(outcome, Outcome::Succeeded { ref summary, .. } if summary == "ok"), "{outcome:?}");
    }
}

#[test]
fn the_outcome_is_delivered_before_the_sandbox_goes_and_not_after_the_call_returns() {
    // One pooled instance. While the outcome is delivered the call's store
    // still holds it, so a second call then finds the pool full; once
    // `run_action_then` has returned, it is back for the next call.
    let f = fixture_with(64 << 20, Allocation::Pooling { concurrent_calls: 1 });
    assert_eq!(f.runtime.allocation(), Allocation::Pooling { concurrent_calls: 1 });
    let plugin = hostile(&f);
    let inv = invocation(&f, "ok", Grants::default(), Duration::from_secs(30));
    let log: Arc<dyn LogSink> = Arc::new(|_: &str| {});
    let deadline = Instant::now() + Duration::from_secs(30);
    let (outcome, during) = f.runtime.run_action_then(&plugin, &inv, log.clone(), |outcome| {
        (outcome, f.runtime.execute_once(&plugin, &inv, log.clone(), deadline, None))
    });
    assert!(matches!(outcome, Outcome::Succeeded { ref summary, .. } if summary == "ok"), "{outcome:?}");
    assert!(failure(&during).contains("concurrent"), "the first call still held the instance: {during:?}");
    let after = f.runtime.execute_once(&plugin, &inv, log, deadline, None);
    assert!(matches!(after, Outcome::Succeeded { .. }), "{after:?}");
}

#[test]
fn host_paths_outside_the_preopens_cannot_be_read() {
    let f = fixture(64 << 20);
    let (outcome, _) = run(&f, "read-host-path", Grants::default(), Duration::from_secs(30));
    assert!(failure(&outcome).contains("cannot read \"/etc/passwd\""), "{outcome:?}");
    let (outcome, _) = run(&f, "escape", Grants::default(), Duration::from_secs(30));
    let message = failure(&outcome);
    assert!(!message.contains("root:"), "{message}");
}

#[test]
fn a_host_copy_does_not_follow_a_planted_symlink_out() {
    let f = fixture(64 << 20);
    let (outcome, _) = run(&f, "copy-escape", sh(), Duration::from_secs(30));
    assert!(failure(&outcome).contains("leads outside the action's directories"), "{outcome:?}");
}

#[test]
fn exec_needs_a_grant_and_runs_with_one() {
    let f = fixture(64 << 20);
    let (outcome, _) = run(&f, "exec", Grants::default(), Duration::from_secs(30));
    assert!(failure(&outcome).contains("not permitted: the action has no `exec` grant"), "{outcome:?}");
    let other = Grants { exec: vec!["git".into()], ..Grants::default() };
    let (outcome, _) = run(&f, "exec", other, Duration::from_secs(30));
    assert!(failure(&outcome).contains("allows only git"), "{outcome:?}");
    let (outcome, _) = run(&f, "exec", sh(), Duration::from_secs(30));
    assert!(matches!(outcome, Outcome::Succeeded { ref summary, .. } if summary.contains("pwned")), "{outcome:?}");
}

#[test]
fn a_core_module_and_a_tampered_plugin_are_refused() {
    let f = fixture(64 << 20);
    let core = [0u8, b'a', b's', b'm', 1, 0, 0, 0];
    let err = f.runtime.load(&core, None).err().unwrap().to_string();
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("hostile")).unwrap();
    let err = f.runtime.load(&bytes, Some(&"0".repeat(64))).err().unwrap().to_string();
    assert!(err.contains("digest mismatch"), "{err}");
}

#[test]
fn compiled_plugins_are_cached_on_disk_and_reused() {
    let f = fixture(64 << 20);
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("hostile")).unwrap();
    f.runtime.load(&bytes, None).unwrap();
    let cached: Vec<_> = std::fs::read_dir(f.dir.path().join("cache")).unwrap().collect();
    assert_eq!(cached.len(), 1);
    // A second runtime on the same cache loads without compiling and works.
    let again = Runtime::new(RuntimeConfig {
        memory_limit: 64 << 20,
        cache_dir: Some(f.dir.path().join("cache")),
        ..Default::default()
    })
    .unwrap();
    let plugin = again.load(&bytes, Some(&digest(&bytes))).unwrap();
    assert_eq!(again.describe(&plugin).unwrap().name, "hostile");
}

#[test]
fn concurrent_first_loads_of_one_plugin_all_succeed() {
    let f = fixture(64 << 20);
    let bytes = Arc::new(std::fs::read(sluice_test_plugins::test_plugin("hostile")).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (rt, bytes) = (f.runtime.clone(), bytes.clone());
            std::thread::spawn(move || rt.load(&bytes, None).map(|p| p.digest.clone()))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), digest(&bytes));
    }
}

#[test]
fn a_host_copy_does_not_write_through_a_planted_symlink() {
    let f = fixture(64 << 20);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap();
    let (outcome, _) = run_with(&f, "copy-into-link", &[("Path", target)], sh(), Duration::from_secs(30));
    assert!(failure(&outcome).contains("is a symlink"), "{outcome:?}");
    assert!(!outside.path().join("PWNED").exists(), "the copy escaped into {target}");
}

#[test]
fn a_program_that_outlives_its_pipes_is_killed_at_the_deadline() {
    let f = fixture(64 << 20);
    // Compiled before the clock, as above.
    hostile(&f);
    let started = Instant::now();
    let config = [("Args", "-c\nexec >/dev/null 2>&1; sleep 60")];
    let (outcome, _) = run_with(&f, "exec", &config, sh(), Duration::from_secs(1));
    assert!(failure(&outcome).contains("deadline"), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn a_cancel_stops_a_looping_plugin_and_a_running_program() {
    let f = fixture(64 << 20);
    let plugin = hostile(&f);
    for (mode, config) in [("loop", vec![]), ("exec", vec![("Args".to_string(), "-c\nsleep 60".to_string())])] {
        let mut inv = invocation(&f, mode, sh(), Duration::from_secs(60));
        inv.configuration.extend(config);
        let cancel = inv.cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        });
        let started = Instant::now();
        let log: Arc<dyn LogSink> = Arc::new(|_: &str| {});
        let outcome = f.runtime.run_action(&plugin, &inv, log);
        canceller.join().unwrap();
        assert!(failure(&outcome).contains("cancelled"), "{mode}: {outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}: took {:?}", started.elapsed());
    }
}

#[test]
fn latest_revision_asks_a_source_plugin_and_refuses_other_plugins() {
    let f = fixture(64 << 20);
    let repo = f.dir.path().join("repo");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", "-C"])
            .arg(&repo)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "first"]);
    let head = git(&["rev-parse", "HEAD"]);

    let find = |provider: &str| sluice_builtins::BUILTINS.iter().find(|b| b.provider == provider).unwrap().wasm;
    let source = f.runtime.load(find("git"), None).unwrap();
    let config = vec![("Url".to_string(), repo.display().to_string()), ("Branch".to_string(), "main".to_string())];
    let grants = Grants { exec: vec!["git".into()], ..Grants::default() };
    let sink: Arc<dyn LogSink> = Arc::new(|_: &str| {});
    let latest = |config: Vec<(String, String)>, grants: Grants| {
        f.runtime.latest_revision(&source, config, grants, BTreeMap::new(), Duration::from_secs(30), sink.clone())
    };
    let revision = latest(config.clone(), grants.clone()).unwrap();
    assert_eq!(revision.id, head);
    assert!(revision.summary.contains(&head[..7]), "{revision:?}");

    // Without the exec grant the plugin cannot run git, and says why.
    let denied = latest(config.clone(), Grants::default()).unwrap_err();
    assert!(denied.contains("git"), "{denied}");
    // A branch that does not exist.
    let mut missing = config.clone();
    missing[1].1 = "nope".into();
    assert!(latest(missing, grants.clone()).unwrap_err().contains("nope"));

    let noop = f.runtime.load(find("noop"), None).unwrap();
    let err = f
        .runtime
        .latest_revision(&noop, vec![], Grants::default(), BTreeMap::new(), Duration::from_secs(5), sink.clone())
        .unwrap_err();
    assert!(err.contains("not a source"), "{err}");
}

#[test]
fn a_python_plugin_runs_in_the_same_sandbox() {
    let f = fixture(256 << 20);
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("wordcount-py")).unwrap();
    let started = Instant::now();
    let plugin = f.runtime.load(&bytes, None).unwrap();
    let cold = started.elapsed();
    let info = f.runtime.describe(&plugin).unwrap();
    assert_eq!((info.name.as_str(), info.category.as_str()), ("wordcount", "Test"));

    let mut inv = invocation(&f, "python", Grants::default(), Duration::from_secs(60));
    let input = f.dir.path().join("python-input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.txt"), "one two three\nfour\n").unwrap();
    inv.inputs = vec![("src".into(), input)];
    inv.configuration = vec![("MaxWords".into(), "10".into())];
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())));
    let Outcome::Succeeded { summary, output_variables, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(summary, "1 files, 2 lines, 4 words");
    assert_eq!(output_variables["Words"], "4");
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("a.txt: 4 words")));
    let (_, out, _) = &inv.outputs[0];
    assert_eq!(std::fs::read_to_string(out.join("wordcount.txt")).unwrap(), "files 1\nlines 2\nwords 4\n");

    // Its own failure is an ordinary failed outcome.
    inv.configuration = vec![("MaxWords".into(), "3".into())];
    assert_eq!(failure(&f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}))), "4 words is more than MaxWords 3");

    // A second runtime on the same cache loads the compiled plugin instead of compiling.
    let again = Runtime::new(RuntimeConfig {
        memory_limit: 256 << 20,
        cache_dir: Some(f.dir.path().join("cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    again.load(&bytes, None).unwrap();
    let cached = started.elapsed();
    assert!(cached < cold, "loading from the cache ({cached:?}) is faster than compiling ({cold:?})");
}

#[test]
fn a_javascript_plugin_runs_in_the_same_sandbox() {
    let f = fixture(256 << 20);
    let bytes = std::fs::read(sluice_test_plugins::test_plugin("semver-js")).unwrap();
    let plugin = f.runtime.load(&bytes, None).unwrap();
    assert_eq!(f.runtime.describe(&plugin).unwrap().name, "semver");
    let mut inv = invocation(&f, "javascript", Grants::default(), Duration::from_secs(60));
    inv.configuration = vec![("Version".into(), "v2.1.0-beta.1".into()), ("Minimum".into(), "2.0.0".into())];
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}));
    let Outcome::Succeeded { summary, output_variables, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(summary, "2.1.0-beta.1");
    assert_eq!((output_variables["Major"].as_str(), output_variables["Prerelease"].as_str()), ("2", "beta.1"));
    inv.configuration = vec![("Version".into(), "1.9.9".into()), ("Minimum".into(), "2.0.0".into())];
    assert_eq!(failure(&f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}))), "1.9.9 is below the minimum 2.0.0");
    inv.configuration = vec![("Version".into(), "banana".into())];
    assert_eq!(
        failure(&f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}))),
        "\"banana\" is not a semantic version"
    );
}

#[test]
fn secrets_never_reach_the_log_by_any_path() {
    let f = fixture(64 << 20);
    let plugin = hostile(&f);
    let secret = "hunter2-\"quoted\"-value";
    let grants = Grants { secrets: vec!["TOKEN".into()], ..Grants::default() };
    let mut inv = invocation(&f, "leak-secret", grants, Duration::from_secs(30));
    inv.secrets = [("TOKEN".to_string(), secret.to_string())].into();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())));
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|l| l.contains("stdout: ***")) && lines.iter().any(|l| l.contains("stderr: ***")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains("hunter2")), "{lines:?}");
    drop(lines);

    // Without the grant the host refuses the secret, even one it holds.
    inv.grants = Grants::default();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(|_: &str| {}));
    assert_eq!(failure(&outcome), "secret \"TOKEN\" is not granted to this action");
}

/// Runs `leak-fields` for one field with the secret `TOKEN` granted;
/// returns the outcome and the log.
fn leak(f: &Fixture, secret: &str, field: &str) -> (Outcome, Vec<String>) {
    let plugin = hostile(f);
    let grants = Grants { secrets: vec!["TOKEN".into()], ..Grants::default() };
    let mut inv = invocation(f, "leak-fields", grants, Duration::from_secs(30));
    inv.configuration.push(("Field".into(), field.into()));
    inv.secrets = [("TOKEN".to_string(), secret.to_string())].into();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let outcome = f.runtime.run_action(&plugin, &inv, Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())));
    let lines = lines.lock().unwrap().clone();
    (outcome, lines)
}

/// Pieces of every encoding of `secret` that must not be seen: the whole
/// encodings of the plugin (`leaked_encodings`) less their first and last
/// two characters, which may mix in bits of the text around the secret.
fn telltales(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let b64 = |engine: &base64::engine::GeneralPurpose, bytes: &[u8]| engine.encode(bytes);
    let standard = &base64::engine::general_purpose::STANDARD;
    let url = &base64::engine::general_purpose::URL_SAFE;
    let inner = |s: String| s.chars().skip(2).collect::<Vec<_>>()[..s.chars().count() - 6].iter().collect::<String>();
    vec![
        secret.to_string(),
        inner(b64(standard, format!("user:{secret}").as_bytes()))[6..].to_string(),
        inner(b64(standard, format!("ab{secret}").as_bytes()))[2..].to_string(),
        inner(b64(url, secret.as_bytes())),
        hex::encode(secret),
        hex::encode_upper(secret),
        "%2Fpw%22".to_string(),
        "\\\"q".to_string(),
    ]
}

#[test]
fn every_field_that_leaves_the_runtime_is_masked_in_every_encoding() {
    let f = fixture(64 << 20);
    // A slash and a quote, so that base64, percent and JSON forms all
    // differ from the value.
    let secret = "Sup3r/pw\"q-9f8e7d6c";
    let clean = |what: &str, text: &str| {
        for telltale in telltales(secret) {
            assert!(!text.contains(&telltale), "{what} shows {telltale:?}: {text}");
        }
    };

    let (outcome, lines) = leak(&f, secret, "summary");
    let Outcome::Succeeded { summary, output_variables, external_url } = &outcome else { panic!("{outcome:?}") };
    clean("the summary", summary);
    assert_eq!(summary.matches(mask::MASK).count(), 8, "{summary}");
    for (name, value) in output_variables {
        clean("an output variable", &format!("{name}={value}"));
    }
    assert!(output_variables.contains_key(mask::MASK), "a secret as a variable's name: {output_variables:?}");
    clean("the external URL", external_url.as_deref().unwrap());
    clean("the log", &lines.join("\n"));

    let (outcome, _) = leak(&f, secret, "failure");
    clean("the failure message", failure(&outcome));
    assert!(failure(&outcome).starts_with("program failed; its stderr ends with: raw=*** "), "{outcome:?}");

    let (outcome, lines) = leak(&f, secret, "in-progress");
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let progress = lines.iter().find(|l| l.starts_with("in progress: ")).expect("the in-progress summary is logged");
    clean("the in-progress summary", progress);

    let (outcome, lines) = leak(&f, secret, "long-line");
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let long = lines.iter().find(|l| l.starts_with("[info] xxx")).expect("the long line is logged");
    // Masked before it was cut: not even the secret's first bytes remain.
    assert!(long.contains("xxx***"), "{}", &long[long.len() - 80..]);
    assert!(!long.contains("Sup"), "{}", &long[long.len() - 80..]);
}

#[test]
fn a_source_revision_and_its_error_are_masked() {
    let f = fixture(64 << 20);
    let wasm = sluice_builtins::BUILTINS.iter().find(|b| b.provider == "git").unwrap().wasm;
    let git = f.runtime.load(wasm, None).unwrap();
    let secret = "/no-such-repo-Sup3rpw";
    let grants = Grants { exec: vec!["git".into()], secrets: vec!["URL".into()], ..Grants::default() };
    let secrets: BTreeMap<String, String> = [("URL".to_string(), secret.to_string())].into();
    // git names the URL in its error: the URL is the secret here.
    let err = f
        .runtime
        .latest_revision(
            &git,
            vec![("Url".into(), secret.into())],
            grants,
            secrets,
            Duration::from_secs(30),
            Arc::new(|_: &str| {}),
        )
        .unwrap_err();
    assert!(!err.contains("Sup3rpw") && err.contains(mask::MASK), "{err}");
}

#[test]
fn deep_recursion_traps_in_the_guest_and_a_log_flood_is_cut() {
    let f = fixture(64 << 20);
    let plugin = hostile(&f);
    let (outcome, _) = run(&f, "recursion", Grants::default(), Duration::from_secs(30));
    assert!(failure(&outcome).contains("stack"), "{outcome:?}");
    // The runtime serves the next call.
    assert!(matches!(run(&f, "ok", Grants::default(), Duration::from_secs(30)).0, Outcome::Succeeded { .. }));
    let started = std::time::Instant::now();
    let (outcome, lines) = run(&f, "log-flood", Grants::default(), Duration::from_secs(60));
    let elapsed = started.elapsed().as_secs_f64();
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    // 120 MB logged in a tight loop: the burst passes, then the rate drops
    // lines and the end of the call says how many.
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let allowed = crate::budget::LOG_BURST as f64 + crate::budget::LOG_RATE as f64 * elapsed + 4096.0;
    assert!((bytes as f64) <= allowed, "{bytes} bytes logged in {elapsed:.2} s");
    let last = lines.last().unwrap();
    assert!(last.contains("log lines were dropped: the action logged faster than 256 KiB/s"), "{last}");
    let _ = plugin;
}

/// Instantiates a component written in WAT (one without imports) in a
/// store made exactly as for a plugin call, calls its export `run` if it
/// has one, and returns how that ended, explained as an action's failure.
fn run_wat(f: &Fixture, wat: &str) -> std::result::Result<(), String> {
    // The pooling allocator refuses a module over its bounds already here.
    let component = Component::new(&f.runtime.engine, wat).map_err(|e| format!("{e:#}"))?;
    let inv = invocation(f, "wat", Grants::default(), Duration::from_secs(10));
    let (mut store, _stdio) = f.runtime.store(&inv, Arc::new(|_: &str| {}), Instant::now() + inv.timeout).unwrap();
    let linker = Linker::<host::HostState>::new(&f.runtime.engine);
    let explain = |e: wasmtime::Error, store: &Store<host::HostState>| host::explain_trap(&e, store);
    let instance = linker.instantiate(&mut store, &component).map_err(|e| explain(e, &store))?;
    if let Some(run) = instance.get_func(&mut store, "run") {
        let run = run.typed::<(), ()>(&store).unwrap();
        run.call(&mut store, ()).map_err(|e| explain(e, &store))?;
    }
    Ok(())
}

/// A component of `n` instances of a module of `body`, exporting the
/// first instance's core function `run` (when `body` has one) as `run`.
fn wat_component(body: &str, n: usize) -> String {
    let instances: String = (0..n).map(|i| format!("(core instance $i{i} (instantiate $m))\n")).collect();
    let export =
        if body.contains("(export \"run\")") { "(func (export \"run\") (canon lift (core func $i0 \"run\")))" } else { "" };
    format!("(component (core module $m {body}) {instances} {export})")
}

#[test]
fn a_second_linear_memory_is_refused() {
    for allocation in [Allocation::OnDemand, Allocation::Pooling { concurrent_calls: 2 }] {
        let f = fixture_with(64 << 20, allocation);
        assert_eq!(run_wat(&f, &wat_component("(memory 1)", 1)), Ok(()));
        let refused = |err: &str| {
            err == "plugin needs more than 1 memory, the limit of a plugin"
                || err.contains("defined memories count of 2 exceeds the per-instance limit of 1")
                || err.contains("linear memories, which exceeds the configured maximum of 1")
        };
        let err = run_wat(&f, &wat_component("(memory 1) (memory 1)", 1)).unwrap_err();
        assert!(refused(&err), "{allocation:?}: {err}");
        // Two modules with a memory each are two memories all the same.
        let err = run_wat(&f, &wat_component("(memory 1)", 2)).unwrap_err();
        assert!(refused(&err), "{allocation:?}: {err}");
    }
}

#[test]
fn tables_are_bounded_at_instantiation_and_when_they_grow() {
    for allocation in [Allocation::OnDemand, Allocation::Pooling { concurrent_calls: 2 }] {
        let f = fixture_with(64 << 20, allocation);
        let limit = MAX_TABLE_ELEMENTS;
        let expected = format!("plugin exceeded its table limit of {limit} elements");
        assert_eq!(run_wat(&f, &wat_component(&format!("(table {limit} funcref)"), 1)), Ok(()));
        let big = format!("(table {} funcref)", limit + 1);
        let err = run_wat(&f, &wat_component(&big, 1)).unwrap_err();
        let pooled = format!("has a minimum element size of {} which exceeds the limit of {limit}", limit + 1);
        assert!(err == expected || err.contains(&pooled), "{allocation:?}: {err}");
        // Growing up to the limit works; one element past it traps.
        let grow = |by: usize| {
            format!(
                "(table 1 funcref) (func (export \"run\")
                   (if (i32.eq (table.grow 0 (ref.null func) (i32.const {by})) (i32.const -1)) (then unreachable)))"
            )
        };
        assert_eq!(run_wat(&f, &wat_component(&grow(limit - 1), 1)), Ok(()), "{allocation:?}");
        let err = run_wat(&f, &wat_component(&grow(limit), 1)).unwrap_err();
        assert_eq!(err, expected, "{allocation:?}");
        let err = run_wat(&f, &wat_component(&grow(1 << 30), 1)).unwrap_err();
        assert_eq!(err, expected, "{allocation:?}");
    }
}

#[test]
fn instances_and_tables_are_counted_per_store() {
    let f = fixture(64 << 20);
    assert_eq!(run_wat(&f, &wat_component("", MAX_INSTANCES)), Ok(()));
    let err = run_wat(&f, &wat_component("", MAX_INSTANCES + 1)).unwrap_err();
    assert_eq!(err, format!("plugin needs more than {MAX_INSTANCES} instances, the limit of a plugin"));
    let tables = |n: usize| (0..n).map(|_| "(table 0 funcref)").collect::<Vec<_>>().join(" ");
    assert_eq!(run_wat(&f, &wat_component(&tables(MAX_TABLES), 1)), Ok(()));
    let err = run_wat(&f, &wat_component(&tables(MAX_TABLES + 1), 1)).unwrap_err();
    assert_eq!(err, format!("plugin needs more than {MAX_TABLES} tables, the limit of a plugin"));
}

/// A `sluice:plugin` component made from a core module in WAT, whose
/// `describe` runs `describe_body` and which defines `extra` (tables,
/// memories) besides its one exported memory: a plugin a hostile author
/// could push, which toolchains for Rust would not produce.
fn wat_plugin(describe_body: &str, extra: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")).unwrap();
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    let version = INTERFACE_VERSIONS[0];
    let wat = format!(
        r#"(module
            (memory (export "memory") 1)
            {extra}
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) unreachable)
            (func (export "sluice:plugin/action@{version}#describe") (result i32) {describe_body})
            (func (export "sluice:plugin/action@{version}#execute") (param i32) (result i32) unreachable))"#
    );
    let mut module = wat::parse_str(&wat).unwrap();
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

#[test]
fn describe_of_a_pushed_plugin_keeps_the_table_and_memory_limits() {
    // Runtime::describe is what the controller calls on `plugin push`.
    for allocation in [Allocation::OnDemand, Allocation::Pooling { concurrent_calls: 1 }] {
        let f = fixture_with(64 << 20, allocation);
        let describe = |bytes: Vec<u8>| {
            let plugin = f.runtime.load(&bytes, None).map_err(|e| format!("{e:#}"))?;
            f.runtime.describe(&plugin).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        let table_limit =
            format!("plugin describe() failed: plugin exceeded its table limit of {MAX_TABLE_ELEMENTS} elements");
        // A describe that grows a table without end.
        let grow = "(drop (table.grow $t (ref.null func) (i32.const 0x10000000))) unreachable";
        let err = describe(wat_plugin(grow, "(table $t 1 funcref)")).unwrap_err();
        assert_eq!(err, table_limit, "{allocation:?}");
        // A table that starts too big.
        let big = format!("(table {} funcref)", MAX_TABLE_ELEMENTS * 10);
        // (The pooling allocator refuses it already when it is loaded.)
        let err = describe(wat_plugin("unreachable", &big)).unwrap_err();
        let pooled = format!("exceeds the limit of {MAX_TABLE_ELEMENTS}");
        assert!(err == table_limit || err.contains(&pooled), "{allocation:?}: {err}");
        // A second memory.
        let err = describe(wat_plugin("unreachable", "(memory 1)")).unwrap_err();
        let pooled = "defined memories count of 2 exceeds the per-instance limit of 1";
        assert!(err.contains("more than 1 memory") || err.contains(pooled), "{allocation:?}: {err}");
        // Within the limits the same plugin gets to run its describe (which
        // traps here: it has nothing to say).
        let err = describe(wat_plugin("unreachable", "(table 10 funcref)")).unwrap_err();
        assert!(err.contains("unreachable"), "{allocation:?}: {err}");
    }
}

#[test]
fn the_largest_real_plugins_fit_the_limits_in_the_pools() {
    // Python and JavaScript plugins are the biggest components there are:
    // one memory and their tables within the bounds, pooled or not.
    let f = fixture_with(256 << 20, Allocation::Pooling { concurrent_calls: 1 });
    assert_eq!(f.runtime.allocation(), Allocation::Pooling { concurrent_calls: 1 });
    for name in ["wordcount-py", "semver-js"] {
        let bytes = std::fs::read(sluice_test_plugins::test_plugin(name)).unwrap();
        let plugin = f.runtime.load(&bytes, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        f.runtime.describe(&plugin).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}
