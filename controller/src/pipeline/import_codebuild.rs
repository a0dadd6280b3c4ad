//! What import adds to an action mapped to the built-in `codebuild` plugin:
//! the grants its configuration shows it needs (the shell; the Sluice
//! secrets behind `EnvironmentVariables` of type `PARAMETER_STORE` and
//! `SECRETS_MANAGER`, and behind an inline `BuildSpec`'s `env`), the source
//! revision (`SourceVersion`) from the source action's namespace, and the
//! report lines saying what was mapped and what still needs a hand.
//!
//! The secret-name rule is the plugin's (plugins/codebuild/src/env.rs,
//! documented in docs/plugins.md): a parameter `/app/prod/pw` is the secret
//! `app.prod.pw`; a Secrets Manager reference `id:json-key:stage:version`
//! names the secret `id` mapped the same way (for an ARN, its name after
//! `:secret:`). Both sides test the same examples.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The Sluice secret of a Parameter Store name.
pub fn parameter_secret(name: &str) -> String {
    name.trim().trim_start_matches('/').replace('/', ".")
}

/// The Sluice secret of a Secrets Manager reference.
pub fn secrets_manager_secret(reference: &str) -> String {
    let reference = reference.trim();
    let id = if reference.starts_with("arn:") {
        reference.split(':').nth(6).unwrap_or(reference)
    } else {
        reference.split(':').next().unwrap_or(reference)
    };
    parameter_secret(id)
}

/// Output artifacts of the source actions that become `git` (and so set
/// `CommitId`) to their namespaces, for `SourceVersion`.
pub fn source_namespaces(doc: &Value, map: &super::import::ProviderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let stages = doc.pointer("/pipeline/stages").and_then(Value::as_array).into_iter().flatten();
    for action in stages.filter_map(|s| s.get("actions").and_then(Value::as_array)).flatten() {
        let field = |name: &str| action.pointer(&format!("/actionTypeId/{name}")).and_then(Value::as_str).unwrap_or("");
        let provider = field("provider");
        let key = format!("{}/{provider}", field("owner"));
        let becomes_git = map.0.get(&key).map_or(provider == "git", |m| m.provider == "git");
        let is_source = field("category") == "Source" && becomes_git;
        let Some(namespace) = action.get("namespace").and_then(Value::as_str).filter(|_| is_source) else { continue };
        for artifact in action.get("outputArtifacts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = artifact.get("name").and_then(Value::as_str) {
                out.insert(name.to_owned(), namespace.to_owned());
            }
        }
    }
    out
}

/// Completes a mapped codebuild action; returns report lines, or the problem.
pub fn complete(
    action: &mut Map<String, Value>,
    at: &str,
    namespaces: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let config = action.get("configuration").and_then(Value::as_object).cloned().unwrap_or_default();
    let text = |key: &str| config.get(key).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
    let mut notes = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut shells = vec!["sh".to_owned()];

    if let Some(list) = text("EnvironmentVariables") {
        let entries: Vec<Value> = serde_json::from_str(list).map_err(|e| {
            format!("configuration \"EnvironmentVariables\" is not a JSON list of {{name, value, type}}: {e}")
        })?;
        for entry in &entries {
            let value = entry.get("value").and_then(Value::as_str).unwrap_or_default();
            match entry.get("type").and_then(Value::as_str).unwrap_or("PLAINTEXT") {
                "PARAMETER_STORE" => secrets.push(parameter_secret(value)),
                "SECRETS_MANAGER" => secrets.push(secrets_manager_secret(value)),
                _ => {}
            }
        }
        let plural = if entries.len() == 1 { "y" } else { "ies" };
        notes.push(format!("{at}: EnvironmentVariables carried over ({} entr{plural})", entries.len()));
    }

    let inline = text("BuildSpec").filter(|b| b.contains('\n') || b.starts_with("version") || b.starts_with('{'));
    match (inline, text("BuildSpec")) {
        (Some(spec), _) => {
            let spec =
                super::parse::yaml(spec).map_err(|e| format!("configuration \"BuildSpec\" is not valid YAML: {e}"))?;
            for (key, map) in
                [("parameter-store", parameter_secret as fn(&str) -> String), ("secrets-manager", secrets_manager_secret)]
            {
                let entries = spec.pointer(&format!("/env/{key}")).and_then(Value::as_object).into_iter().flatten();
                secrets.extend(entries.filter_map(|(_, v)| v.as_str()).map(map));
            }
            if matches!(spec.pointer("/env/shell").and_then(Value::as_str), Some("bash" | "/bin/bash")) {
                shells = vec!["bash".to_owned()];
            }
            notes.push(format!("{at}: runs the inline BuildSpec"));
        }
        (None, path) => notes.push(format!(
            "{at}: needs a hand if its buildspec ({}) names env parameter-store or secrets-manager entries: grant each \
             as a Sluice secret (parameter /a/b is secret a.b) in the action's capabilities.secrets; a buildspec with \
             env shell bash needs exec bash",
            path.unwrap_or("buildspec.yml of the primary input")
        )),
    }

    let primary = text("PrimarySource").map(str::to_owned).or_else(|| {
        action
            .get("inputArtifacts")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|a| a["name"].as_str())
            .map(str::to_owned)
    });
    if text("SourceVersion").is_none() {
        match primary.as_ref().and_then(|p| namespaces.get(p)) {
            Some(namespace) => {
                let mut config = config.clone();
                config.insert("SourceVersion".into(), json!(format!("#{{{namespace}.CommitId}}")));
                action.insert("configuration".into(), Value::Object(config));
            }
            None => notes.push(format!(
                "{at}: CODEBUILD_RESOLVED_SOURCE_VERSION stays unset: give the source action a namespace, or set SourceVersion"
            )),
        }
    }
    notes.push(format!(
        "{at}: the CodeBuild project's environment (image, compute type, runtime-versions) is not imported: \
         commands run on the agent's host with what is installed there"
    ));
    grant(action, &shells, &secrets);
    if !secrets.is_empty() {
        notes.push(format!("{at}: grants secrets {} (set them with `sluice secret set`)", secrets.join(", ")));
    }
    Ok(notes)
}

/// Adds the shell and the secrets to the action's capabilities, keeping
/// whatever it grants already.
fn grant(action: &mut Map<String, Value>, shells: &[String], secrets: &[String]) {
    let capabilities = action.entry("capabilities").or_insert_with(|| json!({}));
    let Some(capabilities) = capabilities.as_object_mut() else { return };
    for (kind, names) in [("exec", shells), ("secrets", secrets)] {
        if names.is_empty() {
            continue;
        }
        let list = capabilities.entry(kind).or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else { continue };
        for name in names {
            if !list.iter().any(|v| v.as_str() == Some(name)) {
                list.push(json!(name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_map_as_the_plugin_maps_them() {
        // The same examples as plugins/codebuild/src/env.rs.
        assert_eq!(parameter_secret("/app/prod/db-password"), "app.prod.db-password");
        assert_eq!(parameter_secret("plain_name"), "plain_name");
        assert_eq!(secrets_manager_secret("prod/db:password"), "prod.db");
        assert_eq!(secrets_manager_secret("token:::"), "token");
        assert_eq!(
            secrets_manager_secret("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:user"),
            "prod.db-AbCdEf"
        );
    }
}
