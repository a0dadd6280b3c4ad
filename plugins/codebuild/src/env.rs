//! The build's environment variables: CodeBuild's own, the buildspec's
//! `env` and the action's `EnvironmentVariables`, with Parameter Store and
//! Secrets Manager references read from Sluice secrets.
//!
//! Name mapping (documented in docs/plugins.md): a Parameter Store name
//! `/app/prod/db-password` is the Sluice secret `app.prod.db-password` (the
//! leading `/` dropped, every other `/` a `.`); a Secrets Manager reference
//! `secret-id:json-key:version-stage:version-id` names the secret
//! `secret-id` mapped the same way (for an ARN, the name after `:secret:`),
//! and a `json-key` picks that key of the secret's JSON value.

use serde::Deserialize;
use sluice_plugin_sdk::{Error, ResultExt, secrets};

use crate::buildspec::{Buildspec, is_variable_name};

/// Where a variable's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Plain(String),
    ParameterStore(String),
    SecretsManager(String),
}

/// One variable of the build, before secrets are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub source: Source,
    /// Where it was declared, for messages (`env.parameter-store`).
    pub origin: &'static str,
}

/// One entry of CodePipeline's `EnvironmentVariables` JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionVariable {
    name: String,
    value: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parses the action's `EnvironmentVariables`:
/// `[{"name":"STAGE","value":"prod","type":"PLAINTEXT"}, ...]`.
pub fn action_variables(json: &str) -> Result<Vec<Variable>, Error> {
    let entries: Vec<ActionVariable> = serde_json::from_str(json).map_err(|e| {
        Error::new(format!("configuration \"EnvironmentVariables\" is not a JSON list of {{name, value, type}}: {e}"))
    })?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            if !is_variable_name(&entry.name) {
                return Err(Error::new(format!(
                    "configuration \"EnvironmentVariables\"[{i}]: {:?} is not a valid environment variable name",
                    entry.name
                )));
            }
            let source = match entry.kind.as_deref().unwrap_or("PLAINTEXT") {
                "PLAINTEXT" => Source::Plain(entry.value),
                "PARAMETER_STORE" => Source::ParameterStore(entry.value),
                "SECRETS_MANAGER" => Source::SecretsManager(entry.value),
                other => {
                    return Err(Error::new(format!(
                        "configuration \"EnvironmentVariables\"[{i}]: type {other:?} is not PLAINTEXT, PARAMETER_STORE or SECRETS_MANAGER"
                    )));
                }
            };
            Ok(Variable { name: entry.name, source, origin: "EnvironmentVariables" })
        })
        .collect()
}

/// The buildspec's variables, then the action's: later entries win, as an
/// `EnvironmentVariables` value overrides the buildspec's in CodeBuild.
pub fn declared(spec: &Buildspec, action: Vec<Variable>) -> Vec<Variable> {
    let mut out: Vec<Variable> = Vec::new();
    let from_spec = spec
        .variables
        .iter()
        .map(|(n, v)| (n, Source::Plain(v.clone()), "env.variables"))
        .chain(spec.parameter_store.iter().map(|(n, v)| (n, Source::ParameterStore(v.clone()), "env.parameter-store")))
        .chain(spec.secrets_manager.iter().map(|(n, v)| (n, Source::SecretsManager(v.clone()), "env.secrets-manager")))
        .map(|(name, source, origin)| Variable { name: name.clone(), source, origin });
    for variable in from_spec.chain(action) {
        out.retain(|v| v.name != variable.name);
        out.push(variable);
    }
    out
}

/// The Sluice secret that holds Parameter Store parameter `name`.
pub fn parameter_secret(name: &str) -> Result<String, String> {
    let mapped = name.trim().trim_start_matches('/').replace('/', ".");
    check_secret_name(&mapped).map_err(|e| format!("parameter {name:?}: {e}"))?;
    Ok(mapped)
}

/// A Secrets Manager reference: the secret and the JSON key, if any.
pub fn secrets_manager_secret(reference: &str) -> Result<(String, Option<String>), String> {
    let reference = reference.trim();
    // An ARN has six colons of its own: arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME.
    let (id, rest) = if reference.starts_with("arn:") {
        let parts: Vec<&str> = reference.splitn(8, ':').collect();
        if parts.len() < 7 || parts[5] != "secret" {
            return Err(format!(
                "{reference:?} is not a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
            ));
        }
        (parts[6], parts.get(7).copied().unwrap_or(""))
    } else {
        reference.split_once(':').unwrap_or((reference, ""))
    };
    let mut fields = rest.split(':');
    let json_key = fields.next().filter(|k| !k.is_empty()).map(str::to_owned);
    let stage = fields.next().unwrap_or("");
    let version = fields.next().unwrap_or("");
    if !(stage.is_empty() || stage == "AWSCURRENT") || !version.is_empty() {
        return Err(format!(
            "{reference:?} asks for a version stage or id; Sluice secrets have one current value (leave both empty)"
        ));
    }
    let mapped = id.trim_start_matches('/').replace('/', ".");
    check_secret_name(&mapped).map_err(|e| format!("secret {id:?}: {e}"))?;
    Ok((mapped, json_key))
}

/// Sluice's rule for secret names.
fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("the Sluice secret name {name:?} must be 1 to 128 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(format!("the Sluice secret name {name:?} may contain only A-Z a-z 0-9 _ - ."));
    }
    Ok(())
}

/// Reads each variable's value; secrets through the host, which answers
/// only for secrets granted to the action.
pub fn resolve(variables: &[Variable]) -> Result<Vec<(String, String)>, Error> {
    variables
        .iter()
        .map(|variable| {
            let what = format!("variable \"{}\" ({})", variable.name, variable.origin);
            let value = match &variable.source {
                Source::Plain(value) => value.clone(),
                Source::ParameterStore(name) => {
                    let secret = parameter_secret(name).map_err(|e| Error::new(format!("{what}: {e}")))?;
                    secrets::get(&secret).with_context(|| format!("{what}: Sluice secret \"{secret}\""))?
                }
                Source::SecretsManager(reference) => {
                    let (secret, key) = secrets_manager_secret(reference).map_err(|e| Error::new(format!("{what}: {e}")))?;
                    let value = secrets::get(&secret).with_context(|| format!("{what}: Sluice secret \"{secret}\""))?;
                    match key {
                        None => value,
                        Some(key) => json_field(&value, &key).map_err(|e| Error::new(format!("{what}: {e}")))?,
                    }
                }
            };
            Ok((variable.name.clone(), value))
        })
        .collect()
}

/// `key` of a JSON object held in a secret; the value itself never appears
/// in a message.
fn json_field(secret: &str, key: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(secret).map_err(|_| format!("the secret is not a JSON object, so it has no key {key:?}"))?;
    match value.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("the secret's JSON has no key {key:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_map_as_documented() {
        assert_eq!(parameter_secret("/app/prod/db-password").unwrap(), "app.prod.db-password");
        assert_eq!(parameter_secret("plain_name").unwrap(), "plain_name");
        assert!(parameter_secret("/with space").unwrap_err().contains("may contain only"));
        assert_eq!(secrets_manager_secret("prod/db:password").unwrap(), ("prod.db".into(), Some("password".into())));
        assert_eq!(secrets_manager_secret("token").unwrap(), ("token".into(), None));
        assert_eq!(secrets_manager_secret("token:::").unwrap(), ("token".into(), None));
        assert_eq!(secrets_manager_secret("token::AWSCURRENT:").unwrap(), ("token".into(), None));
        assert_eq!(
            secrets_manager_secret("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:user").unwrap(),
            ("prod.db-AbCdEf".into(), Some("user".into()))
        );
        assert!(secrets_manager_secret("token::AWSPREVIOUS:").unwrap_err().contains("version stage"));
        assert!(secrets_manager_secret("arn:aws:s3:::bucket").unwrap_err().contains("is not a Secrets Manager ARN"));
    }

    #[test]
    fn action_variables_parse_and_override_the_buildspec() {
        let action = action_variables(
            r#"[{"name":"STAGE","value":"test","type":"PLAINTEXT"},{"name":"DB","value":"/db/pw","type":"PARAMETER_STORE"},
                {"name":"K","value":"k:key","type":"SECRETS_MANAGER"},{"name":"N","value":"1"}]"#,
        )
        .unwrap();
        let spec =
            crate::buildspec::parse("version: 0.2\nenv:\n  variables: {STAGE: prod, KEEP: yes}\nphases: {}\n").unwrap();
        let all = declared(&spec, action);
        let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["KEEP", "STAGE", "DB", "K", "N"]);
        assert_eq!(all[1].source, Source::Plain("test".into()));
        assert_eq!(all[2].source, Source::ParameterStore("/db/pw".into()));
        assert!(action_variables("{}").unwrap_err().message().contains("not a JSON list"));
        assert!(action_variables(r#"[{"name":"A","value":"b","type":"S3"}]"#).unwrap_err().message().contains("\"S3\""));
        assert!(action_variables(r#"[{"name":"A-B","value":"b"}]"#).unwrap_err().message().contains("valid environment"));
    }

    #[test]
    fn secrets_are_read_and_json_keys_picked() {
        // Natively the SDK reads SLUICE_SECRET_<NAME>
        // (`.` and `-` read as `_`); these names are this test's own.
        unsafe {
            std::env::set_var("SLUICE_SECRET_cbtest_pw", "s3cret");
            std::env::set_var("SLUICE_SECRET_cbtest_json", r#"{"user":"ann","port":5432}"#);
        }
        let vars = vec![
            Variable {
                name: "PW".into(),
                source: Source::ParameterStore("/cbtest/pw".into()),
                origin: "env.parameter-store",
            },
            Variable { name: "U".into(), source: Source::SecretsManager("cbtest/json:user".into()), origin: "x" },
            Variable { name: "P".into(), source: Source::SecretsManager("cbtest/json:port".into()), origin: "x" },
        ];
        assert_eq!(
            resolve(&vars).unwrap(),
            [("PW".into(), "s3cret".into()), ("U".into(), "ann".into()), ("P".into(), "5432".into())]
        );
        let missing = vec![Variable {
            name: "M".into(),
            source: Source::ParameterStore("/cbtest/none".into()),
            origin: "env.parameter-store",
        }];
        let err = resolve(&missing).unwrap_err();
        assert!(
            err.message().starts_with("variable \"M\" (env.parameter-store): Sluice secret \"cbtest.none\""),
            "{}",
            err.message()
        );
        let nokey =
            vec![Variable { name: "M".into(), source: Source::SecretsManager("cbtest/pw:user".into()), origin: "x" }];
        assert!(!resolve(&nokey).unwrap_err().message().contains("s3cret"));
    }
}
