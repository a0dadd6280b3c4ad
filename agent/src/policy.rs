//! The agent's own consent: what this host lets plugins do, whatever a
//! pipeline grants. A capability works only when the plugin declares it,
//! the pipeline action grants it and this policy permits it.
//!
//! `sluice-agent --policy FILE` takes a JSON document:
//!
//! ```json
//! {"exec": ["git", "sh"], "http": ["*.example.com:443"], "secrets": ["*"],
//!  "env": ["RUSTFLAGS"], "fs": ["/srv/www"], "net": ["tcp:443", "tcp-bind:*"]}
//! ```
//!
//! `exec`, `secrets` and `env` list names (`*`: any); `http` lists
//! `host:port` patterns (see `sluice_runtime::net`: `*`, `*.domain`, names,
//! IP addresses and CIDR blocks; a grant must lie inside one); `fs` lists
//! directories a granted path must lie in; `net` lists TCP ports host
//! programs may use (`tcp:PORT` to connect, `tcp-bind:PORT` to listen, `*`
//! for any port of the kind, or `*` alone for any). A kind left out permits
//! nothing.
//! Without `--policy`, the agent permits what its controller grants.
//!
//! `publishers` names the plugin publishers this host trusts, each with its
//! ed25519 public key (a `PUBLIC KEY` PEM, the one base64 line of its body,
//! or the absolute path of a PEM file):
//!
//! ```json
//! {"publishers": {"acme": "MCowBQYDK2VwAyEA..."}}
//! ```
//!
//! When it names any, the agent runs only plugins whose signature verifies
//! with one of these keys for the component's digest, checked before the
//! plugin is compiled or taken from the compile cache; the controller's
//! word about who signed counts for nothing. The built-in plugins of this
//! agent's own release are part of its binary and exempt.

use anyhow::{Context as _, Result};
use serde::Deserialize;
use sluice_protocol::{Grants, PluginRef};
use sluice_runtime::net::{Endpoint, parse_grants};
use sluice_runtime::sandbox::NetGrant;
use sluice_runtime::signature::{PublicKey, Signature};
use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub http: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub fs: Vec<String>,
    /// Trusted plugin publishers: name to public key.
    #[serde(default)]
    pub publishers: BTreeMap<String, String>,
    /// `publishers`, parsed by [`Policy::load`].
    #[serde(skip)]
    trusted: Vec<(String, PublicKey)>,
    /// Digests of this release's built-in plugins, exempt from `publishers`.
    #[serde(skip)]
    builtins: HashSet<String>,
    #[serde(default)]
    pub net: Vec<String>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading policy {}", path.display()))?;
        let mut policy: Policy =
            serde_json::from_str(&text).with_context(|| format!("policy {} is not valid", path.display()))?;
        for (name, key) in &policy.publishers {
            let key = if key.starts_with('/') {
                std::fs::read_to_string(key)
                    .with_context(|| format!("policy {}: reading the key of publisher {name}", path.display()))?
            } else {
                key.clone()
            };
            let key =
                PublicKey::parse(&key).map_err(|e| anyhow::anyhow!("policy {}: publisher {name}: {e}", path.display()))?;
            policy.trusted.push((name.clone(), key));
        }
        if !policy.trusted.is_empty() {
            policy.builtins = sluice_builtins::BUILTINS.iter().map(|b| sluice_runtime::digest(b.wasm)).collect();
        }
        parse_grants(&policy.http).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
        let net: Vec<String> = policy.net.iter().filter(|n| n.as_str() != "*").cloned().collect();
        sluice_runtime::sandbox::parse_net(&net).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
        for dir in &policy.fs {
            if !Path::new(dir).is_absolute() {
                anyhow::bail!("policy {}: fs entry {dir:?} must be an absolute directory", path.display());
            }
        }
        Ok(policy)
    }

    /// The grants this agent lets through, and a line per denial for the
    /// action's log.
    pub fn apply(&self, granted: &Grants) -> (Grants, Vec<String>) {
        let mut denied = Vec::new();
        let mut keep = |kind: &str, list: &[String], ok: &dyn Fn(&str) -> bool| -> Vec<String> {
            list.iter()
                .filter(|g| {
                    let allowed = ok(g);
                    if !allowed {
                        denied.push(format!("this agent's policy does not permit {kind} {g:?}"));
                    }
                    allowed
                })
                .cloned()
                .collect()
        };
        let named = |allowed: &[String]| {
            let allowed = allowed.to_vec();
            move |g: &str| allowed.iter().any(|a| a == "*" || a == g)
        };
        let exec = keep("exec", &granted.exec, &named(&self.exec));
        let secrets = keep("secret", &granted.secrets, &named(&self.secrets));
        let env = keep("env", &granted.env, &named(&self.env));
        let http_allowed: Vec<Endpoint> = self.http.iter().filter_map(|a| a.parse().ok()).collect();
        let http = keep("http", &granted.http, &move |g: &str| {
            g.parse::<Endpoint>().is_ok_and(|g| http_allowed.iter().any(|a| a.covers(&g)))
        });
        let fs_allowed = self.fs.clone();
        let fs = keep("fs", &granted.fs, &move |g: &str| fs_allowed.iter().any(|dir| inside(Path::new(g), Path::new(dir))));
        let net_any = self.net.iter().any(|n| n == "*");
        let net_allowed: Vec<NetGrant> = self.net.iter().filter_map(|n| n.parse().ok()).collect();
        let net = keep("net", &granted.net, &move |g: &str| {
            net_any || g.parse::<NetGrant>().is_ok_and(|g| net_allowed.iter().any(|a| a.covers(&g)))
        });
        (Grants { exec, http, secrets, env, fs, net }, denied)
    }
}

impl Policy {
    /// Whether this agent may run the plugin: `Ok(Some(publisher))` when
    /// its signature verifies with a key of the policy, `Ok(None)` when the
    /// policy names no publishers or the plugin is one of this release's
    /// built-ins, and the reason otherwise. Only the digest is looked at:
    /// the bytes are checked against it wherever they are loaded.
    pub fn check_plugin(&self, plugin: &PluginRef) -> Result<Option<String>, String> {
        if self.trusted.is_empty() || self.builtins.contains(&plugin.digest) {
            return Ok(None);
        }
        let name = format!("plugin {}@{} (sha256:{})", plugin.provider, plugin.version, plugin.digest);
        let names: Vec<&str> = self.trusted.iter().map(|(n, _)| n.as_str()).collect();
        let required = format!("this agent's policy runs only plugins signed by {}", names.join(", "));
        let Some(text) = &plugin.signature else {
            return Err(format!("{name} is not signed; {required}"));
        };
        let signature = Signature::parse(text).map_err(|e| format!("{name}: {e}; {required}"))?;
        match signature.verify(&plugin.digest, &self.trusted) {
            Ok(publisher) => Ok(Some(publisher.to_string())),
            Err(e) => Err(format!("{name}: {e}; {required}")),
        }
    }
}

/// Whether `path` lies in `dir`, without `..` tricks.
fn inside(path: &Path, dir: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| matches!(c, Component::ParentDir)) && path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants {
            exec: vec!["git".into(), "curl".into()],
            http: vec!["api.example.com:443".into(), "evil.test:80".into()],
            secrets: vec!["TOKEN".into()],
            env: vec!["HOME".into()],
            fs: vec!["/srv/www/site".into(), "/etc".into(), "/srv/www/../../etc".into()],
            net: vec!["tcp:443".into(), "tcp:5432".into()],
        }
    }

    #[test]
    fn the_policy_keeps_only_what_it_permits_and_says_what_it_denied() {
        let policy: Policy = serde_json::from_str(
            r#"{"exec": ["git"], "http": ["*.example.com:443"], "secrets": ["*"], "fs": ["/srv/www"]}"#,
        )
        .unwrap();
        let (kept, denied) = policy.apply(&grants());
        assert_eq!(kept.exec, ["git"]);
        assert_eq!(kept.http, ["api.example.com:443"]);
        assert_eq!(kept.secrets, ["TOKEN"]);
        assert!(kept.env.is_empty(), "env left out permits nothing");
        assert_eq!(kept.fs, ["/srv/www/site"]);
        assert!(denied.iter().any(|d| d.contains("exec \"curl\"")), "{denied:?}");
        assert!(denied.iter().any(|d| d.contains("fs \"/srv/www/../../etc\"")), "{denied:?}");
        assert!(kept.net.is_empty(), "net left out permits nothing");
        assert_eq!(denied.len(), 7, "{denied:?}");
    }

    #[test]
    fn http_grants_pass_only_inside_a_policy_pattern() {
        let policy: Policy = serde_json::from_str(r#"{"http": ["10.20.0.0/16:8080", "*.corp.example:*"]}"#).unwrap();
        let granted = Grants {
            http: [
                "10.20.3.4:8080",
                "10.20.3.0/24:8080",
                "10.0.0.0/8:8080",
                "10.20.3.4:80",
                "ci.corp.example:443",
                "*:443",
                "bad",
            ]
            .map(String::from)
            .to_vec(),
            ..Grants::default()
        };
        let (kept, denied) = policy.apply(&granted);
        assert_eq!(kept.http, ["10.20.3.4:8080", "10.20.3.0/24:8080", "ci.corp.example:443"]);
        assert_eq!(denied.len(), 4, "{denied:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.json");
        std::fs::write(&file, r#"{"http": ["example.com"]}"#).unwrap();
        let e = format!("{:#}", Policy::load(&file).unwrap_err());
        assert!(e.contains("\"example.com\" is not HOST:PORT"), "{e}");
    }

    fn plugin(digest: &str, signature: Option<String>) -> PluginRef {
        PluginRef {
            provider: "deploy".into(),
            version: "1".into(),
            digest: digest.into(),
            signature,
            publisher: Some("acme".into()),
        }
    }

    #[test]
    fn a_policy_with_publishers_runs_only_plugins_they_signed() {
        use sluice_runtime::signature::SigningKey;
        let (acme, _) = SigningKey::generate().unwrap();
        let (other, _) = SigningKey::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other_pub = dir.path().join("other.pub");
        std::fs::write(&other_pub, other.public_key().to_pem()).unwrap();
        let path = dir.path().join("policy.json");
        let write = |publishers: serde_json::Value| {
            std::fs::write(&path, serde_json::json!({ "publishers": publishers }).to_string()).unwrap();
        };
        write(serde_json::json!({ "acme": acme.public_key().to_line() }));
        let policy = Policy::load(&path).unwrap();
        let digest = sluice_runtime::digest(b"deploy component");
        let signed = |key: &SigningKey, digest: &str| Some(key.sign(digest).unwrap().to_text());

        assert_eq!(policy.check_plugin(&plugin(&digest, signed(&acme, &digest))), Ok(Some("acme".into())));
        let e = policy.check_plugin(&plugin(&digest, None)).unwrap_err();
        assert!(e.contains("is not signed") && e.contains("signed by acme"), "{e}");
        let e = policy.check_plugin(&plugin(&digest, signed(&other, &digest))).unwrap_err();
        assert!(e.contains("not a trusted publisher's"), "{e}");
        // The controller swapped the bytes (another digest) but kept the signature.
        let swapped = sluice_runtime::digest(b"evil component");
        let e = policy.check_plugin(&plugin(&swapped, signed(&acme, &digest))).unwrap_err();
        assert!(e.contains("not for this component"), "{e}");
        let e = policy.check_plugin(&plugin(&digest, Some("{\"format\": 1}".into()))).unwrap_err();
        assert!(e.contains("malformed signature"), "{e}");
        // Built-ins of this release are part of the binary.
        let builtin = sluice_runtime::digest(sluice_builtins::BUILTINS[0].wasm);
        assert_eq!(policy.check_plugin(&plugin(&builtin, None)), Ok(None));

        // No publishers: the policy says nothing about signatures.
        assert_eq!(Policy::default().check_plugin(&plugin(&digest, None)), Ok(None));
        // A key from a file; two publishers, either will do.
        write(serde_json::json!({ "acme": acme.public_key().to_pem(), "other": other_pub }));
        let policy = Policy::load(&path).unwrap();
        assert_eq!(policy.check_plugin(&plugin(&digest, signed(&other, &digest))), Ok(Some("other".into())));
        // A bad key stops the agent at start, naming the publisher.
        write(serde_json::json!({ "acme": "not a key" }));
        let e = format!("{:#}", Policy::load(&path).unwrap_err());
        assert!(e.contains("publisher acme") && e.contains("malformed key"), "{e}");
    }

    #[test]
    fn net_grants_pass_only_for_ports_the_policy_names() {
        let granted = Grants {
            net: ["tcp:443", "tcp:5432", "tcp-bind:0", "tcp-bind:8080"].map(String::from).to_vec(),
            ..Grants::default()
        };
        let policy: Policy = serde_json::from_str(r#"{"net": ["tcp:443", "tcp-bind:*"]}"#).unwrap();
        let (kept, denied) = policy.apply(&granted);
        assert_eq!(kept.net, ["tcp:443", "tcp-bind:0", "tcp-bind:8080"]);
        assert_eq!(denied, ["this agent's policy does not permit net \"tcp:5432\""]);
        let any: Policy = serde_json::from_str(r#"{"net": ["*"]}"#).unwrap();
        assert_eq!(any.apply(&granted).0.net, granted.net);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.json");
        std::fs::write(&file, r#"{"net": ["udp:53"]}"#).unwrap();
        let e = format!("{:#}", Policy::load(&file).unwrap_err());
        assert!(e.contains("unknown kind \"udp\""), "{e}");
    }

    #[test]
    fn a_bad_policy_file_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        std::fs::write(&path, r#"{"exec": ["git"], "network": true}"#).unwrap();
        assert!(format!("{:#}", Policy::load(&path).unwrap_err()).contains("unknown field"));
        std::fs::write(&path, r#"{"fs": ["relative/dir"]}"#).unwrap();
        assert!(format!("{:#}", Policy::load(&path).unwrap_err()).contains("absolute"));
    }
}
