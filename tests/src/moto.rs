//! A real S3-compatible server for the artifact-store tests (issue 18,
//! s3): moto's server from PyPI (`moto` with Flask), in a virtualenv of its
//! own under the target directory, started on a free loopback port and
//! stopped when the [`Moto`] is dropped. `.ci/run` creates the virtualenv;
//! a test run without it creates it once (needs `python3` with `venv` and
//! the package index), as `aws.rs` does for boto3.
//!
//! [`Moto::with_auth`] enforces credentials: the server starts with
//! `INITIAL_NO_AUTH_ACTION_COUNT`, the harness spends those first requests
//! on the bucket and an IAM user allowed `s3:*` with an access key, and
//! every request after must be signed with that key, so a wrong key is
//! refused as AWS would refuse it. [`Moto::start`] accepts any key: moto
//! 5.1 checks the signature of a request whose query holds an encoded `/`
//! (ListObjectsV2 with `prefix=a%2Fb`) against the decoded query, so it
//! refuses correct signatures there (boto3's too), and garbage collection
//! lists by prefix. The signing of such requests is checked against the
//! controller's own SigV4 verifier instead (`aws/sigv4/tests.rs`).

use anyhow::{Context as _, Result, bail};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The packages, pinned: a test that passes today passes tomorrow. moto's
/// S3 (and the IAM it checks keys against) and the server's Flask, not
/// `moto[server]`, which pulls every service's dependencies: 46 s to
/// install here rather than 334 s.
pub const PACKAGES: &[&str] = &["moto[s3]==5.1.18", "flask==3.1.3", "flask-cors==6.0.5"];

/// Requests served without authentication: the bucket, the user, its
/// policy and its access key.
const SETUP_REQUESTS: u32 = 4;

/// The virtualenv's directory: `SLUICE_S3_VENV`, else `s3-venv` in the
/// target directory the test runs from.
pub fn venv_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_S3_VENV") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe.ancestors().nth(3).expect("the test runs from target/<profile>/deps");
    target.join("s3-venv")
}

/// moto's server, installed on the first call (one process at a time,
/// under a file lock).
pub fn server() -> Result<PathBuf> {
    let venv = venv_dir();
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(venv.parent().unwrap_or(Path::new("."))).context("create the target directory")?;
    let lock_path = venv.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock().context("lock the s3 virtualenv")?;
    if !bin.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv (needs python3 with venv)")?;
        run(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PACKAGES),
            &format!("pip install {}", PACKAGES.join(" ")),
        )?;
    }
    Ok(bin)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A running moto server with one bucket and one access key.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// A server that accepts any key (see the module's note).
    pub fn start() -> Result<Self> {
        Self::launch(false)
    }

    /// A server that refuses every request not signed with its key.
    pub fn with_auth() -> Result<Self> {
        Self::launch(true)
    }

    fn launch(auth: bool) -> Result<Self> {
        let bin = server()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(bin);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if auth {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS.to_string());
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting moto_server")?;
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "sluice-artifacts".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            port,
        };
        crate::wait_until("moto_server listening", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        moto.setup()?;
        Ok(moto)
    }

    /// The bucket and the key, in the requests served without authentication.
    fn setup(&mut self) -> Result<()> {
        let (status, body) = self.raw("PUT", &format!("/{}", self.bucket), "s3")?;
        if status != 200 {
            bail!("creating the bucket: {status} {body}");
        }
        self.raw("GET", "/?Action=CreateUser&UserName=sluice&Version=2010-05-08", "iam")?;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        let encoded: String = policy
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let path =
            format!("/?Action=PutUserPolicy&UserName=sluice&PolicyName=s3&PolicyDocument={encoded}&Version=2010-05-08");
        let (status, body) = self.raw("GET", &path, "iam")?;
        if status != 200 {
            bail!("allowing the user s3:*: {status} {body}");
        }
        let (_, body) = self.raw("GET", "/?Action=CreateAccessKey&UserName=sluice&Version=2010-05-08", "iam")?;
        let field = |tag: &str| -> Result<String> {
            let open = format!("<{tag}>");
            let start = body.find(&open).with_context(|| format!("no {tag} in {body}"))? + open.len();
            let end = body[start..].find('<').context("unterminated")? + start;
            Ok(body[start..end].to_string())
        };
        self.access_key_id = field("AccessKeyId")?;
        self.secret_access_key = field("SecretAccessKey")?;
        Ok(())
    }

    /// One unauthenticated request (moto routes it by the service named in
    /// an unchecked `Authorization` header); the status and the body.
    fn raw(&self, method: &str, path: &str, service: &str) -> Result<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
        );
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    }

    /// The backend's settings for blobs under `prefix` of the bucket.
    pub fn config(&self, prefix: &str) -> sluice::blobs::s3::S3Config {
        sluice::blobs::s3::S3Config {
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: None,
        }
    }

    /// `sluice controller`'s flags and environment for artifacts under `prefix`.
    pub fn controller_args(&self, prefix: &str) -> Vec<String> {
        vec![
            "--artifacts".into(),
            format!("s3://{}/{prefix}", self.bucket),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-path-style".into(),
        ]
    }

    pub fn controller_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_access_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}
