//! Secrets at rest: values are sealed with ChaCha20-Poly1305 under a key
//! kept beside the store (`DATA/secret.key`, mode 0600), so that a copy of
//! the database alone reveals no secret. Each value gets a fresh random
//! nonce and is bound to its name (associated data), so a sealed value
//! moved to another name does not open.
//!
//! Pipelines' secrets (`sluice secret set`) and webhook secrets are sealed
//! the same way. Values leave the controller only inside a job or poll for
//! an action that was granted them, over the agents' mutual-TLS connection.
//!
//! Each secret has a scope: glob patterns of the pipeline names that may
//! grant it ([`Scope`]). A declaration granting a secret outside its scope
//! is refused ([`check_grants`]), and a job or poll of a pipeline outside
//! it never receives the value, even when the scope changed after the
//! pipeline was stored.

use anyhow::{Context as _, Result};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Longest secret value accepted.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Secret names: letters, digits, `_`, `-` and `.`, up to 128 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("secret name {name:?} must be 1 to 128 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("secret name {name:?} may contain only A-Z a-z 0-9 _ - ."));
    }
    Ok(())
}

/// The pipelines that may use a secret: glob patterns of pipeline names
/// (`*` any run of characters, `?` one, `[...]` a class), as written.
#[derive(Debug, Clone)]
pub struct Scope {
    patterns: Vec<String>,
    matcher: globset::GlobSet,
}

/// The scope of every secret stored before secrets had scopes: all
/// pipelines, as those secrets were, so that upgrading breaks nothing.
pub const LEGACY_SCOPE: &str = "*";

impl Scope {
    /// Checks and compiles patterns: at least one, none empty, each a glob.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("a secret's scope names at least one pipeline pattern".into());
        }
        let mut set = globset::GlobSetBuilder::new();
        for pattern in patterns {
            if pattern.trim().is_empty() {
                return Err("a pipeline pattern must not be empty".into());
            }
            let glob = globset::Glob::new(pattern).map_err(|e| format!("pipeline pattern {pattern:?}: {e}"))?;
            set.add(glob);
        }
        let matcher = set.build().map_err(|e| format!("pipeline patterns: {e}"))?;
        Ok(Self { patterns: patterns.to_vec(), matcher })
    }

    /// The scope of a stored secret; one the store holds but that does not
    /// compile (it was checked when it was set) covers no pipeline.
    pub fn stored(patterns: &[String]) -> Self {
        Self::new(patterns).unwrap_or_else(|e| {
            tracing::warn!(patterns = %patterns.join(","), "a stored secret scope is unusable, so it covers nothing: {e}");
            Self { patterns: patterns.to_vec(), matcher: globset::GlobSet::empty() }
        })
    }

    pub fn allows(&self, pipeline: &str) -> bool {
        self.matcher.is_match(pipeline)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Scope {}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.patterns.join(", "))
    }
}

/// Every grant of a secret in a declaration that the secret's scope does
/// not cover, with the JSON path of the grant: in actions and in the
/// `Commands` rules of stage conditions. `scopes` holds the secrets that
/// exist; a grant of a secret not set yet is not checked here (nothing can
/// be handed out for it; once it is set, its scope is checked at dispatch).
pub fn check_grants(
    declaration: &crate::pipeline::Declaration,
    scopes: &std::collections::BTreeMap<String, Scope>,
) -> Vec<crate::pipeline::Diagnostic> {
    let pipeline = &declaration.pipeline;
    let mut problems = Vec::new();
    for_each_grant(declaration, |path, names| {
        for (i, name) in names.iter().enumerate() {
            if let Some(scope) = scopes.get(name)
                && !scope.allows(&pipeline.name)
            {
                problems.push(crate::pipeline::Diagnostic {
                    path: format!("{path}.capabilities.secrets[{i}]"),
                    message: out_of_scope(name, &pipeline.name, scope),
                });
            }
        }
    });
    problems
}

/// Every secret a declaration grants, to an action or a condition's rule.
pub fn granted(declaration: &crate::pipeline::Declaration) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for_each_grant(declaration, |_, granted| names.extend(granted.iter().cloned()));
    names
}

/// Calls `check` with the path and the secrets of every grant.
fn for_each_grant(declaration: &crate::pipeline::Declaration, mut check: impl FnMut(String, &[String])) {
    let pipeline = &declaration.pipeline;
    for (si, stage) in pipeline.stages.iter().enumerate() {
        for (ai, action) in stage.actions.iter().enumerate() {
            if let Some(capabilities) = &action.capabilities {
                check(format!("pipeline.stages[{si}].actions[{ai}]"), &capabilities.secrets);
            }
        }
        // Rules are kept as written; their grants are read the same way the
        // engine reads them (`pipeline::conditions`).
        for block in ["beforeEntry", "onSuccess", "onFailure"] {
            let conditions = stage.extra.get(block).and_then(|b| b.get("conditions")).and_then(|c| c.as_array());
            for (ci, condition) in conditions.into_iter().flatten().enumerate() {
                let rules = condition.get("rules").and_then(|r| r.as_array());
                for (ri, rule) in rules.into_iter().flatten().enumerate() {
                    let names: Vec<String> = rule
                        .get("capabilities")
                        .and_then(|c| c.get("secrets"))
                        .and_then(|s| s.as_array())
                        .map(|list| list.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    check(format!("pipeline.stages[{si}].{block}.conditions[{ci}].rules[{ri}]"), &names);
                }
            }
        }
    }
}

/// Why a secret is not handed to a pipeline.
pub fn out_of_scope(name: &str, pipeline: &str, scope: &Scope) -> String {
    format!("secret \"{name}\" is not available to pipeline \"{pipeline}\" (its scope: {scope})")
}

pub struct SecretBox {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl SecretBox {
    /// Loads the key of a data dir, creating it on first start.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("secret.key");
        let rng = SystemRandom::new();
        let bytes = if path.exists() {
            crate::ca::tighten_private_file(&path)?;
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            if bytes.len() != 32 {
                anyhow::bail!(
                    "{} holds {} bytes, not a 32-byte key; restore it from a backup (secrets sealed under it cannot be read without it)",
                    path.display(),
                    bytes.len()
                );
            }
            bytes
        } else {
            let mut bytes = vec![0u8; 32];
            rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("no system randomness for the secret key"))?;
            crate::ca::write_private(&path, &bytes)?;
            bytes
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| anyhow::anyhow!("unusable secret key"))?;
        Ok(Self { key: LessSafeKey::new(key), rng })
    }

    /// `nonce || ciphertext || tag`, bound to `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| anyhow::anyhow!("no system randomness for a nonce"))?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut sealed)
            .map_err(|_| anyhow::anyhow!("sealing secret {name:?} failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            anyhow::bail!("secret {name:?} is corrupt in the store");
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| anyhow::anyhow!("secret {name:?} does not open with this controller's secret.key"))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::open(dir.path()).unwrap();
        let sealed = sb.seal("TOKEN", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not stored in clear");
        assert_eq!(sb.open_value("TOKEN", &sealed).unwrap(), b"hunter2");
        assert!(sb.open_value("OTHER", &sealed).is_err(), "bound to its name");
        // Same key after a restart; another data dir's key cannot open it.
        assert_eq!(SecretBox::open(dir.path()).unwrap().open_value("TOKEN", &sealed).unwrap(), b"hunter2");
        let other = tempfile::tempdir().unwrap();
        assert!(SecretBox::open(other.path()).unwrap().open_value("TOKEN", &sealed).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sb.seal("TOKEN", b"hunter2").unwrap(), sealed);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn scope(patterns: &[&str]) -> Scope {
        Scope::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn scopes_match_pipeline_names_by_glob() {
        let s = scope(&["web", "api-*"]);
        assert!(s.allows("web") && s.allows("api-eu") && s.allows("api-"));
        assert!(!s.allows("web2") && !s.allows("api") && !s.allows("other"));
        assert!(scope(&[LEGACY_SCOPE]).allows("anything"));
        assert_eq!(s.to_string(), "web, api-*");
        assert!(Scope::new(&[]).unwrap_err().contains("at least one"));
        assert!(Scope::new(&["".into()]).unwrap_err().contains("empty"));
        assert!(Scope::new(&["a[".into()]).unwrap_err().contains("\"a[\""));
    }

    #[test]
    fn grants_outside_a_scope_are_reported_with_their_path() {
        let declaration = crate::pipeline::parse(
            r#"{"pipeline": {"name": "web", "stages": [
                {"name": "Source", "actions": [{"name": "s", "actionTypeId": {"category": "Source", "owner": "Sluice", "provider": "git", "version": "1"},
                    "capabilities": {"secrets": ["GIT"]}}]},
                {"name": "Deploy", "actions": [{"name": "d", "actionTypeId": {"category": "Deploy", "owner": "Sluice", "provider": "shell", "version": "1"},
                    "capabilities": {"secrets": ["OK", "PROD_KEY", "NOT_SET"]}}],
                 "beforeEntry": {"conditions": [{"result": "FAIL", "rules": [{"name": "r", "ruleTypeId": {"provider": "Commands"},
                    "commands": ["true"], "capabilities": {"exec": ["sh"], "secrets": ["PROD_KEY"]}}]}]}}
            ]}}"#,
        )
        .unwrap();
        let scopes = [
            ("GIT".to_string(), scope(&["*"])),
            ("OK".to_string(), scope(&["w*"])),
            ("PROD_KEY".to_string(), scope(&["deploy-*", "ops"])),
        ]
        .into();
        let problems: Vec<String> = check_grants(&declaration, &scopes).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "pipeline.stages[1].actions[0].capabilities.secrets[1]: secret \"PROD_KEY\" is not available to pipeline \"web\" (its scope: deploy-*, ops)",
                "pipeline.stages[1].beforeEntry.conditions[0].rules[0].capabilities.secrets[0]: secret \"PROD_KEY\" is not available to pipeline \"web\" (its scope: deploy-*, ops)",
            ]
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("DEPLOY_TOKEN").is_ok());
        assert!(check_name("git.creds-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("../x").is_err());
    }
}
