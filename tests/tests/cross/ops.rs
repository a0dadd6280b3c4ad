//! Operators (issue 17, ops): the daemons' settings from flags, SLUICE_*
//! variables and a TOML file, `--check-config`, shell completion, man
//! pages, the systemd units checked by `systemd-analyze verify`, and
//! `sluice doctor` on a healthy and on a broken controller, all with the
//! real binaries.

use anyhow::Result;
use serde_json::Value;
use sluice_tests::{Cluster, WAIT, bin, output_text, wait_until};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `sluice` with no variable of the test runner's environment that could
/// change a setting.
fn sluice() -> Command {
    let mut command = Command::new(bin("sluice"));
    clean(&mut command);
    command
}

fn agent() -> Command {
    let mut command = Command::new(bin("sluice-agent"));
    clean(&mut command);
    command
}

fn clean(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SLUICE_") {
            command.env_remove(key);
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line of `key` in `--check-config`'s output.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn settings_come_from_flags_then_the_environment_then_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("controller.toml");
    std::fs::write(
        &file,
        format!(
            "data-dir = {:?}\nfleet = \"127.0.0.1:1111\"\nlease-timeout = \"45s\"\nmax-lost-retries = 5\n\
             api-name = [\"ci.example.com\", \"ci\"]\nfsync = true\n",
            dir.path().join("from-file").display().to_string()
        ),
    )?;
    let out = sluice()
        .args(["controller", "--check-config", "--fleet", "127.0.0.1:3333", "--config"])
        .arg(&file)
        .env("SLUICE_FLEET", "127.0.0.1:4444")
        .env("SLUICE_LEASE_TIMEOUT", "50s")
        .output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    let text = stdout(&out);
    assert_eq!(line(&text, "fleet"), "fleet = \"127.0.0.1:3333\"  # flag", "the flag wins over the variable and the file");
    assert_eq!(line(&text, "lease-timeout"), "lease-timeout = \"50s\"  # environment SLUICE_LEASE_TIMEOUT");
    assert_eq!(line(&text, "max-lost-retries"), "max-lost-retries = 5  # config file");
    assert_eq!(line(&text, "api-name"), "api-name = [\"ci.example.com\", \"ci\"]  # config file");
    assert_eq!(line(&text, "fsync"), "fsync = true  # config file");
    assert_eq!(line(&text, "agent-cert-lifetime"), "agent-cert-lifetime = \"7d\"  # default");
    assert!(text.contains("# the settings are valid"), "{text}");
    assert!(!dir.path().join("from-file").exists(), "--check-config starts nothing and creates nothing");

    // The settings are the ones used, not only printed: the file gives the
    // data dir, and its values that a flag or a variable overrides are never
    // parsed (they would not start).
    std::fs::write(
        &file,
        format!(
            "data-dir = {:?}\napi = \"not an address\"\nfleet = \"neither\"\nwebhook-listen = \"nor this\"\n",
            dir.path().join("from-file").display().to_string()
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("controller.log"))?;
    let mut controller = sluice()
        .args(["controller", "--api", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("SLUICE_FLEET", "127.0.0.1:0")
        .env("SLUICE_WEBHOOK_LISTEN", "127.0.0.1:0")
        .env("SLUICE_WEBHOOK_PLAIN_HTTP", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let addresses = wait_until("controller.json in the file's data dir", WAIT, || {
        let text = std::fs::read_to_string(dir.path().join("from-file/controller.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()
    });
    let _ = controller.kill();
    let _ = controller.wait();
    let addresses = addresses.map_err(|e| {
        anyhow::anyhow!("{e}: {}", std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default())
    })?;
    assert!(addresses["api"].as_str().unwrap().starts_with("https://127.0.0.1:"), "{addresses}");
    assert!(
        addresses["webhooks"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "the variables' webhook listener: {addresses}"
    );

    // The agent: SLUICE_AGENT_* and its two older variables.
    let agent_file = dir.path().join("agent.toml");
    std::fs::write(
        &agent_file,
        "controller = \"file.example:7443\"\ndata-dir = \"/var/lib/a\"\nslots = 3\nlabels = [\"pool=a\", \"gpu=no\"]\n\
         sandbox-max-pids = 10\n",
    )?;
    let out = agent()
        .args(["--check-config", "--sandbox-max-pids", "20", "--config"])
        .arg(&agent_file)
        .env("SLUICE_CONTROLLER", "env.example:7443")
        .env("SLUICE_AGENT_SLOTS", "5")
        .env("SLUICE_JOIN_TOKEN", "sluice-join-not-a-real-token")
        .output()?;
    let text = stdout(&out);
    assert!(!text.contains("not-a-real-token") && !stderr(&out).contains("not-a-real-token"), "{}", output_text(&out));
    // A join token that does not parse is an error of --check-config: run
    // again without it for the settings.
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let out = agent()
        .args(["--check-config", "--sandbox-max-pids", "20", "--config"])
        .arg(&agent_file)
        .env("SLUICE_CONTROLLER", "env.example:7443")
        .env("SLUICE_AGENT_SLOTS", "5")
        .output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    let text = stdout(&out);
    // A list since a cluster's controllers can be given (issue 18, reach).
    assert_eq!(line(&text, "controller"), "controller = [\"env.example:7443\"]  # environment SLUICE_CONTROLLER");
    assert_eq!(line(&text, "slots"), "slots = 5  # environment SLUICE_AGENT_SLOTS");
    assert_eq!(line(&text, "sandbox-max-pids"), "sandbox-max-pids = 20  # flag");
    assert_eq!(line(&text, "data-dir"), "data-dir = \"/var/lib/a\"  # config file");
    assert_eq!(line(&text, "labels"), "labels = [\"pool=a\", \"gpu=no\"]  # config file");
    Ok(())
}

#[test]
fn check_config_on_a_bad_file_says_what_is_wrong_and_starts_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let cases = [
        ("fleet-port = 7443\n", "unknown key \"fleet-port\""),
        ("data_dir = \"/x\"\n", "did you mean \"data-dir\""),
        ("token = \"secret\"\n", "unknown key \"token\""),
        ("lease-timeout = \"soon\"\n", "--lease-timeout"),
        ("fsync = \"yes\"\n", "key \"fsync\": is a switch"),
        ("fleet = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n", "key \"fleet\": takes one value"),
        ("api-plain-http = true\napi = \"0.0.0.0:7400\"\n", "loopback"),
        ("this is not toml\n", "not valid TOML"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&file, format!("data-dir = {:?}\n{text}", data.display().to_string()))?;
        let out = sluice().args(["controller", "--check-config", "--config"]).arg(&file).output()?;
        assert_eq!(out.status.code(), Some(2), "{text}: {}", output_text(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{text}: expected {expected:?} in:\n{err}");
        assert!(!err.contains("secret"), "{err}");
        // The daemon itself refuses the same file, before it creates anything.
        let out = sluice().args(["controller", "--config"]).arg(&file).output()?;
        assert_eq!(out.status.code(), Some(2), "{text}: {}", output_text(&out));
        assert!(!data.exists(), "{text}: nothing was created");
    }
    let out = sluice().args(["controller", "--check-config", "--config"]).arg(dir.path().join("missing.toml")).output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr(&out).contains("missing.toml"), "{}", output_text(&out));

    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "controller = \"x:1\"\ndata-dir = \"/d\"\nslot = 3\n")?;
    let out = agent().args(["--check-config", "--config"]).arg(&file).output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr(&out).contains("unknown key \"slot\""), "{}", output_text(&out));
    Ok(())
}

#[test]
fn completion_scripts_load_in_their_shells() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef sluice"), ("fish", "complete -c sluice")] {
        let out = sluice().args(["completion", shell]).output()?;
        assert!(out.status.success(), "{shell}: {}", output_text(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        assert!(script.contains("pipeline") && script.contains("data-dir"), "{shell}: the commands and flags are in it");
        std::fs::write(dir.path().join(format!("sluice.{shell}")), &script)?;
    }
    // bash parses and sources the script, and sluice then has a completion
    // function that completes its commands.
    let script = dir.path().join("sluice.bash");
    let check = format!(
        "set -e; source {script:?}; complete -p sluice; COMP_WORDS=(sluice pipel); COMP_CWORD=1; COMP_LINE='sluice pipel'; \
         COMP_POINT=${{#COMP_LINE}}; _sluice sluice pipel sluice; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script = script.display().to_string()
    );
    let out = Command::new("bash").args(["--noprofile", "--norc", "-c", &check]).output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(stdout(&out).lines().any(|l| l == "pipeline"), "bash completes `pipel` to `pipeline`: {}", output_text(&out));
    for (shell, args) in [("zsh", vec!["-n"]), ("fish", vec!["--no-execute"])] {
        if Command::new(shell).arg("--version").output().is_ok() {
            let out = Command::new(shell).args(&args).arg(dir.path().join(format!("sluice.{shell}"))).output()?;
            assert!(out.status.success(), "{shell}: {}", output_text(&out));
        }
    }
    let out = sluice().args(["completion", "tcsh"]).output()?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    Ok(())
}

#[test]
fn man_pages_are_generated_from_the_commands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let man1 = dir.path().join("man1");
    let out = sluice().args(["man", "--to"]).arg(&man1).output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    let out = agent().arg("--man").arg(&man1).output()?;
    assert!(out.status.success(), "{}", output_text(&out));
    for (page, mentions) in [
        ("sluice.1", vec!["pipeline", "doctor"]),
        ("sluice-controller.1", vec!["SLUICE_DATA_DIR", "SLUICE_CONTROLLER_CONFIG", "check\\-config"]),
        ("sluice-pipeline-create.1", vec![".SH OPTIONS"]),
        ("sluice-doctor.1", vec!["data\\-dir"]),
        ("sluice-agent.1", vec!["SLUICE_AGENT_DATA_DIR", "SLUICE_JOIN_TOKEN"]),
    ] {
        let text = std::fs::read_to_string(man1.join(page)).map_err(|e| anyhow::anyhow!("{page}: {e}"))?;
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is roff");
        for mention in mentions {
            assert!(text.contains(mention), "{page} mentions {mention}");
        }
    }
    // man itself renders a page, where it is installed.
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let out = Command::new("man").arg("-l").arg(man1.join("sluice-controller.1")).env("MANPAGER", "cat").output()?;
        assert!(out.status.success() && stdout(&out).contains("data-dir"), "{}", output_text(&out));
    }
    Ok(())
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() -> Result<()> {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!(
            "systemd-analyze is missing: install systemd (`apt-get install systemd`; .ci/run does) to verify contrib/systemd/"
        );
    };
    assert!(version.status.success(), "{}", output_text(&version));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir()?;
    let man1 = dir.path().join("man/man1");
    // The units name their man pages: verify looks them up.
    assert!(sluice().args(["man", "--to"]).arg(&man1).status()?.success());
    assert!(agent().arg("--man").arg(&man1).status()?.success());
    for (unit, binary) in [("sluice-controller.service", "sluice"), ("sluice-agent.service", "sluice-agent")] {
        let text = std::fs::read_to_string(repo.join("contrib/systemd").join(unit))?;
        for required in [
            "User=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "RuntimeDirectory=",
            "ProtectHome=yes",
        ] {
            assert!(text.contains(required), "{unit} has {required}");
        }
        // Verify checks that ExecStart's binary exists: the one just built.
        let installed = format!("/usr/local/bin/{binary} ");
        assert!(text.contains(&installed), "{unit} runs {installed}");
        let text = text.replace(&installed, &format!("{} ", bin(binary).display()));
        std::fs::write(dir.path().join(unit), text)?;
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.path().join(unit))
            .env("MANPATH", dir.path().join("man"))
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()?;
        assert!(out.status.success() && stderr(&out).trim().is_empty(), "{unit}: {}", output_text(&out));
    }
    // The controller writes backups itself: the target docs/install.md
    // shows must be one its unit lets it write (ProtectSystem=strict).
    let unit = std::fs::read_to_string(repo.join("contrib/systemd/sluice-controller.service"))?;
    let install = std::fs::read_to_string(repo.join("docs/install.md"))?;
    assert!(unit.contains("ReadWritePaths=-/var/backups/sluice\n"), "the controller unit allows /var/backups/sluice");
    assert!(install.contains("sluice backup --to /var/backups/sluice/"), "install.md backs up to /var/backups/sluice");
    // The sample settings beside the units hold, with the data dirs the
    // units give in their Environment=.
    let samples = repo.join("contrib/systemd");
    let out = sluice()
        .args(["controller", "--check-config", "--config"])
        .arg(samples.join("controller.toml"))
        .env("SLUICE_DATA_DIR", "/var/lib/sluice")
        .output()?;
    assert!(out.status.success(), "controller.toml: {}", output_text(&out));
    let out = agent()
        .args(["--check-config", "--config"])
        .arg(samples.join("agent.toml"))
        .env("SLUICE_AGENT_DATA_DIR", "/var/lib/sluice-agent")
        .output()?;
    assert!(out.status.success(), "agent.toml: {}", output_text(&out));
    // A broken unit fails the same check: the check can fail.
    std::fs::write(
        dir.path().join("broken.service"),
        "[Service]\nExecStart=/nonexistent/sluice\nProtectSystem=sometimes\n",
    )?;
    let out = Command::new("systemd-analyze").arg("verify").arg(dir.path().join("broken.service")).output()?;
    assert!(!out.status.success() || !stderr(&out).trim().is_empty(), "{}", output_text(&out));
    Ok(())
}

fn doctor(data_dir: &Path, extra: &[&str]) -> Result<(Option<i32>, String)> {
    let out = sluice().args(["doctor", "--min-free-space", "1MiB", "--data-dir"]).arg(data_dir).args(extra).output()?;
    Ok((out.status.code(), output_text(&out)))
}

/// The status of the doctor's line for `check`.
fn status(text: &str, check: &str) -> String {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {check} check in:\n{text}"))
        .to_string()
}

#[test]
fn doctor_passes_a_healthy_controller_and_names_what_is_broken() -> Result<()> {
    let mut cluster = Cluster::new().agent(&[]).start()?;
    cluster.wait_for_agents(1)?;
    let data = cluster.data_dir();
    let (code, text) = doctor(&data, &[])?;
    assert_eq!(code, Some(0), "{text}");
    for check in ["store", "ca", "free", "api", "fleet"] {
        assert_eq!(status(&text, check), "ok", "{check}: {text}");
    }
    assert!(text.contains("healthy"), "{text}");
    let out = sluice().args(["doctor", "--output", "json", "--min-free-space", "1MiB", "--data-dir"]).arg(&data).output()?;
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["healthy"], true, "{json}");

    // The agent's data dir: its certificate and the controller's CA.
    let agent_dir = cluster.agent_dir(0);
    let (_, text) = doctor(&agent_dir, &["--controller", &cluster.fleet])?;
    assert_eq!(status(&text, "certificate"), "ok", "{text}");
    assert_eq!(status(&text, "ca"), "ok", "{text}");
    assert_eq!(status(&text, "fleet"), "ok", "{text}");
    assert!(text.contains("answers a QUIC handshake"), "{text}");
    // Nothing answers on a port no controller holds.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let (code, text) = doctor(&agent_dir, &["--controller", &silent.local_addr()?.to_string()])?;
    assert_eq!((code, status(&text, "fleet")), (Some(1), "FAIL".to_string()), "{text}");
    drop(silent);
    cluster.wait_for_agents(1)?;

    // An expired CA certificate: FAIL, with what to do, and exit 1.
    let ca = data.join("ca").join("ca.crt");
    let original = std::fs::read(&ca)?;
    std::fs::write(&ca, expired_certificate()?)?;
    let (code, text) = doctor(&data, &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(status(&text, "ca"), "FAIL", "{text}");
    assert!(text.contains("expired on") && text.contains("fix: issue a new CA"), "{text}");
    std::fs::write(&ca, original)?;
    assert_eq!(doctor(&data, &[])?.0, Some(0));

    // A stopped controller with a corrupt store: both said, exit 1.
    cluster.kill_controller();
    let store = data.join("sluice.db");
    let mut bytes = std::fs::read(&store)?;
    assert!(bytes.len() > 8192, "the store has more than its first page");
    bytes[4096..].fill(0x5A);
    std::fs::write(&store, bytes)?;
    let (code, text) = doctor(&data, &[])?;
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(status(&text, "store"), "FAIL", "{text}");
    assert!(text.contains("restore the data dir from a backup"), "{text}");
    assert_eq!(status(&text, "api"), "FAIL", "{text}");
    assert!(text.contains("start the controller"), "{text}");

    let (code, text) = doctor(cluster.dir.path(), &[])?;
    assert_eq!(code, Some(2), "not a data dir: {text}");
    Ok(())
}

fn expired_certificate() -> Result<String> {
    let mut params = rcgen::CertificateParams::new(vec!["sluice-ca".to_string()])?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(400);
    params.not_after = now - time::Duration::days(35);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    Ok(params.self_signed(&rcgen::KeyPair::generate()?)?.pem())
}

#[test]
fn cli_profiles_live_in_config_toml_and_the_old_profiles_json_is_still_read() -> Result<()> {
    let cluster = Cluster::new().start()?;
    let home = tempfile::tempdir()?;
    let config_dir = home.path().join("sluice");
    std::fs::create_dir_all(&config_dir)?;
    let token_file = cluster.data_dir().join("admin.token");
    let legacy = serde_json::json!({
        "default": "old",
        "profiles": { "old": { "api": cluster.api, "ca": cluster.ca_file(), "tokenFile": token_file } }
    });
    std::fs::write(config_dir.join("profiles.json"), serde_json::to_string(&legacy)?)?;
    let cli = |args: &[&str]| -> Result<Output> {
        Ok(sluice().args(args).env("XDG_CONFIG_HOME", home.path()).env("HOME", home.path()).output()?)
    };
    let out = cli(&["whoami"])?;
    assert!(out.status.success(), "the old file's default profile: {}", output_text(&out));

    let out = cli(&["profile", "add", "new", "--data-dir", cluster.data_dir().to_str().unwrap()])?;
    assert!(out.status.success(), "{}", output_text(&out));
    let text = std::fs::read_to_string(config_dir.join("config.toml"))?;
    assert!(text.contains("[profiles.new]") && text.contains("[profiles.old]") && text.contains("token-file = "), "{text}");
    let out = cli(&["--profile", "new", "whoami"])?;
    assert!(out.status.success(), "{}", output_text(&out));
    // config.toml is the one read now.
    std::fs::write(config_dir.join("profiles.json"), "not json")?;
    assert!(cli(&["--profile", "old", "whoami"])?.status.success());

    std::fs::write(
        config_dir.join("config.toml"),
        format!("{text}\n[profiles.typo]\napi = \"https://x:1\"\ntokenfile = \"/t\"\n"),
    )?;
    let out = cli(&["--profile", "new", "whoami"])?;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stderr(&out).contains("tokenfile") && stderr(&out).contains("config.toml"), "{}", output_text(&out));
    Ok(())
}
