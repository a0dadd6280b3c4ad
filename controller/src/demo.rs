//! `sluice demo`: the whole path on embedded defaults. Starts a controller
//! in a fresh data dir, enrolls a local `sluice-agent` with a join token,
//! makes a git repository with a small program, registers
//! `examples/demo.json` (Source -> Build -> Test -> Deploy) and shows the
//! execution live. Uses only the public API and binaries, as a user would.

use crate::cli::{Client, DemoArgs, Failure, print_table, watch};
use crate::driver::{ControllerConfig, start};
use crate::exit::shutdown_signal;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The example pipeline; `@DEMO_DIR@` stands for the demo's data dir.
const PIPELINE: &str = include_str!("../../examples/demo.json");
/// Marks a directory as the demo's own, so that it may be wiped.
const MARKER: &str = ".sluice-demo";
/// The program the demo builds, tests and deploys.
const PROGRAM: &str = "#!/bin/sh\n# A tiny program for the Sluice demo.\necho \"@GREETING@ (commit @COMMIT@)\"\n";

pub async fn run(args: DemoArgs) -> Result<i32, Failure> {
    let dir = args.data_dir.unwrap_or_else(|| std::env::temp_dir().join("sluice-demo"));
    prepare_dir(&dir)?;
    let agent_bin = sibling_binary("sluice-agent")?;
    which("git").ok_or_else(|| Failure::new(1, "the demo needs git on PATH (apt-get install git)"))?;

    let loopback = "127.0.0.1:0".parse().expect("address");
    let controller = start(ControllerConfig::new(dir.join("controller"), loopback, loopback)).await?;
    // HTTPS with a certificate from the demo controller's own CA.
    let api = controller.api_url.clone();
    let ca = std::fs::read(&controller.ca_file)
        .map_err(|e| Failure::new(1, format!("reading {}: {e}", controller.ca_file.display())))?;
    let client = Client::with_ca(Some(&api), Some(&controller.admin_token), Some(&ca))?;
    step(&format!("controller up: api {api}, fleet {} (data dir {})", controller.fleet, dir.join("controller").display()));

    let token = client.post("/agent-tokens", json!({"ttlSeconds": 600, "uses": 1}).to_string()).await?;
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let agent_log = dir.join("agent.log");
    let mut agent = tokio::process::Command::new(&agent_bin)
        .args(["--controller", &controller.fleet.to_string(), "--token", &token])
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .args(["--labels", "demo=true"])
        // The demo's repository is a local directory: its git checkout
        // runs confined, so the agent lets programs read it.
        .arg("--sandbox-read")
        .arg(std::path::absolute(dir.join("repo")).unwrap_or_else(|_| dir.join("repo")))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&agent_log)
                .map_err(|e| Failure::new(1, format!("creating {}: {e}", agent_log.display())))?,
        )
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::new(1, format!("starting {}: {e}", agent_bin.display())))?;
    let agent_id = wait_for_agent(&client, &mut agent, &agent_log).await?;
    step(&format!("agent {agent_id} enrolled and connected over QUIC with mutual TLS"));

    let commit = make_repository(&dir.join("repo"))?;
    step(&format!("git repository {} at commit {}", dir.join("repo").display(), &commit[..12.min(commit.len())]));

    let declaration = PIPELINE.replace("@DEMO_DIR@", &dir.to_string_lossy());
    let pipeline_file = dir.join("demo-pipeline.json");
    std::fs::write(&pipeline_file, &declaration).map_err(|e| Failure::new(1, e.to_string()))?;
    let created = client.post("/pipelines", declaration).await?;
    let execution = created["pipelineExecutionId"].as_str().unwrap_or_default().to_string();
    step(&format!("pipeline \"demo\" created from examples/demo.json; execution {execution} started"));
    println!();

    let status = watch(&client, "demo", &execution, &mut std::io::stdout()).await?;
    println!();
    let state = client.get("/pipelines/demo/state").await?;
    print_stages(&state);
    println!();
    if status == "Succeeded" {
        let current = dir.join("deploy/current");
        let target = std::fs::read_link(&current).map(|t| t.display().to_string()).unwrap_or_default();
        step(&format!("deployed: {} -> {target}", current.display()));
        if let Ok(out) = std::process::Command::new(current.join("dist/greet")).output() {
            step(&format!("running it prints: {}", String::from_utf8_lossy(&out.stdout).trim()));
        }
    } else {
        step(&format!("execution ended {status}; the agent's log is {}", agent_log.display()));
    }
    println!();
    // Name this very binary, so the commands work before it is on PATH.
    let sluice = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "sluice".into());
    println!("Use the CLI against this controller:");
    println!("  export SLUICE_API={api} SLUICE_CA={}", controller.ca_file.display());
    println!("  export SLUICE_TOKEN=$(cat {})", dir.join("controller/admin.token").display());
    for command in ["pipeline state demo", "pipeline start demo --wait", "watch demo", "logs demo", "agent list"] {
        println!("  {sluice} {command}");
    }

    println!();
    println!("Or the web console: open {api}/ in a browser and sign in with the token in");
    println!(
        "  {} (the certificate is from the controller's own CA: {})",
        dir.join("controller/admin.token").display(),
        controller.ca_file.display()
    );

    if args.once {
        let _ = agent.kill().await;
        controller.close();
        return Ok(if status == "Succeeded" { 0 } else { 1 });
    }
    println!();
    println!("Serving until Ctrl-C.");
    shutdown_signal().await;
    let _ = agent.kill().await;
    controller.close();
    Ok(0)
}

fn step(text: &str) {
    println!("==> {text}");
}

fn print_stages(state: &Value) {
    let mut rows = Vec::new();
    for stage in state["stageStates"].as_array().into_iter().flatten() {
        for action in stage["actionStates"].as_array().into_iter().flatten() {
            let l = &action["latestExecution"];
            let detail = l["errorDetails"]["message"].as_str().or(l["summary"].as_str()).unwrap_or("-");
            rows.push(vec![
                stage["stageName"].as_str().unwrap_or("").to_string(),
                action["actionName"].as_str().unwrap_or("").to_string(),
                l["status"].as_str().unwrap_or("-").to_string(),
                detail.to_string(),
            ]);
        }
    }
    print_table(&["STAGE", "ACTION", "STATUS", "DETAIL"], &rows);
}

/// A fresh demo dir: the demo's own from an earlier run is wiped, anything
/// else that is not empty is left alone.
fn prepare_dir(dir: &Path) -> Result<(), Failure> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !dir.join(MARKER).exists() {
            return Err(Failure::new(
                2,
                format!("{} exists and is not a demo directory; pass another --data-dir", dir.display()),
            ));
        }
        std::fs::remove_dir_all(dir).map_err(|e| Failure::new(1, format!("clearing {}: {e}", dir.display())))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Failure::new(1, format!("creating {}: {e}", dir.display())))?;
    std::fs::write(dir.join(MARKER), "made by sluice demo\n").map_err(|e| Failure::new(1, e.to_string()))?;
    Ok(())
}

/// A binary installed beside this one (cargo puts both in target/<profile>).
pub fn sibling_binary(name: &str) -> Result<PathBuf, Failure> {
    let me = std::env::current_exe().map_err(|e| Failure::new(1, e.to_string()))?;
    let path = me.with_file_name(name);
    if path.exists() {
        return Ok(path);
    }
    which(name).ok_or_else(|| {
        Failure::new(
            1,
            format!("{name} not found beside {} nor on PATH: build it with `cargo build --release`", me.display()),
        )
    })
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

async fn wait_for_agent(client: &Client, agent: &mut tokio::process::Child, log: &Path) -> Result<String, Failure> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let agents = client.get("/agents").await?;
        if let Some(a) = agents["agents"].as_array().into_iter().flatten().find(|a| a["connected"] == json!(true)) {
            return Ok(a["id"].as_str().unwrap_or_default().to_string());
        }
        if let Ok(Some(status)) = agent.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(Failure::new(1, format!("the agent exited ({status}):\n{text}")));
        }
        if Instant::now() > deadline {
            return Err(Failure::new(1, format!("the agent did not connect within 60 s; see {}", log.display())));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A repository with one commit on `main`; returns the commit id.
fn make_repository(repo: &Path) -> Result<String, Failure> {
    std::fs::create_dir_all(repo).map_err(|e| Failure::new(1, e.to_string()))?;
    std::fs::write(repo.join("greet.sh"), PROGRAM).map_err(|e| Failure::new(1, e.to_string()))?;
    std::fs::write(repo.join("README"), "The program the Sluice demo builds, tests and deploys.\n")
        .map_err(|e| Failure::new(1, e.to_string()))?;
    let git = |args: &[&str]| -> Result<String, Failure> {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=Sluice Demo", "-c", "user.email=demo@sluice.invalid", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(repo)
            .output()
            .map_err(|e| Failure::new(1, format!("running git: {e}")))?;
        if !out.status.success() {
            return Err(Failure::new(1, format!("git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr))));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "."])?;
    git(&["commit", "-q", "-m", "Add the greeting program"])?;
    git(&["rev-parse", "HEAD"])
}
