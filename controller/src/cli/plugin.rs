//! `sluice plugin` (registered plugins: list, push, describe, delete; and
//! the local tools sign, keygen, new) and `sluice publisher` (the keys
//! whose signed plugins the controller trusts).

use super::output::{Table, columns, items, s};
use super::{Ctx, Failure};
use crate::ops::{AddPublisher, DeletePlugin, DescribePlugin, ListPlugins, ListPublishers, RemovePublisher};
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PluginCmd {
    /// List registered plugins.
    List,
    /// Register a plugin component (`provider@version` from its own describe()).
    /// A signature FILE.sig beside it is sent with it (see `plugin sign`).
    Push {
        file: PathBuf,
        /// The signature document (default: FILE.sig when it exists).
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
    },
    /// Sign a plugin component with a publisher's private key: writes a
    /// detached signature (FILE.sig) binding the component's sha256 to the key.
    Sign {
        file: PathBuf,
        /// The publisher's ed25519 private key (PKCS#8 PEM, from `plugin keygen`
        /// or `openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Where to write the signature (default: FILE.sig).
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
    },
    /// Make a publisher key pair: DIR/NAME.key (private, 0600) and DIR/NAME.pub.
    Keygen {
        /// Directory to write the keys into (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// File name of the pair.
        #[arg(long, default_value = "publisher")]
        name: String,
    },
    /// What a registered plugin says about itself: configuration, artifacts, capabilities.
    Describe {
        /// `provider@version`
        plugin: String,
    },
    /// Remove a pushed plugin version no pipeline uses.
    Delete {
        /// `provider@version`
        plugin: String,
    },
    /// Write a new plugin project from a template, with a test, ready to build and push.
    New {
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        // Plugin authors' kit (issue 20, kit).
        /// The plugin's language.
        #[arg(long, value_enum, default_value_t = crate::plugin_template::Lang::Rust)]
        lang: crate::plugin_template::Lang,
        /// Depend on the SDK or kit in this directory instead of the
        /// released one (for developing Sluice itself).
        #[arg(long, value_name = "DIR", env = "SLUICE_PLUGIN_SDK")]
        sdk_path: Option<PathBuf>,
    },
    // Plugin authors' kit (issue 20, kit).
    /// What a component declares (configuration, artifacts, capabilities,
    /// interface version, size, digest), or why a controller and its agents
    /// would refuse it, in the words of `plugin push`. Needs no controller.
    Check { file: PathBuf },
    /// Print the newest `sluice:plugin` WIT (what Python and JavaScript
    /// plugins are built against), or write it to DIR/plugin.wit.
    Wit {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublisherCmd {
    /// Trust a publisher's key for `plugin push` (admin role only).
    Add {
        name: String,
        /// The publisher's public key (PEM, e.g. NAME.pub from `plugin keygen`).
        public_key_file: PathBuf,
    },
    /// List trusted publishers.
    List,
    /// Stop trusting a publisher (plugins it signed stay registered).
    Remove { name: String },
}

pub async fn run(ctx: &Ctx, cmd: PluginCmd) -> Result<i32, Failure> {
    match cmd {
        PluginCmd::List => {
            let out = ctx.client()?.call(ListPlugins {}).await?;
            ctx.output.print(&out, |out| plugin_table().render(items(&out["plugins"])));
        }
        PluginCmd::Describe { plugin } => {
            let out = ctx.client()?.call(DescribePlugin { key: plugin }).await?;
            ctx.output.print(&out, show_description);
        }
        PluginCmd::Delete { plugin } => {
            let out = ctx.client()?.call(DeletePlugin { key: plugin.clone() }).await?;
            ctx.output.print(&out, |_| format!("plugin {plugin} deleted\n"));
        }
        PluginCmd::New { name, dir, lang, sdk_path } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let build = crate::plugin_template::write(&name, &dir, lang, sdk_path.as_deref())
                .map_err(|e| Failure::new(2, format!("{e:#}")))?;
            let made = json!({ "name": name, "dir": dir, "lang": lang.name(), "build": build });
            ctx.output
                .print(&made, |_| format!("wrote {} — build it with: cd {} && {build}\n", dir.display(), dir.display()));
        }
        PluginCmd::Check { file } => {
            let wasm = std::fs::read(&file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
            let report = tokio::task::spawn_blocking(move || crate::plugin_check::check(&wasm))
                .await
                .map_err(|e| Failure::new(1, format!("the check crashed: {e}")))?
                // The exit code and the words of a refused `plugin push`.
                .map_err(|e| Failure::from(crate::ops::OpError::invalid(e)))?;
            ctx.output.print(&report, show_check);
        }
        PluginCmd::Wit { out: None } => print!("{}", crate::plugin_template::WIT),
        PluginCmd::Wit { out: Some(dir) } => {
            let file = dir.join("plugin.wit");
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&file, crate::plugin_template::WIT))
                .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", file.display())))?;
            ctx.output.print(&json!({ "wit": file }), |_| format!("wrote {}\n", file.display()));
        }
        PluginCmd::Push { file, signature } => push(ctx, &file, signature).await?,
        PluginCmd::Sign { file, key, out } => {
            let signed = sign(&file, &key, out)?;
            ctx.output.print(&signed, |v| {
                format!("signed sha256:{} with key {}: {}\n", s(&v["digest"]), s(&v["keyId"]), s(&v["signature"]))
            });
        }
        PluginCmd::Keygen { out, name } => {
            let (key_file, pub_file, key_id) = write_key_pair(&out, &name)?;
            let made = json!({ "privateKey": key_file, "publicKey": pub_file, "keyId": key_id });
            ctx.output.print(&made, |_| {
                format!(
                    "private key: {} (keep it secret)\npublic key:  {}\nkey id:      {key_id}\n",
                    key_file.display(),
                    pub_file.display()
                )
            });
        }
    }
    Ok(0)
}

fn plugin_table() -> Table<Value> {
    columns![Value;
        ("PROVIDER", |p| s(&p["provider"])),
        ("CATEGORY", |p| s(&p["info"]["category"])),
        ("ORIGIN", |p| origin(p).into()),
        ("SIGNED BY", signer),
        ("DIGEST", |p| s(&p["digest"]).chars().take(12).collect()),
    ]
}

fn origin(p: &Value) -> &'static str {
    if p["builtin"] == json!(true) { "built-in" } else { "pushed" }
}

/// Who signed a plugin, for tables: built-ins are part of the binary.
fn signer(p: &Value) -> String {
    match (p["signedBy"].as_str(), p["builtin"] == json!(true)) {
        (Some(publisher), _) => publisher.to_string(),
        (None, true) => "(built-in)".into(),
        (None, false) => "unsigned".into(),
    }
}

fn property_table() -> Table<Value> {
    columns![Value;
        ("PROPERTY", |p| s(&p["name"])),
        ("", |p| if p["required"] == json!(true) { "required".into() } else { "optional".into() }),
        ("TYPE", |p| s(&p["type"])),
        ("DESCRIPTION", |p| s(&p["description"])),
    ]
}

/// `plugin describe` in prose.
fn show_description(out: &Value) -> String {
    let info = &out["info"];
    let mut text =
        format!("{} ({}, {}): {}\n", s(&out["provider"]), s(&info["category"]), origin(out), s(&info["description"]));
    text.push_str(&format!("digest: {}\n", s(&out["digest"])));
    match out["keyId"].as_str() {
        Some(key_id) => text.push_str(&format!("signed by: {} (key {key_id})\n", signer(out))),
        None => text.push_str(&format!("signed by: {}\n", signer(out))),
    }
    if let Some(version) = info["interfaceVersion"].as_str() {
        text.push_str(&format!("built against: sluice:plugin@{version}\n"));
    }
    text.push_str(&property_table().render(items(&info["configuration"])));
    text.push_str(&format!("inputs: {:?}, outputs: {:?}\n", info["inputArtifacts"], info["outputArtifacts"]));
    text.push_str(&format!("capabilities: {}\n", info["capabilities"]));
    text
}

/// `plugin check` in prose.
fn show_check(out: &Value) -> String {
    let info = &out["info"];
    let mut text = format!("{} ({}): {}\n", s(&out["provider"]), s(&info["category"]), s(&info["description"]));
    text.push_str(&format!("built against: sluice:plugin@{} (world {})\n", s(&out["interfaceVersion"]), s(&out["world"])));
    text.push_str(&format!("size: {} bytes\ndigest: {}\n", out["size"], s(&out["digest"])));
    text.push_str(&property_table().render(items(&info["configuration"])));
    let bounds = |b: &Value| format!("{}..{}", b[0], b[1]);
    text.push_str(&format!(
        "artifacts: inputs {}, outputs {}\n",
        bounds(&info["inputArtifacts"]),
        bounds(&info["outputArtifacts"])
    ));
    let capabilities: Vec<String> = ["exec", "http", "secrets", "env", "fs"]
        .iter()
        .filter_map(|kind| {
            let values: Vec<String> = info["capabilities"][kind].as_array()?.iter().map(s).collect();
            (!values.is_empty()).then(|| format!("{kind}: {}", values.join(", ")))
        })
        .collect();
    match capabilities.is_empty() {
        true => text.push_str("capabilities: none\n"),
        false => text.push_str(&format!("capabilities: {}\n", capabilities.join("; "))),
    }
    text.push_str("ok: a component a controller and its agents can run\n");
    text
}

/// `plugin push`: the component, with its signature when there is one.
async fn push(ctx: &Ctx, file: &Path, signature: Option<PathBuf>) -> Result<(), Failure> {
    let wasm = std::fs::read(file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
    let beside = PathBuf::from(format!("{}.sig", file.display()));
    let signature = signature.or_else(|| beside.exists().then_some(beside));
    let signature = match &signature {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::new(2, format!("cannot read signature {}: {e}", path.display())))?,
        ),
    };
    let out = ctx.client()?.push_plugin(wasm, signature.as_deref()).await?;
    ctx.output.print(&out, |out| {
        let verb = if out["created"] == json!(true) { "registered" } else { "already registered" };
        let signed = match out["signedBy"].as_str() {
            Some(publisher) => format!(", signed by {publisher}"),
            None => ", unsigned".into(),
        };
        format!("{} {verb} (digest {}{signed})\n", s(&out["provider"]), s(&out["digest"]))
    });
    Ok(())
}

/// `plugin sign`: writes the signature; returns where, the digest and the key id.
fn sign(file: &Path, key: &Path, out: Option<PathBuf>) -> Result<Value, Failure> {
    let wasm = std::fs::read(file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
    let pem =
        std::fs::read_to_string(key).map_err(|e| Failure::new(2, format!("cannot read key {}: {e}", key.display())))?;
    let signing_key = sluice_runtime::signature::SigningKey::parse(&pem)
        .map_err(|e| Failure::new(2, format!("key {}: {e}", key.display())))?;
    let digest = sluice_runtime::digest(&wasm);
    let signature = signing_key.sign(&digest).map_err(|e| Failure::new(1, e.to_string()))?;
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{}.sig", file.display())));
    std::fs::write(&out, signature.to_text())
        .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", out.display())))?;
    Ok(json!({ "signature": out, "digest": digest, "keyId": signature.key_id() }))
}

/// Writes a new publisher key pair into `dir`: `NAME.key` (created 0600,
/// never over an existing file) and `NAME.pub`; returns both paths and the
/// key id.
fn write_key_pair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf, String), Failure> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(Failure::new(2, format!("key name {name:?} may contain only A-Z a-z 0-9 . _ -")));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::new(1, format!("cannot create {}: {e}", dir.display())))?;
    let (key_file, pub_file) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    for path in [&key_file, &pub_file] {
        if path.exists() {
            return Err(Failure::new(2, format!("{} exists: a key pair is never overwritten", path.display())));
        }
    }
    let (key, pem) = sluice_runtime::signature::SigningKey::generate().map_err(|e| Failure::new(1, e.to_string()))?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()));
    written.map_err(|e| Failure::new(1, format!("cannot write {}: {e}", key_file.display())))?;
    let public = key.public_key();
    std::fs::write(&pub_file, public.to_pem())
        .map_err(|e| Failure::new(1, format!("cannot write {}: {e}", pub_file.display())))?;
    Ok((key_file, pub_file, public.key_id()))
}

pub async fn run_publisher(ctx: &Ctx, cmd: PublisherCmd) -> Result<i32, Failure> {
    match cmd {
        PublisherCmd::Add { name, public_key_file } => {
            let key = std::fs::read_to_string(&public_key_file)
                .map_err(|e| Failure::new(2, format!("cannot read {}: {e}", public_key_file.display())))?;
            let out = ctx.client()?.call(AddPublisher { name: name.clone(), public_key: key }).await?;
            ctx.output.print(&out, |out| format!("publisher {name} trusted (key {})\n", s(&out["keyId"])));
        }
        PublisherCmd::List => {
            let out = ctx.client()?.call(ListPublishers {}).await?;
            ctx.output.print(&out, show_publishers);
        }
        PublisherCmd::Remove { name } => {
            let out = ctx.client()?.call(RemovePublisher { name: name.clone() }).await?;
            ctx.output.print(&out, |_| format!("publisher {name} removed\n"));
        }
    }
    Ok(0)
}

fn show_publishers(out: &Value) -> String {
    let table = columns![Value;
        ("NAME", |p| s(&p["name"])),
        ("KEY ID", |p| s(&p["keyId"])),
        ("ADDED", |p| s(&p["added"])),
        ("BY", |p| s(&p["addedBy"])),
    ];
    let mut text = table.render(items(&out["publishers"]));
    if out["requireSignedPlugins"] == json!(true) {
        text.push_str("this controller accepts only plugins signed by these publishers\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Output;

    #[test]
    fn keygen_then_sign_print_json_a_script_can_read() {
        let dir = std::env::temp_dir().join(format!("sluice-cli-sign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (key_file, pub_file, key_id) = write_key_pair(&dir, "pub1").unwrap();
        assert!(pub_file.exists());
        assert_eq!(write_key_pair(&dir, "pub1").unwrap_err().code, 2, "a key pair is never overwritten");
        let component = dir.join("p.wasm");
        std::fs::write(&component, b"\0asm not really").unwrap();
        let signed = sign(&component, &key_file, None).unwrap();
        let printed: Value = serde_json::from_str(&Output::Json.render(&signed, |_| String::new())).unwrap();
        assert_eq!(printed["keyId"], key_id.as_str());
        assert_eq!(printed["digest"], sluice_runtime::digest(b"\0asm not really").as_str());
        assert_eq!(printed["signature"], format!("{}.sig", component.display()).as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plugin_list_prints_a_table_or_the_reply() {
        let reply = json!({"plugins": [
            {"provider": "git@1", "info": {"category": "Source"}, "builtin": true, "digest": "e7cfc8fbb743aaaa"},
            {"provider": "lint@2", "info": {"category": "Test"}, "signedBy": "acme", "digest": "0123456789abcdef"},
            {"provider": "x@1", "info": {"category": "Build"}, "digest": "ffff"}]});
        let prose = |out: &Value| plugin_table().render(items(&out["plugins"]));
        assert_eq!(
            Output::Table.render(&reply, prose),
            "PROVIDER  CATEGORY  ORIGIN    SIGNED BY   DIGEST\n\
             git@1     Source    built-in  (built-in)  e7cfc8fbb743\n\
             lint@2    Test      pushed    acme        0123456789ab\n\
             x@1       Build     pushed    unsigned    ffff\n"
        );
        let printed: Value = serde_json::from_str(&Output::Json.render(&reply, prose)).unwrap();
        assert_eq!(printed, reply);
    }

    #[test]
    fn publisher_list_says_when_only_signed_plugins_are_accepted() {
        let reply = json!({"publishers": [{"name": "acme", "keyId": "k1", "added": "2026-12-05", "addedBy": "admin"}],
                           "requireSignedPlugins": true});
        assert_eq!(
            show_publishers(&reply),
            "NAME  KEY ID  ADDED       BY\nacme  k1      2026-12-05  admin\n\
             this controller accepts only plugins signed by these publishers\n"
        );
    }
}
