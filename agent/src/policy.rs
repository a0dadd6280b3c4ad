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

use anyhow::{Context as _, Result};
use serde::Deserialize;
use sluice_protocol::Grants;
use sluice_runtime::net::{Endpoint, parse_grants};
use sluice_runtime::sandbox::NetGrant;
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
    #[serde(default)]
    pub net: Vec<String>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading policy {}", path.display()))?;
        let policy: Policy =
            serde_json::from_str(&text).with_context(|| format!("policy {} is not valid", path.display()))?;
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
            http: ["10.20.3.4:8080", "10.20.3.0/24:8080", "10.0.0.0/8:8080", "10.20.3.4:80", "ci.corp.example:443", "*:443", "bad"]
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
