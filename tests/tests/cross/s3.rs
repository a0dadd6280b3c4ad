//! Artifacts in S3-compatible object storage (issue 18, s3), against
//! moto's real S3 server (`sluice_tests::moto`): the blob store's S3
//! backend on its own (put, get, verify, multipart, resume, list, delete,
//! garbage collection), then real controllers and agents running a
//! pipeline whose artifacts go to the bucket, and the attacker's side: an
//! object changed in the bucket, a wrong key.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice::blobs::BlobStore;
use sluice::blobs::s3::PART_SIZE;
use sluice::hashed_file::ReadChunks;
use sluice_tests::moto::Moto;
use sluice_tests::{Cluster, make_repo, output_text};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt};

fn store(moto: &Moto, prefix: &str, cache: &Path) -> BlobStore {
    BlobStore::open_s3(cache, moto.config(prefix), "artifacts").expect("opening the S3 store")
}

fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8).collect()
}

async fn read_all(store: &BlobStore, digest: &str) -> anyhow::Result<Vec<u8>> {
    let (mut reader, _) = store.open_blob(digest, 0).await?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

/// A reader that gives `left` bytes of `data`, then fails like a dropped connection.
struct CutOff<'a> {
    data: &'a [u8],
    left: usize,
}

impl AsyncRead for CutOff<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut")));
        }
        let n = self.left.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_backend_stores_verifies_lists_and_collects() {
    let moto = Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = store(&moto, "unit", dir.path());
    blobs.check().await.unwrap();

    // put, contains, size, read back.
    let kept = blobs.put_bytes(b"kept").unwrap();
    let dropped = blobs.put_bytes(b"dropped").unwrap();
    assert!(blobs.contains(&kept) && blobs.size_of(&kept) == Some(4));
    assert_eq!(read_all(&blobs, &kept).await.unwrap(), b"kept");
    assert!(!blobs.contains(&"0".repeat(64)));
    assert!(read_all(&blobs, &"0".repeat(64)).await.unwrap_err().to_string().contains("no blob"));

    // A stream is verified before it lands; a wrong digest or size leaves nothing.
    let data = bytes(100_000, 1);
    let digest = hex::encode(Sha256::digest(&data));
    blobs.put_stream(&digest, data.len() as u64, 0, &mut &data[..]).await.unwrap();
    assert_eq!(read_all(&blobs, &digest).await.unwrap(), data);
    let wrong = "1".repeat(64);
    let err = blobs.put_stream(&wrong, data.len() as u64, 0, &mut &data[..]).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!blobs.contains(&wrong));
    let err = blobs.put_stream(&wrong, 99, 0, &mut &data[..]).await.unwrap_err();
    assert!(err.to_string().contains("longer than the announced 99"), "{err}");

    // A range read from an offset (an agent resuming a download).
    let (mut tail, size) = blobs.open_blob(&digest, 99_000).await.unwrap();
    let mut rest = Vec::new();
    tail.read_to_end(&mut rest).await.unwrap();
    assert_eq!((size, &rest[..]), (100_000, &data[99_000..]));
    assert!(blobs.open_blob(&digest, 100_001).await.is_err());
    let (mut end, size) = blobs.open_blob(&digest, 100_000).await.unwrap();
    assert_eq!((size, end.read(&mut [0u8; 8]).await.unwrap()), (100_000, 0), "resumed at its very end");

    // Garbage: nothing is old enough yet; then what `keep` does not name goes.
    let keep: HashSet<String> = [kept.clone(), digest.clone()].into();
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(blobs.collect_garbage(&keep, past).unwrap(), (0, 0));
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(blobs.collect_garbage(&keep, future).unwrap(), (1, 7));
    assert!(blobs.contains(&kept) && !blobs.contains(&dropped));

    // A blob an upload found stored (and so did not send) is marked used:
    // a collection whose cut-off came before keeps it.
    let found = blobs.put_bytes(b"found by an upload").unwrap();
    let before = SystemTime::now() + Duration::from_secs(2);
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(blobs.upload_offset(&found, 18).await.unwrap(), 18, "stored: nothing to send");
    assert_eq!(blobs.collect_garbage(&HashSet::new(), before).unwrap().0, 2, "kept and the stream, not the one found");
    assert!(blobs.contains(&found));

    // Another prefix of the same bucket is another store: never collected from here.
    let other = store(&moto, "other", &dir.path().join("other"));
    let theirs = other.put_bytes(b"theirs").unwrap();
    blobs.collect_garbage(&HashSet::new(), future).unwrap();
    assert!(other.contains(&theirs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_more_than_a_page_is_collected_whole() {
    let moto = Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = store(&moto, "many", dir.path());
    // S3 lists 1,000 keys a page.
    let digests: Vec<String> = (0..1_010u32).map(|i| blobs.put_bytes(format!("blob {i}").as_bytes()).unwrap()).collect();
    let keep: HashSet<String> = [digests[1_005].clone()].into();
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(blobs.collect_garbage(&keep, future).unwrap().0, 1_009);
    assert!(blobs.contains(&digests[1_005]) && !blobs.contains(&digests[0]) && !blobs.contains(&digests[1_009]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_cut_off_resumes_from_its_last_whole_part_through_another_controller() {
    let moto = Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = store(&moto, "mp", &dir.path().join("first"));
    let second = store(&moto, "mp", &dir.path().join("second"));
    let data = bytes(2 * PART_SIZE + 1_234_567, 7);
    let (digest, size) = (hex::encode(Sha256::digest(&data)), data.len() as u64);
    assert_eq!(first.upload_offset(&digest, size).await.unwrap(), 0);

    // Cut off in the second part: the first part stays.
    let cut = PART_SIZE + 1_000_000;
    let err = first.put_stream(&digest, size, 0, &mut ReadChunks(CutOff { data: &data, left: cut })).await.unwrap_err();
    assert!(format!("{err:#}").contains("receiving"), "{err:#}");
    assert!(!first.contains(&digest) && !second.contains(&digest), "nothing half-written is visible");
    assert!(first.has_partial(&digest));
    // Another controller sees the same progress (the record is in the bucket).
    let offset = second.upload_offset(&digest, size).await.unwrap();
    assert_eq!(offset, PART_SIZE as u64);
    // A resume past it is refused and changes nothing.
    let err = second.put_stream(&digest, size, offset + 10, &mut &data[offset as usize + 10..]).await.unwrap_err();
    assert!(err.to_string().contains("ask for the offset"), "{err}");
    // A sender going back before it is fine (the bytes here are kept).
    second.put_stream(&digest, size, offset - 100, &mut &data[offset as usize - 100..]).await.unwrap();
    assert_eq!(first.size_of(&digest), Some(size));
    assert_eq!(read_all(&first, &digest).await.unwrap(), data, "read back and verified through the first");
    assert!(!first.has_partial(&digest), "the record of the upload is gone");

    // Parts that do not hash to the digest: aborted, nothing visible, nothing to resume.
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let err = first.put_stream(&wrong, size, 0, &mut &data[..]).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!first.contains(&wrong));
    assert_eq!(first.upload_offset(&wrong, size).await.unwrap(), 0);

    // A cut-off upload nobody came back for is collected with its parts.
    let other = bytes(PART_SIZE + 10, 9);
    let other_digest = hex::encode(Sha256::digest(&other));
    let len = other.len() as u64;
    first
        .put_stream(&other_digest, len, 0, &mut ReadChunks(CutOff { data: &other, left: PART_SIZE + 5 }))
        .await
        .unwrap_err();
    assert!(first.has_partial(&other_digest));
    let future = SystemTime::now() + Duration::from_secs(3600);
    first.collect_garbage(&[digest.clone()].into(), future).unwrap();
    assert!(!first.has_partial(&other_digest));
    assert_eq!(first.upload_offset(&other_digest, len).await.unwrap(), 0);
    assert!(first.contains(&digest));
}

/// An upload cut off after its last part was recorded, before its check
/// and completion: the parts hold every byte, but the blob is not stored,
/// so a sender is never told "all of it" (it would send nothing and name a
/// blob that never appears). It sends the last byte, and the upload
/// completes. Also when the last part is the blob's shorter tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_holding_every_byte_are_not_taken_for_the_blob() {
    let moto = Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = store(&moto, "whole", &dir.path().join("cache"));
    for (len, seed) in [(2 * PART_SIZE, 21), (PART_SIZE + 64_000, 22)] {
        let data = bytes(len, seed);
        let (digest, size) = (hex::encode(Sha256::digest(&data)), data.len() as u64);
        // Every byte arrives, then the connection drops before the end.
        let err = blobs.put_stream(&digest, size, 0, &mut ReadChunks(CutOff { data: &data, left: len })).await.unwrap_err();
        assert!(format!("{err:#}").contains("receiving"), "{len}: {err:#}");
        assert!(!blobs.contains(&digest), "{len}: nothing unchecked is visible");
        let offset = blobs.upload_offset(&digest, size).await.unwrap();
        assert_eq!(offset, size - 1, "{len}: the last byte is left to send");
        blobs.put_stream(&digest, size, offset, &mut &data[offset as usize..]).await.unwrap();
        assert_eq!(read_all(&blobs, &digest).await.unwrap(), data, "{len}: completed and verified");
        assert_eq!(blobs.upload_offset(&digest, size).await.unwrap(), size, "{len}: stored, nothing to send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_changed_in_the_bucket_is_refused_on_read() {
    let moto = Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = store(&moto, "tamper", dir.path());
    let digest = blobs.put_bytes(b"the real bytes").unwrap();
    let s3 = blobs.s3().unwrap();
    s3.put_object(&s3.blob_key(&digest), b"the evil bytes".to_vec()).await.unwrap();
    let err = read_all(&blobs, &digest).await.unwrap_err();
    assert!(err.to_string().contains("does not match its digest"), "{err}");
    let err = blobs.local_file(&digest).await.unwrap_err();
    assert!(format!("{err:#}").contains("does not match its digest"), "{err:#}");
    assert!(!blobs.path(&digest).unwrap().exists(), "nothing unverified in the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_clear_error_and_loses_nothing() {
    let moto = Moto::with_auth().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = store(&moto, "keys", &dir.path().join("good"));
    let digest = good.put_bytes(b"stored with the right key").unwrap();
    let mut config = moto.config("keys");
    config.secret_access_key = "not-the-secret".into();
    let bad = BlobStore::open_s3(&dir.path().join("bad"), config, "artifacts").unwrap();
    let err = format!("{:#}", bad.check().await.unwrap_err());
    assert!(err.contains("cannot be reached") && err.contains("403"), "{err}");
    let err = format!("{:#}", bad.put_bytes(b"anything").unwrap_err());
    assert!(err.contains("403"), "{err}");
    let data = bytes(1000, 3);
    let d = hex::encode(Sha256::digest(&data));
    assert!(bad.put_stream(&d, 1000, 0, &mut &data[..]).await.is_err());
    // (A collection with the wrong key removes nothing either, but moto
    // refuses any key's listing by prefix: see `sluice_tests::moto`.)
    assert!(good.contains(&digest) && !good.contains(&d));
    // An unreachable endpoint says so.
    let mut config = moto.config("keys");
    config.endpoint = Some("http://127.0.0.1:1".into());
    let gone = BlobStore::open_s3(&dir.path().join("gone"), config, "artifacts").unwrap();
    let err = format!("{:#}", gone.check().await.unwrap_err());
    assert!(err.contains("unreachable"), "{err}");
}

/// Source checks `repo` out; Build writes a 64 MiB file of random bytes
/// (a multipart upload) and a small one; Test gets Build's artifact from
/// the bucket through the controller and checks both files.
fn pipeline(repo: &Path) -> String {
    let shell = |name: &str, commands: &str, input: &str, output: &str| {
        serde_json::json!({"name": name,
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": commands},
            "inputArtifacts": [{"name": input}],
            "outputArtifacts": if output.is_empty() { serde_json::json!([]) } else { serde_json::json!([{"name": output, "files": ["out/**"]}]) },
            "capabilities": {"exec": ["sh"]}})
    };
    serde_json::json!({"pipeline": {"name": "big", "stages": [
        {"name": "Source", "actions": [{"name": "Checkout",
            "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": repo.display().to_string(), "Branch": "main"}, "pollIntervalSeconds": 0,
            "outputArtifacts": [{"name": "src"}], "capabilities": {"exec": ["git"]}}]},
        {"name": "Build", "actions": [shell("Make",
            "mkdir -p out && head -c 67108864 /dev/urandom > out/big && sha256sum out/big > out/big.sum && cat hello.txt > out/hello",
            "src", "bin")]},
        {"name": "Test", "actions": [shell("Check",
            "sha256sum -c out/big.sum && test \"$(wc -c < out/big)\" = 67108864 && test \"$(cat out/hello)\" = hi",
            "bin", "")]}
    ]}})
    .to_string()
}

#[test]
fn a_pipeline_keeps_its_artifacts_in_the_bucket_and_another_controller_reads_them() {
    let moto = Moto::start().unwrap();
    let cluster = Cluster::new().artifacts_s3(&moto, "ci/one").agent(&[]).start().unwrap();
    // Where the agents may read (they grant the cluster's directory).
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hi\n")]);
    cluster.wait_for_agents(1).unwrap();
    let id = cluster.create_pipeline("big", &pipeline(&repo));
    let e = cluster.execution_end("big", &id, Duration::from_secs(300));
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());

    let digest_of =
        |stage: usize| e["stages"][stage]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string();
    let (src, bin) = (digest_of(0), digest_of(1));
    // In the bucket, not on the controller's disk.
    let reader = tempfile::tempdir().unwrap();
    let elsewhere = store(&moto, "ci/one", reader.path());
    let size = elsewhere.size_of(&bin).expect("Build's artifact is in the bucket");
    assert!(size > 64 << 20, "{size}");
    let local = cluster.data_dir().join("artifacts").join(&bin[..2]).join(&bin);
    assert!(!local.exists(), "the artifact is not kept on the controller's disk");

    // Downloaded through the REST path (the console's link ends there too).
    let file = cluster.dir.path().join("bin.tar");
    let out = cluster.sluice(&["execution", "artifact", "big", &id, "bin", "--to", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(hex::encode(Sha256::digest(std::fs::read(&file).unwrap())), bin);

    // Read through another controller: a second one on the same bucket
    // prefix (its own store) gets the bytes the first one stored.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let read = runtime.block_on(read_all(&elsewhere, &bin)).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&read)), bin);

    // The backup copies the store and says where the blobs are.
    let to = tempfile::tempdir().unwrap();
    let target = to.path().join("backup");
    let out = cluster.sluice(&["backup", "--to", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(output_text(&out).contains("s3://sluice-artifacts/ci/one"), "{}", output_text(&out));
    let manifest: Value = serde_json::from_slice(&std::fs::read(target.join("backup.json")).unwrap()).unwrap();
    assert_eq!(manifest["blobsIn"], "s3://sluice-artifacts/ci/one", "{manifest}");
    assert!(manifest["artifacts"].as_u64().unwrap() >= 2, "{manifest}");
    assert!(!target.join("artifacts").exists(), "the bucket is not copied");

    // The attacker's side: the source archive changed in the bucket is
    // refused when downloaded, with the reason.
    let s3 = elsewhere.s3().unwrap();
    runtime.block_on(s3.put_object(&s3.blob_key(&src), b"not the source".to_vec())).unwrap();
    let file = cluster.dir.path().join("src.tar");
    let out = cluster.sluice(&["execution", "artifact", "big", &id, "src", "--to", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("does not match its digest"), "{}", output_text(&out));
}

#[test]
fn a_wrong_key_or_an_open_config_file_stops_the_controller_with_the_reason() {
    let moto = Moto::with_auth().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let controller = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut command = std::process::Command::new(sluice_tests::bin("sluice"));
        command.args(["controller", "--data-dir"]).arg(dir.path().join("data")).args(moto.controller_args("bad")).args(args);
        for (k, v) in moto.controller_env() {
            command.env(k, v);
        }
        for (k, v) in extra_env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let out = controller(&[], &["--check-config"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = controller(&[("AWS_SECRET_ACCESS_KEY", "wrong")], &["--check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("403"), "{}", output_text(&out));
    let out = controller(&[("AWS_SECRET_ACCESS_KEY", "wrong")], &["--api", "127.0.0.1:0", "--fleet", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("cannot be reached"), "{}", output_text(&out));

    // The secret from a config file others may read is refused.
    let file = dir.path().join("controller.toml");
    std::fs::write(&file, format!("s3-secret-access-key = \"{}\"\n", moto.secret_access_key)).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = ["--config", file.to_str().unwrap(), "--check-config"];
    let out = controller(&[("AWS_SECRET_ACCESS_KEY", "")], &args);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("readable by others"), "{}", output_text(&out));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = controller(&[("AWS_SECRET_ACCESS_KEY", "")], &args);
    assert!(out.status.success(), "{}", output_text(&out));
}

/// `sluice_artifact_bytes_total{direction="in"}` from a `--metrics` listener.
fn bytes_in(metrics: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let line = text.lines().find(|l| l.starts_with("sluice_artifact_bytes_total{direction=\"in\"}")).expect("the metric");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// What resumable means at the fleet protocol's level: an agent asks
/// `UploadOffset` before it sends, and the controller answers the end of
/// the last whole part in the bucket. An agent killed in the middle of its
/// upload leaves parts; the action runs again on another agent, makes the
/// same bytes, and sends only what the bucket lacks.
#[test]
fn an_upload_cut_off_with_its_agent_goes_on_from_the_parts_in_the_bucket() {
    let moto = Moto::start().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let mut cluster = Cluster::new()
        .artifacts_s3(&moto, "ci/resume")
        .controller_args(&["--lease-timeout", "5s", "--metrics", &metrics])
        .agent(&[])
        .start()
        .unwrap();
    let repo = cluster.dir.path().join("repo");
    make_repo(&repo, &[("hello.txt", "hi\n")]);
    cluster.wait_for_agents(1).unwrap();
    // The same 64 MiB on every run: the archive, and so its digest, is the same.
    let declaration = serde_json::json!({"pipeline": {"name": "cut", "stages": [
        {"name": "Source", "actions": [{"name": "Checkout",
            "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
            "configuration": {"Url": repo.display().to_string(), "Branch": "main"}, "pollIntervalSeconds": 0,
            "outputArtifacts": [{"name": "src"}], "capabilities": {"exec": ["git"]}}]},
        {"name": "Build", "actions": [{"name": "Make",
            "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
            "configuration": {"Commands": "mkdir -p out && head -c 67108864 /dev/zero > out/big"},
            "inputArtifacts": [{"name": "src"}], "outputArtifacts": [{"name": "bin", "files": ["out/**"]}],
            "retryOnAgentLost": true, "capabilities": {"exec": ["sh"]}}]}
    ]}})
    .to_string();
    let id = cluster.create_pipeline("cut", &declaration);
    let reader = tempfile::tempdir().unwrap();
    let bucket = store(&moto, "ci/resume", reader.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    sluice_tests::wait_until("a part of Build's upload in the bucket", Duration::from_secs(180), || {
        let uploads = runtime.block_on(bucket.s3().unwrap().list("uploads/")).ok()?;
        (!uploads.is_empty()).then_some(())
    })
    .unwrap();
    cluster.kill_agent(0);
    cluster.add_agent(&[]).unwrap();
    let e = cluster.execution_end("cut", &id, Duration::from_secs(300));
    assert_eq!(e["pipelineExecution"]["status"], "Succeeded", "{e}\n{}", cluster.controller_log());
    let digest =
        |stage: usize| e["stages"][stage]["actions"][0]["outputArtifacts"][0]["digest"].as_str().unwrap().to_string();
    let (src, bin) = (bucket.size_of(&digest(0)).unwrap(), bucket.size_of(&digest(1)).unwrap());
    let received = bytes_in(&metrics) as u64;
    // Uploads count when they complete: the source, then Build's archive
    // less the whole parts the killed agent had sent.
    assert!(received <= src + bin - PART_SIZE as u64, "received {received} of {src} + {bin}: the upload started over");
    assert!(runtime.block_on(bucket.s3().unwrap().list("uploads/")).unwrap().is_empty(), "the record of the upload is gone");
}
