//! `artifacts`: one artifact uploaded to and downloaded from the real
//! controller on the streams an agent uses (`PutArtifact`, then
//! `FetchArtifact`, with the agent's checks: the controller verifies size
//! and sha256 and syncs to disk; the download is hashed and written to a
//! file, as the agent does), beside raw quinn in this process: a bare
//! server and client with the controller's own TLS configuration moving
//! the same bytes with nothing else to do. Each round's sha256 is timed
//! too: what the receiving side's check costs on one core sets a ceiling
//! on the share of raw quinn a transfer can reach where both ends share
//! the machine's cores.
//!
//! The controller lets an agent move only what its jobs need, so the
//! lightweight agent holds real jobs: each round is an execution whose
//! source action (handed to it by label) declares the artifact it uploads,
//! and whose next action takes that artifact as its input, downloaded.

use crate::client;
use crate::report::{Budget, CpuTime, Figure, ScenarioReport};
use anyhow::{Context as _, Result, bail};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sluice::fleet::read_frame_exact;
use sluice::hashed_file::{Chunks as _, Flush, HashedFile};
use sluice_protocol::{FromAgent, JobResult, JoinToken, ProducedArtifact, StreamReply, StreamRequest, encode};
use sluice_tests::Cluster;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Params {
    pub size_mib: usize,
    pub repeat: usize,
}

/// Read size on the receiving side, as the agent's.
const CHUNK: usize = 256 * 1024;

pub async fn run(p: &Params) -> Result<ScenarioReport> {
    let size = p.size_mib << 20;
    let data = Arc::new(pseudo_random(size));
    let dir = tempfile::tempdir()?;

    let cluster = tokio::task::block_in_place(|| Cluster::new().start())?;
    let fleet: SocketAddr = cluster.fleet.parse()?;
    let token = tokio::task::block_in_place(|| cluster.join_token_with(Some(1), &["bench=artifacts"], &[]))?;
    let token = JoinToken::parse(&token).map_err(anyhow::Error::msg)?;
    let roots = client::roots(&std::fs::read_to_string(cluster.data_dir().join("ca/ca.crt"))?)?;
    let endpoint = client::endpoint()?;
    let enrolled = client::enroll(&endpoint, fleet, roots, &token).await?;
    let mut agent = client::connect(&endpoint, fleet, &enrolled).await?;
    let declaration = dir.path().join("artifacts.json");
    std::fs::write(&declaration, PIPELINE)?;

    let raw = RawQuinn::start(dir.path(), data.clone()).await?;

    let (mut up, mut down, mut raw_up, mut raw_down) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hashing = Vec::new();
    for round in 0..p.repeat {
        // A fresh digest each round, so the controller stores every upload
        // anew rather than finding it already there.
        let mut bytes = (*data).clone();
        bytes[0] = round as u8;
        // Timed: what the receiving side's check costs on one core here.
        let started = Instant::now();
        let round_digest = hex::encode(Sha256::digest(&bytes));
        hashing.push(started.elapsed().as_secs_f64());
        // A fresh heartbeat: the scheduler hands work only to agents heard from lately.
        agent.send(&FromAgent::Heartbeat { running: vec![] }).await?;
        let args = if round == 0 {
            vec!["pipeline".to_string(), "create".into(), declaration.display().to_string()]
        } else {
            vec!["pipeline".to_string(), "start".into(), "artifacts".into()]
        };
        let out = tokio::task::block_in_place(|| cluster.sluice(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        if !out.status.success() {
            bail!("starting the round's execution: {}", String::from_utf8_lossy(&out.stderr));
        }
        let source = agent.next_job().await?;
        up.push(cpu_of(sluice_upload(&agent.conn, &bytes, &round_digest)).await?);
        let outputs = vec![ProducedArtifact { name: "blob".into(), digest: round_digest.clone(), size: size as u64 }];
        let result = JobResult::Succeeded {
            summary: String::new(),
            output_variables: Default::default(),
            external_url: None,
            outputs,
        };
        agent.send(&FromAgent::JobFinished { job_id: source.job_id, lease_epoch: source.lease_epoch, result }).await?;
        let consumer = agent.next_job().await?;
        // A new file each round, as an agent downloads into a new job's
        // directory; the last round's is removed before the clock starts
        // (truncating 256 MiB inside the measured time cost up to 60 ms).
        let dest = dir.path().join(format!("download-{round}"));
        if round > 0 {
            std::fs::remove_file(dir.path().join(format!("download-{}", round - 1)))?;
        }
        down.push(cpu_of(sluice_download(&agent.conn, &round_digest, size as u64, &dest)).await?);
        let result = JobResult::Succeeded {
            summary: String::new(),
            output_variables: Default::default(),
            external_url: None,
            outputs: vec![],
        };
        agent.send(&FromAgent::JobFinished { job_id: consumer.job_id, lease_epoch: consumer.lease_epoch, result }).await?;
        raw_up.push(cpu_of(raw.upload(&data)).await?);
        raw_down.push(cpu_of(raw.download(size)).await?);
    }
    let gib = size as f64 / (1u64 << 30) as f64;
    let phases = [&up, &down, &raw_up, &raw_down];
    // The machine's cores used per GiB moved, and how many of them were
    // busy while it moved (out of all): a phase bound by the CPU keeps
    // them all busy, one that stalls leaves some idle.
    let [cpu_up, cpu_down, cpu_raw_up, cpu_raw_down] = phases.map(|p| median_by(p, |(_, c)| c.busy) / gib);
    let [busy_up, busy_down, busy_raw_up, busy_raw_down] = phases.map(|p| median_by(p, |(t, c)| c.busy / t.as_secs_f64()));
    let rate = |phase: &[(Duration, CpuTime)]| size as f64 / (1 << 20) as f64 / median_by(phase, |(t, _)| t.as_secs_f64());
    let (up, down, raw_up, raw_down) = (rate(&up), rate(&down), rate(&raw_up), rate(&raw_down));
    // The receiving side hashes every byte (sha256 names the artifact), on
    // the same cores as both ends here: with nothing else added and the
    // cores as busy as raw quinn keeps them, a transfer can reach at most
    // this share of raw quinn.
    let hash_secs = median_by(&hashing, |t| *t);
    let sha_per_gib = hash_secs / gib;
    let ceiling = |raw_cpu: f64| 100.0 * raw_cpu / (raw_cpu + sha_per_gib);

    let mut report = ScenarioReport::new("artifacts", json!({"sizeMiB": p.size_mib, "repeat": p.repeat}));
    report.figure(Figure::new("sluice upload", up, "MiB/s"));
    report.figure(Figure::new("raw quinn upload", raw_up, "MiB/s"));
    report.figure(Figure::new("upload, share of raw quinn", 100.0 * up / raw_up, "%").budget(Budget::AtLeast(75.0)));
    report.figure(Figure::new("sluice download", down, "MiB/s"));
    report.figure(Figure::new("raw quinn download", raw_down, "MiB/s"));
    report.figure(Figure::new("download, share of raw quinn", 100.0 * down / raw_down, "%").budget(Budget::AtLeast(75.0)));
    report.figure(Figure::new("sha256 on one core", size as f64 / (1 << 20) as f64 / hash_secs, "MiB/s"));
    report.figure(Figure::new("upload ceiling: raw quinn's CPU plus the hash", ceiling(cpu_raw_up), "%"));
    report.figure(Figure::new("download ceiling: raw quinn's CPU plus the hash", ceiling(cpu_raw_down), "%"));
    for (name, cpu, busy) in [
        ("sluice upload", cpu_up, busy_up),
        ("raw quinn upload", cpu_raw_up, busy_raw_up),
        ("sluice download", cpu_down, busy_down),
        ("raw quinn download", cpu_raw_down, busy_raw_down),
    ] {
        report.figure(Figure::new(&format!("{name}: CPU per GiB"), cpu, "core-s"));
        report.figure(Figure::new(&format!("{name}: cores busy"), busy, "cores"));
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    report.note(format!(
        "median of {} rounds each; the controller and this process share the machine's {cores} cores (CPU is the \
         machine's, from /proc/stat)",
        p.repeat
    ));
    report.note(format!(
        "a ceiling is raw quinn's CPU per GiB over that plus sha256's (upload {cpu_raw_up:.2} / ({cpu_raw_up:.2} + \
         {sha_per_gib:.2}) core-s): the share a transfer could reach if verifying the digest were all it added and the \
         cores were as busy as raw quinn keeps them; writing the file (and on download reading it) comes on top"
    ));
    raw.endpoint.close(0u32.into(), b"done");
    Ok(report)
}

/// Two actions for the lightweight agent (label `bench=artifacts`): one
/// declaring the artifact it uploads, one taking it as its input. It never
/// runs their plugins; it only moves the bytes and reports.
const PIPELINE: &str = r#"{"pipeline": {"name": "artifacts", "executionMode": "PARALLEL", "stages": [
  {"name": "Produce", "actions": [{"name": "Upload", "pollIntervalSeconds": 0,
     "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
     "configuration": {"Url": "/nonexistent"}, "outputArtifacts": [{"name": "blob"}],
     "agentLabels": {"bench": "artifacts"}}]},
  {"name": "Consume", "actions": [{"name": "Download",
     "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
     "configuration": {"Commands": "true"}, "inputArtifacts": [{"name": "blob"}],
     "agentLabels": {"bench": "artifacts"}}]}]}}"#;

/// Incompressible-looking bytes, quickly (xorshift).
fn pseudo_random(size: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    out
}

fn median_by<T>(items: &[T], value: impl Fn(&T) -> f64) -> f64 {
    let mut sorted: Vec<f64> = items.iter().map(value).collect();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// A transfer's time, and the machine's CPU time while it ran.
async fn cpu_of(transfer: impl std::future::Future<Output = Result<Duration>>) -> Result<(Duration, CpuTime)> {
    let before = CpuTime::now()?;
    let took = transfer.await?;
    Ok((took, CpuTime::now()?.since(before)))
}

async fn sluice_upload(conn: &quinn::Connection, bytes: &[u8], digest: &str) -> Result<Duration> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode(&StreamRequest::PutArtifact {
        digest: digest.to_string(),
        size: bytes.len() as u64,
        offset: 0,
    })?)
    .await?;
    send.write_all(bytes).await?;
    send.finish()?;
    match read_frame_exact::<StreamReply>(&mut recv).await? {
        Some(StreamReply::Ok { .. }) => Ok(started.elapsed()),
        other => bail!("upload refused: {other:?}"),
    }
}

async fn sluice_download(conn: &quinn::Connection, digest: &str, size: u64, dest: &std::path::Path) -> Result<Duration> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode(&StreamRequest::FetchArtifact { digest: digest.to_string(), offset: 0 })?).await?;
    send.finish()?;
    match read_frame_exact::<StreamReply>(&mut recv).await? {
        Some(StreamReply::Ok { size: announced }) if announced == size => {}
        other => bail!("download refused: {other:?}"),
    }
    // As the agent receives (agent/src/transfer.rs): hashed and written on a thread while the stream is read.
    let mut sink = HashedFile::start(std::fs::File::create(dest)?, Sha256::new(), Flush::Cached);
    let mut received = 0u64;
    while let Some(chunk) = recv.next_chunk().await? {
        received += chunk.len() as u64;
        if sink.push(chunk).await.is_err() {
            break;
        }
    }
    let (_, got) = sink.finish().await?;
    let elapsed = started.elapsed();
    if received != size || got != digest {
        bail!("download of {digest} came back different ({received} bytes)");
    }
    Ok(elapsed)
}

/// A bare quinn server and client with the controller's TLS settings.
struct RawQuinn {
    endpoint: quinn::Endpoint,
    client: quinn::Connection,
}

impl RawQuinn {
    async fn start(dir: &std::path::Path, data: Arc<Vec<u8>>) -> Result<Self> {
        let ca = sluice::ca::Ca::load_or_create(&dir.join("raw-ca"))?;
        let server = sluice::udp::endpoint("127.0.0.1:0".parse()?, Some(ca.server_config(Default::default())?))?;
        let addr = server.local_addr()?;
        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let data = data.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(serve_raw(send, recv, data.clone()));
                    }
                });
            }
        });
        let (key, csr) = client::key_and_csr()?;
        let (cert_pem, _) = ca.sign_agent(&csr, "ag-raw", Duration::from_secs(3600))?;
        let config = client::fleet_config(client::roots(ca.cert_pem())?, &cert_pem, key.serialize_der())?;
        let endpoint = client::endpoint()?;
        let client = endpoint
            .connect_with(config, addr, sluice_protocol::CONTROLLER_SERVER_NAME)?
            .await
            .context("raw quinn handshake")?;
        Ok(Self { endpoint: server, client })
    }

    async fn upload(&self, data: &[u8]) -> Result<Duration> {
        let started = Instant::now();
        let (mut send, mut recv) = self.client.open_bi().await?;
        send.write_all(b"U").await?;
        send.write_all(data).await?;
        send.finish()?;
        recv.read_to_end(16).await?;
        Ok(started.elapsed())
    }

    async fn download(&self, size: usize) -> Result<Duration> {
        let started = Instant::now();
        let (mut send, mut recv) = self.client.open_bi().await?;
        send.write_all(b"D").await?;
        send.finish()?;
        let mut received = 0;
        while let Some(chunk) = recv.read_chunk(CHUNK, true).await? {
            received += chunk.bytes.len();
        }
        if received != size {
            bail!("raw download ended after {received} of {size} bytes");
        }
        Ok(started.elapsed())
    }
}

/// `U`: read everything, answer `k`. `D`: send the data.
async fn serve_raw(mut send: quinn::SendStream, mut recv: quinn::RecvStream, data: Arc<Vec<u8>>) -> Result<()> {
    let mut verb = [0u8; 1];
    recv.read_exact(&mut verb).await?;
    match &verb {
        b"U" => {
            while recv.read_chunk(CHUNK, true).await?.is_some() {}
            send.write_all(b"k").await?;
        }
        _ => {
            // Batched sends, as the controller's while it sends a blob.
            let _bulk = sluice::udp::BulkSend::begin();
            send.write_all(&data).await?
        }
    }
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}
