//! Test plugin `hostile@1`: misbehaves on request, so that the host's
//! sandbox, limits and grants can be tested. Never registered as a built-in.
//!
//! Configuration `Mode` picks the misbehaviour:
//!
//! - `trap`: panics (a trap in the host).
//! - `loop`: spins forever without calling the host (the epoch deadline must stop it).
//! - `memory`: allocates 16 MiB chunks, touching every page, until it dies
//!   (the store's memory limit must stop it).
//! - `read-host-path`: reads `Path` (default `/etc/passwd`) and succeeds with
//!   its first line; the sandbox must make this fail.
//! - `escape`: tries `<first input>/../../etc/passwd`, then a symlink it
//!   creates in the workspace pointing to `/etc/passwd`; succeeds only if one
//!   of them could be read.
//! - `copy-escape`: plants a symlink to `/etc` with a granted `sh`, then asks
//!   the host (`files.copy`) to copy `/etc/passwd` through it into an output.
//! - `copy-into-link`: plants a symlink to the host directory `Path` in the
//!   destination of a host copy and copies a tree through it.
//! - `exec`: runs `Program` (default `sh`) with `Args` (one per line, default
//!   `-c` and `echo pwned`); succeeds with its stdout if the host let it run.
//! - `http`: GETs `Url` through the SDK's HTTP client and succeeds with
//!   `HTTP <status>`; an error (the host's refusal, a refused connection)
//!   fails the action with the SDK's message.
//! - `giant-output`: writes `Bytes` bytes (default 64 MiB) into
//!   `giant.bin` in the first output artifact (the host's artifact limits
//!   must stop it).
//! - `sleep`: sleeps for an hour in `std::thread::sleep` (a blocking
//!   host call: the action's deadline must stop it all the same).
//! - `stuck-body`: writes an HTTP request body that is never sent, so its
//!   second blocking write waits forever (the deadline must stop it).
//! - `request-flood`: sends `Count` (100) requests to `Authority` at once
//!   through raw wasi:http, then waits for them; the summary counts them.
//! - `leak-fields`: reads the secret `TOKEN` and puts it, in every encoding
//!   the host must mask (as is, base64 after a `user:` prefix and after two
//!   bytes, base64url, hex in both cases, percent-encoded, JSON-escaped),
//!   into the field `Field` names: `summary` (with output variables and an
//!   external URL), `failure`, `in-progress` (the in-progress summary, then
//!   succeeds) or `long-line` (one log line of 64 KiB whose cut falls inside
//!   the secret).
//! - `ok`: succeeds with summary "ok".
//!
//! It declares `exec: ["sh"]` and `http: ["*"]` so that grant tests can run
//! `sh` and make requests both with and without the action's grant. This
//! crate knows only the SDK.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use sluice_plugin_sdk::http::Request;
use sluice_plugin_sdk::process::Command;
use sluice_plugin_sdk::{
    ActionInfo, Category, Context, Error, Outcome, Plugin, Property, PropertyType,
};

/// Bytes allocated per step in `memory` mode.
const CHUNK: usize = 16 << 20;

/// The page size of wasm linear memory: one write per page commits it.
const PAGE: usize = 64 << 10;

/// What `giant-output` writes without `Bytes`: more than any artifact
/// limit a test sets, little enough to write in seconds.
const GIANT_OUTPUT_BYTES: u64 = 64 << 20;

/// How long `sleep` sleeps: far past any deadline a test sets.
const SLEEP: Duration = Duration::from_secs(3600);

const MODES: &str = "trap, loop, memory, recursion, leak-secret, leak-fields, log-flood, read-host-path, escape, \
    copy-escape, copy-into-link, exec, http, giant-output, sleep, stuck-body, request-flood, ok";

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> ActionInfo {
        ActionInfo::new("hostile", "1", Category::Test)
            .description("Misbehaves on request, for sandbox tests; never a built-in")
            .property(Property::required("Mode", format!("One of: {MODES}")))
            .property(Property::optional(
                "Path",
                "For read-host-path: the file to read, /etc/passwd by default",
            ))
            .property(Property::optional(
                "Program",
                "For exec: the program, sh by default",
            ))
            .property(
                Property::optional("Args", "For exec: arguments, one per line")
                    .kind(PropertyType::List),
            )
            .property(Property::optional("Url", "For http: the URL to GET"))
            .property(
                Property::optional(
                    "Bytes",
                    "For giant-output: how many bytes to write, 64 MiB by default",
                )
                .kind(PropertyType::Number),
            )
            .inputs(0, 5)
            .outputs(0, 5)
            .exec(["sh"])
            .http(["*"])
            .secrets(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        match ctx.config.required("Mode")? {
            "trap" => panic!("hostile plugin: trap requested"),
            "recursion" => {
                fn deeper(n: u64, pad: &mut [u8; 256]) -> u64 {
                    pad[(n % 256) as usize] = n as u8;
                    let mut next = [0u8; 256];
                    deeper(n + 1, &mut next) + u64::from(pad[0])
                }
                let mut pad = [0u8; 256];
                Ok(Outcome::succeeded(format!("{}", deeper(0, &mut pad))))
            }
            "leak-secret" => {
                // Every way a plugin might print a secret it was given.
                let value = sluice_plugin_sdk::secrets::get("TOKEN")?;
                println!("stdout: {value}");
                eprintln!("stderr: {value}");
                sluice_plugin_sdk::log::info(format!("log: {value}"));
                sluice_plugin_sdk::log::info(format!("json: {}", value.escape_default()));
                Ok(Outcome::succeeded("leaked (or tried to)"))
            }
            "leak-fields" => leak_fields(&ctx),
            "log-flood" => {
                let line = "flood ".repeat(100);
                for i in 0..200_000u32 {
                    sluice_plugin_sdk::log::info(format!("{i} {line}"));
                }
                Ok(Outcome::succeeded("flooded"))
            }
            "loop" => spin(),
            "memory" => exhaust_memory(),
            "read-host-path" => {
                let path = ctx.config.get_or("Path", "/etc/passwd");
                let text = fs::read_to_string(path)
                    .map_err(|e| Error::new(format!("cannot read \"{path}\": {e}")))?;
                Ok(Outcome::succeeded(first_line(&text)))
            }
            "escape" => escape(&ctx),
            "copy-escape" => copy_escape(&ctx),
            "copy-into-link" => copy_into_link(&ctx),
            "exec" => {
                let program = ctx.config.get_or("Program", "sh");
                let args = match ctx.config.list("Args") {
                    args if args.is_empty() => vec!["-c", "echo pwned"],
                    args => args,
                };
                let output = Command::new(program)
                    .args(args)
                    .cwd(&ctx.workspace)
                    .run_checked()?;
                Ok(Outcome::succeeded(output.stdout_text()))
            }
            "http" => {
                let response = Request::get(ctx.config.required("Url")?).send()?;
                Ok(Outcome::succeeded(format!("HTTP {}", response.status)))
            }
            "giant-output" => giant_output(&ctx),
            "sleep" => {
                std::thread::sleep(SLEEP);
                Ok(Outcome::succeeded("slept an hour"))
            }
            "stuck-body" => stuck_body(),
            "request-flood" => request_flood(&ctx),
            "ok" => Ok(Outcome::succeeded("ok")),
            other => Err(Error::new(format!(
                "configuration \"Mode\": unknown mode {other:?}, expected one of: {MODES}"
            ))),
        }
    }
}

sluice_plugin_sdk::export_plugin!(Hostile);

/// Writes a request body that is never sent: the body's stream holds one
/// chunk, so the second blocking write waits for a reader that never comes.
/// Needs no grant: nothing is sent.
#[cfg(target_arch = "wasm32")]
fn stuck_body() -> Result<Outcome, Error> {
    use wasi::http::types::{Fields, OutgoingRequest};
    let request = OutgoingRequest::new(Fields::new());
    let body = request.body().map_err(|()| Error::new("no request body"))?;
    let stream = body.write().map_err(|()| Error::new("no body stream"))?;
    for _ in 0..2 {
        stream.blocking_write_and_flush(&[0; 4096]).map_err(|e| Error::new(format!("write: {e:?}")))?;
    }
    Ok(Outcome::succeeded("the body was written without a reader"))
}

/// Sends `Count` GET requests to `Authority` (host:port, plain http) at
/// once, without waiting for any, then waits for each; succeeds with how
/// many were answered and how many failed, and the first failure.
#[cfg(target_arch = "wasm32")]
fn request_flood(ctx: &Context) -> Result<Outcome, Error> {
    use wasi::http::outgoing_handler::handle;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let authority = ctx.config.required("Authority")?;
    let count: usize = ctx.config.get_parsed("Count")?.unwrap_or(100);
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for _ in 0..count {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some("/"));
        match handle(request, None) {
            Ok(future) => pending.push(future),
            Err(e) => failed.push(format!("{e:?}")),
        }
    }
    let mut answered = 0;
    for future in pending {
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(_))) => answered += 1,
            Some(Ok(Err(e))) => failed.push(format!("{e:?}")),
            other => failed.push(format!("{other:?}")),
        }
    }
    let first = failed.first().cloned().unwrap_or_default();
    Ok(Outcome::succeeded(format!("{answered} answered, {} failed: {first}", failed.len())))
}

#[cfg(not(target_arch = "wasm32"))]
fn request_flood(_: &Context) -> Result<Outcome, Error> {
    Err(Error::new("request-flood needs wasi:http: it runs only inside a host"))
}

#[cfg(not(target_arch = "wasm32"))]
fn stuck_body() -> Result<Outcome, Error> {
    Err(Error::new("stuck-body needs wasi:http: it runs only inside a host"))
}

/// The secret `TOKEN` in every field `Field` names, in every encoding.
fn leak_fields(ctx: &Context) -> Result<Outcome, Error> {
    let value = sluice_plugin_sdk::secrets::get("TOKEN")?;
    let encodings = leaked_encodings(&value);
    let all = encodings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    match ctx.config.required("Field")? {
        "summary" => {
            let mut outcome = Outcome::succeeded(all).external_url(format!(
                "https://example.com/{}?t={}",
                encodings[0].1, encodings[4].1
            ));
            for (name, leaked) in &encodings {
                outcome = outcome.variable(*name, leaked.clone());
            }
            Ok(outcome.variable(value.clone(), "as a name"))
        }
        "failure" => Err(Error::new(format!("program failed; its stderr ends with: {all}"))),
        "in-progress" if ctx.continuation.is_none() => Ok(Outcome::in_progress("again", 1, all)),
        "in-progress" => Ok(Outcome::succeeded("done")),
        "long-line" => {
            // The secret starts 3 bytes before the 64 KiB cut.
            let line = format!("{}{value} tail", "x".repeat((64 << 10) - 3 - "[info] ".len()));
            sluice_plugin_sdk::log::info(line);
            Ok(Outcome::succeeded("logged"))
        }
        other => Err(Error::new(format!("configuration \"Field\": unknown field {other:?}"))),
    }
}

/// `(name, the value encoded)` for each encoding the host must catch.
fn leaked_encodings(value: &str) -> Vec<(&'static str, String)> {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let percent: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    vec![
        ("raw", value.to_string()),
        ("basic", base64(format!("user:{value}").as_bytes(), STANDARD_ALPHABET)),
        ("shifted", base64(format!("ab{value}").as_bytes(), STANDARD_ALPHABET)),
        ("base64url", base64(value.as_bytes(), URL_ALPHABET)),
        ("percent", percent),
        ("hex", hex.clone()),
        ("HEX", hex.to_uppercase()),
        ("json", format!("{value:?}").trim_matches('"').to_string()),
    ]
}

const STANDARD_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Padded base64, written out so that this test plugin needs no crate for it.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero, so that no allocator shortcut leaves pages untouched.
        let mut chunk = vec![1u8; CHUNK];
        for page in chunk.chunks_mut(PAGE) {
            page[0] = 1;
        }
        hoard.push(std::hint::black_box(chunk));
    }
}

/// Writes `Bytes` bytes into the first output artifact, 1 MiB at a time.
fn giant_output(ctx: &Context) -> Result<Outcome, Error> {
    let total = ctx
        .config
        .get_parsed::<u64>("Bytes")?
        .unwrap_or(GIANT_OUTPUT_BYTES);
    let output = ctx
        .outputs
        .first()
        .ok_or_else(|| Error::new("giant-output needs an output artifact"))?;
    let path = output.path.join("giant.bin");
    let mut file = fs::File::create(&path)?;
    let block = vec![0x5a_u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(Outcome::succeeded(format!(
        "wrote {total} bytes to {}",
        path.display()
    )))
}

/// Plants a symlink to `/etc` with a granted shell, then asks the host to
/// copy through it into an output; succeeds only if the host follows it.
fn copy_escape(ctx: &Context) -> Result<Outcome, Error> {
    Command::new("sh").args(["-c", "ln -s /etc escape"]).cwd(&ctx.workspace).run_checked()?;
    let output = ctx.outputs.first().ok_or_else(|| Error::new("copy-escape needs an output artifact"))?;
    let copied = sluice_plugin_sdk::artifacts::copy(ctx.workspace.join("escape/passwd"), output.path.join("passwd"))?;
    Ok(Outcome::succeeded(format!("escaped via copy: {copied} files")))
}

/// Plants a symlink to `Path` (a host directory) inside the destination of
/// a host copy, then copies a tree whose top directory has the link's name:
/// succeeds only if the host wrote through the link.
fn copy_into_link(ctx: &Context) -> Result<Outcome, Error> {
    let target = ctx.config.required("Path")?;
    let script = format!("mkdir -p s/x d && echo pwned > s/x/PWNED && ln -s '{target}' d/x");
    Command::new("sh").args(["-c", script.as_str()]).cwd(&ctx.workspace).run_checked()?;
    let copied = sluice_plugin_sdk::artifacts::copy(ctx.workspace.join("s"), ctx.workspace.join("d"))?;
    Ok(Outcome::succeeded(format!("copied {copied} files through a link")))
}

fn escape(ctx: &Context) -> Result<Outcome, Error> {
    let mut attempts = Vec::new();
    if let Some(input) = ctx.inputs.first() {
        let path = input.path.join("../../etc/passwd");
        match fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(Outcome::succeeded(format!(
                    "escaped via \"..\": {}",
                    first_line(&text)
                )));
            }
            Err(e) => attempts.push(format!("\"{}\": {e}", path.display())),
        }
    }
    let link = ctx.workspace.join("escape-link");
    #[allow(deprecated)]
    let made = fs::soft_link(Path::new("/etc/passwd"), &link);
    match made.and_then(|()| fs::read_to_string(&link)) {
        Ok(text) => Ok(Outcome::succeeded(format!(
            "escaped via a symbolic link: {}",
            first_line(&text)
        ))),
        Err(e) => {
            attempts.push(format!("symbolic link \"{}\": {e}", link.display()));
            Err(Error::new(format!("no escape: {}", attempts.join("; "))))
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(mode: &str) -> Context {
        Context::for_test(&[("Mode", mode)])
    }

    #[test]
    fn ok_succeeds_and_unknown_modes_fail() {
        assert_eq!(
            Hostile::execute(context("ok")).unwrap(),
            Outcome::succeeded("ok")
        );
        let err = Hostile::execute(context("nice")).unwrap_err();
        assert_eq!(
            err.message(),
            format!("configuration \"Mode\": unknown mode \"nice\", expected one of: {MODES}")
        );
    }

    #[test]
    fn leaked_encodings_are_the_real_ones() {
        let encodings = leaked_encodings("ann:pw?");
        assert_eq!(encodings[1].1, "dXNlcjphbm46cHc/");
        assert_eq!(base64(b"a", STANDARD_ALPHABET), "YQ==");
        assert_eq!(base64(b"ab", STANDARD_ALPHABET), "YWI=");
        assert_eq!(base64(&[0xfb, 0xff], URL_ALPHABET), "-_8=");
        assert_eq!(encodings[4].1, "ann%3Apw%3F");
        assert_eq!(encodings[5].1, "616e6e3a70773f");
    }

    #[test]
    fn http_reports_the_status_or_the_error() {
        use sluice_plugin_sdk::http::testing::{REFUSED, Reply, Server};
        let server = Server::start(|_| Reply::new(418));
        let mut ctx = context("http");
        ctx.config = [("Mode", "http"), ("Url", server.url("/x").as_str())]
            .into_iter()
            .collect();
        assert_eq!(Hostile::execute(ctx.clone()).unwrap().summary(), "HTTP 418");
        let url = format!("http://{REFUSED}/x");
        ctx.config = [("Mode", "http"), ("Url", url.as_str())]
            .into_iter()
            .collect();
        let err = Hostile::execute(ctx).unwrap_err();
        assert_eq!(err.message(), format!("connection refused to {REFUSED}"));
    }

    #[test]
    fn giant_output_writes_the_bytes_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = context("giant-output");
        ctx.config = [("Mode", "giant-output"), ("Bytes", "3000000")]
            .into_iter()
            .collect();
        ctx.outputs = vec![sluice_plugin_sdk::Artifact {
            name: "out".into(),
            path: dir.path().to_path_buf(),
            files: vec![],
        }];
        Hostile::execute(ctx).unwrap();
        let written = fs::metadata(dir.path().join("giant.bin")).unwrap().len();
        assert_eq!(written, 3_000_000);
    }

    #[cfg(unix)]
    #[test]
    fn natively_nothing_stops_it() {
        // Outside a sandbox the misbehaviour works: this is what the host must prevent.
        assert_eq!(
            Hostile::execute(context("exec")).unwrap().summary(),
            "pwned"
        );
        assert!(
            Hostile::execute(context("read-host-path"))
                .unwrap()
                .summary()
                .starts_with("root:")
        );
    }
}
