//! Import of CodePipeline definitions: actions whose owner is `AWS` or
//! `ThirdParty` are remapped to Sluice providers through a provider map,
//! so that `aws codepipeline get-pipeline` output loads as it is.
//!
//! A map entry is keyed `Owner/Provider` (e.g. `AWS/CodeBuild`) and says
//! which provider replaces it and how its configuration carries over:
//!
//! ```json
//! {"AWS/CodeBuild": {"provider": "shell", "version": "1",
//!                    "drop": ["ProjectName"], "set": {"Commands": "make test"},
//!                    "capabilities": {"exec": ["sh", "make"]}}}
//! ```
//!
//! `category` replaces the action's category, `rename` moves keys, `template` builds a key from others (`{Key}`,
//! and `{GitBase}` for [`ImportOptions::git_base`]), `set` adds fixed values (an existing value wins), `drop`
//! removes keys, `require` names keys that must exist afterwards. Built-in defaults cover common providers:
//! `AWS/CodeBuild` runs its buildspec with the built-in `codebuild` plugin ([`super::import_codebuild`] adds
//! the grants it needs), GitHub and CodeStar sources get their git URL from `Owner`/`Repo` or
//! `FullRepositoryId`. A user's map overrides the defaults entry by entry, and [`ImportOptions`] can point a
//! source action at another URL. Every unmapped provider, and every action still missing a required key, is
//! named in one error; a successful import comes with a report of what was mapped and what needs a hand.
//! Pure: text in, text out.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::validate::IMPORT_OWNERS;

/// How one foreign provider becomes a Sluice one.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mapping {
    pub provider: String,
    #[serde(default = "version_one")]
    pub version: String,
    /// `Sluice` for built-ins (default), `Custom` for pushed plugins.
    #[serde(default = "sluice_owner")]
    pub owner: String,
    /// The category when the Sluice provider's differs (e.g. an `Invoke`
    /// mapped to a `Build` provider); the action's own by default.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub template: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub require: Vec<String>,
    /// Capabilities given to the action when it declares none.
    #[serde(default)]
    pub capabilities: Option<Value>,
}

fn version_one() -> String {
    "1".into()
}

fn sluice_owner() -> String {
    "Sluice".into()
}

/// Choices made on the command line rather than in the map.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// What `{GitBase}` stands for in templates: `https://github.com` unless told otherwise.
    pub git_base: String,
    /// Action name to the `Url` its source uses, over any template.
    pub source_urls: BTreeMap<String, String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { git_base: "https://github.com".into(), source_urls: BTreeMap::new() }
    }
}

/// A converted declaration and what the conversion did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The declaration, as JSON.
    pub declaration: String,
    /// One line per thing mapped or left to do, for the user.
    pub report: Vec<String>,
}

/// `Owner/Provider` to mapping.
#[derive(Debug, Clone, Default)]
pub struct ProviderMap(pub BTreeMap<String, Mapping>);

impl ProviderMap {
    /// Reads a map file (JSON or YAML) over the defaults.
    pub fn with_overrides(text: &str) -> Result<Self, String> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("provider map is not valid JSON: {e}"))?
        } else {
            super::parse::yaml(text).map_err(|e| format!("provider map is not valid YAML: {e}"))?
        };
        let overrides: BTreeMap<String, Mapping> =
            serde_json::from_value(value).map_err(|e| format!("provider map is invalid: {e}"))?;
        let mut map = Self::defaults();
        for (key, mapping) in overrides {
            if !key.contains('/') {
                return Err(format!("provider map key {key:?} must be Owner/Provider, e.g. AWS/CodeBuild"));
            }
            map.0.insert(key, mapping);
        }
        Ok(map)
    }

    /// Common CodePipeline providers.
    pub fn defaults() -> Self {
        let drop = |extra: &[&str]| -> Vec<String> {
            ["ConnectionArn", "OutputArtifactFormat", "DetectChanges", "OAuthToken", "PollForSourceChanges"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let entries = json!({
            "AWS/CodeBuild": {
                "provider": "codebuild",
                "drop": ["BatchEnabled", "CombineArtifacts"],
                "capabilities": {"exec": ["sh"]}
            },
            "AWS/CodeStarSourceConnection": {
                "provider": "git",
                "rename": {"BranchName": "Branch"},
                "template": {"Url": "{GitBase}/{FullRepositoryId}.git"},
                "drop": drop(&["FullRepositoryId"]),
                "capabilities": {"exec": ["git"]}
            },
            "ThirdParty/GitHub": {
                "provider": "git",
                "template": {"Url": "{GitBase}/{Owner}/{Repo}.git"},
                "drop": drop(&["Owner", "Repo"]),
                "capabilities": {"exec": ["git"]}
            },
            "AWS/CodeCommit": {
                "provider": "git",
                "rename": {"BranchName": "Branch"},
                "drop": drop(&["RepositoryName"]),
                "require": ["Url"],
                "capabilities": {"exec": ["git"]}
            },
            "AWS/Manual": {"provider": "manual"}
        });
        let map: BTreeMap<String, Mapping> = serde_json::from_value(entries).expect("the default map is valid");
        Self(map)
    }
}

/// Remaps the foreign providers of a declaration (JSON or YAML text) and
/// returns the declaration as JSON with a report, or every problem at once.
pub fn import(text: &str, map: &ProviderMap, options: &ImportOptions) -> Result<Imported, Vec<String>> {
    let mut doc = super::parse::document(text).map_err(|d| vec![d.to_string()])?;
    let namespaces = super::import_codebuild::source_namespaces(&doc, map);
    let mut unmapped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut report = Vec::new();
    let mut unused_urls: Vec<&String> = options.source_urls.keys().collect();
    let stages = doc.pointer_mut("/pipeline/stages").and_then(Value::as_array_mut);
    for (si, stage) in stages.into_iter().flatten().enumerate() {
        let actions = stage.get_mut("actions").and_then(Value::as_array_mut);
        for (ai, action) in actions.into_iter().flatten().enumerate() {
            let Some(action) = action.as_object_mut() else { continue };
            let path = format!("pipeline.stages[{si}].actions[{ai}]");
            let name = action.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
            let type_id = action.get("actionTypeId").cloned().unwrap_or(Value::Null);
            let owner = type_id["owner"].as_str().unwrap_or_default().to_string();
            if !IMPORT_OWNERS.contains(&owner.as_str()) {
                continue;
            }
            let key = format!("{owner}/{}", type_id["provider"].as_str().unwrap_or_default());
            let Some(mapping) = map.0.get(&key) else {
                unmapped.entry(key).or_default().push(format!("{path} \"{name}\""));
                continue;
            };
            let at = format!("action \"{name}\"");
            let url = options.source_urls.get(&name).map(String::as_str);
            unused_urls.retain(|n| **n != name);
            match apply(action, mapping, &options.git_base, url) {
                Ok(notes) => {
                    report.push(format!("{at}: {key} -> {}@{}", mapping.provider, mapping.version));
                    report.extend(notes.into_iter().map(|n| format!("{at}: {n}")));
                }
                Err(e) => problems.push(format!("{path}: {e}")),
            }
            if mapping.provider == "codebuild" && mapping.owner == "Sluice" {
                match super::import_codebuild::complete(action, &at, &namespaces) {
                    Ok(notes) => report.extend(notes),
                    Err(e) => problems.push(format!("{path}: {e}")),
                }
            }
        }
    }
    for name in unused_urls {
        problems.push(format!("--source-url names action \"{name}\", which is no imported action"));
    }
    if !unmapped.is_empty() {
        let list: Vec<String> = unmapped.iter().map(|(k, at)| format!("{k} (at {})", at.join(", "))).collect();
        problems.insert(
            0,
            format!("no provider mapping for {}; add them to --provider-map (keys Owner/Provider)", list.join("; ")),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Imported { declaration: serde_json::to_string_pretty(&doc).expect("JSON serializes"), report })
}

/// Maps one action; returns notes on what was derived or dropped.
fn apply(
    action: &mut Map<String, Value>,
    mapping: &Mapping,
    git_base: &str,
    url: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    let mut config: BTreeMap<String, String> = BTreeMap::new();
    if let Some(existing) = action.get("configuration").and_then(Value::as_object) {
        for (k, v) in existing {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            config.insert(k.clone(), text);
        }
    }
    if let Some(url) = url {
        config.insert("Url".into(), url.to_owned());
        notes.push(format!("Url {url} (from --source-url)"));
    }
    // CodePipeline's polling switch becomes Sluice's polling interval.
    if config.get("PollForSourceChanges").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
        action.insert("pollIntervalSeconds".into(), json!(0));
    }
    for (key, pattern) in &mapping.template {
        if config.contains_key(key) {
            continue;
        }
        let mut value = pattern.replace("{GitBase}", git_base.trim_end_matches('/'));
        for (k, v) in &config {
            value = value.replace(&format!("{{{k}}}"), v);
        }
        if !value.contains('{') {
            notes.push(format!("{key} {value} (derived; --git-base or --source-url to change)"));
            config.insert(key.clone(), value);
        }
    }
    for (from, to) in &mapping.rename {
        if let Some(v) = config.remove(from) {
            config.insert(to.clone(), v);
        }
    }
    for key in &mapping.drop {
        if key == "OAuthToken" && config.contains_key(key) {
            notes.push("needs a hand if the repository is private: OAuthToken is dropped; set CredentialsSecret to a granted Sluice secret holding user:token".into());
        }
        config.remove(key);
    }
    for (k, v) in &mapping.set {
        config.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let missing: Vec<&String> = mapping.require.iter().filter(|k| !config.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{}@{} needs {}: add it to the action's configuration or `set` it in the provider map",
            mapping.provider,
            mapping.version,
            missing.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    let category = match &mapping.category {
        Some(category) => json!(category),
        None => action.get("actionTypeId").and_then(|t| t.get("category")).cloned().unwrap_or(json!("Build")),
    };
    action.insert(
        "actionTypeId".into(),
        json!({"category": category, "owner": mapping.owner, "provider": mapping.provider, "version": mapping.version}),
    );
    if config.is_empty() {
        action.remove("configuration");
    } else {
        action.insert("configuration".into(), json!(config));
    }
    if let Some(capabilities) = &mapping.capabilities
        && !action.contains_key("capabilities")
    {
        action.insert("capabilities".into(), capabilities.clone());
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as `aws codepipeline get-pipeline` prints it.
    const EXPORTED: &str = r#"{
      "pipeline": {
        "name": "web", "roleArn": "arn:aws:iam::123:role/p", "version": 3, "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": "bucket"},
        "stages": [
          {"name": "Source", "actions": [{"name": "Src", "runOrder": 1,
            "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "CodeStarSourceConnection", "version": "1"},
            "configuration": {"ConnectionArn": "arn:c", "FullRepositoryId": "acme/web", "BranchName": "main",
                              "OutputArtifactFormat": "CODE_ZIP", "DetectChanges": "true"},
            "outputArtifacts": [{"name": "SourceArtifact"}], "namespace": "SourceVariables", "region": "eu-west-1"}]},
          {"name": "Build", "actions": [{"name": "Compile", "runOrder": 1,
            "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
            "configuration": {"ProjectName": "web-build"},
            "inputArtifacts": [{"name": "SourceArtifact"}], "outputArtifacts": [{"name": "BuildArtifact"}]}]},
          {"name": "Approve", "actions": [{"name": "Gate",
            "actionTypeId": {"category": "Approval", "owner": "AWS", "provider": "Manual", "version": "1"},
            "configuration": {"CustomData": "ok?"}}]},
          {"name": "Deploy", "actions": [
            {"name": "Ship", "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "ECS", "version": "1"}},
            {"name": "Tell", "actionTypeId": {"category": "Invoke", "owner": "AWS", "provider": "Lambda", "version": "1"}},
            {"name": "Ship2", "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "ECS", "version": "1"}}]}
        ]
      },
      "metadata": {"pipelineArn": "arn:aws:codepipeline:eu-west-1:123:web"}
    }"#;

    #[test]
    fn every_unmapped_provider_and_missing_key_is_named_at_once() {
        let problems = import(EXPORTED, &ProviderMap::defaults(), &ImportOptions::default()).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0]
                .contains("AWS/ECS (at pipeline.stages[3].actions[0] \"Ship\", pipeline.stages[3].actions[2] \"Ship2\")"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("AWS/Lambda (at pipeline.stages[3].actions[1] \"Tell\")"), "{}", problems[0]);
        // A map that still asks for a key names it.
        let map = ProviderMap::with_overrides(
            "AWS/CodeBuild: {provider: shell, require: [Commands]}\nAWS/ECS: {provider: noop}\nAWS/Lambda: {provider: noop}",
        )
        .unwrap();
        assert_eq!(
            import(EXPORTED, &map, &ImportOptions::default()).unwrap_err(),
            [
                "pipeline.stages[1].actions[0]: shell@1 needs \"Commands\": add it to the action's configuration or `set` it in the provider map"
            ]
        );
    }

    #[test]
    fn a_provider_map_completes_the_import_and_the_result_is_a_valid_declaration() {
        let map = ProviderMap::with_overrides(
            r#"
AWS/CodeBuild:
  provider: shell
  drop: [ProjectName]
  set: {Commands: "make build"}
  capabilities: {exec: [sh, make]}
AWS/ECS: {provider: deploy-dir, set: {Target: /srv/web}, capabilities: {fs: [/srv/web]}}
AWS/Lambda: {provider: noop}
"#,
        )
        .unwrap();
        let text = import(EXPORTED, &map, &ImportOptions::default()).unwrap().declaration;
        let decl = crate::pipeline::parse(&text).expect("imports parse");
        let src = &decl.pipeline.stages[0].actions[0];
        assert_eq!(src.action_type_id.provider, "git");
        assert_eq!(src.configuration.get("Url"), Some("https://github.com/acme/web.git"));
        assert_eq!(src.configuration.get("Branch"), Some("main"));
        assert_eq!(src.configuration.get("ConnectionArn"), None);
        let build = &decl.pipeline.stages[1].actions[0];
        assert_eq!(
            (build.action_type_id.provider.as_str(), build.configuration.get("Commands")),
            ("shell", Some("make build"))
        );
        assert_eq!(build.capabilities.as_ref().unwrap().exec, ["sh", "make"]);
        assert_eq!(decl.pipeline.stages[2].actions[0].action_type_id.provider, "manual");
        // Fields CodePipeline has and Sluice does not use are kept.
        assert!(text.contains("roleArn") && text.contains("artifactStore"));
        // A bad map is refused with the reason.
        assert!(
            ProviderMap::with_overrides("{\"CodeBuild\": {\"provider\": \"shell\"}}")
                .unwrap_err()
                .contains("Owner/Provider")
        );
        assert!(ProviderMap::with_overrides("{\"AWS/X\": {\"providr\": \"shell\"}}").unwrap_err().contains("unknown field"));
    }

    /// A GitHub source, a CodeBuild build and a CodeBuild test, as the
    /// public CodePipeline samples declare them (CloudFormation's
    /// `AWS::CodePipeline::Pipeline` exported with get-pipeline).
    const GITHUB_BUILD_TEST: &str = r#"{"pipeline": {
      "name": "app", "roleArn": "arn:aws:iam::123456789012:role/cp", "version": 1,
      "artifactStore": {"type": "S3", "location": "cp-artifacts"},
      "stages": [
        {"name": "Source", "actions": [{"name": "App",
          "actionTypeId": {"category": "Source", "owner": "ThirdParty", "provider": "GitHub", "version": "1"},
          "configuration": {"Owner": "acme", "Repo": "app", "Branch": "main", "OAuthToken": "****", "PollForSourceChanges": "false"},
          "outputArtifacts": [{"name": "App"}], "namespace": "SourceVariables", "runOrder": 1}]},
        {"name": "Build", "actions": [{"name": "Build",
          "actionTypeId": {"category": "Build", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
          "configuration": {"ProjectName": "app-build",
            "EnvironmentVariables": "[{\"name\":\"STAGE\",\"value\":\"prod\",\"type\":\"PLAINTEXT\"},{\"name\":\"DB_PASSWORD\",\"value\":\"/app/prod/db-password\",\"type\":\"PARAMETER_STORE\"},{\"name\":\"API\",\"value\":\"prod/api:key\",\"type\":\"SECRETS_MANAGER\"}]"},
          "inputArtifacts": [{"name": "App"}], "outputArtifacts": [{"name": "BuildOutput"}], "namespace": "BuildVariables", "runOrder": 1}]},
        {"name": "Test", "actions": [{"name": "UnitTest",
          "actionTypeId": {"category": "Test", "owner": "AWS", "provider": "CodeBuild", "version": "1"},
          "configuration": {"ProjectName": "app-test", "BuildSpec": "buildspec-test.yml", "PrimarySource": "App"},
          "inputArtifacts": [{"name": "App"}, {"name": "BuildOutput"}], "runOrder": 1}]}
      ]}}"#;

    #[test]
    fn github_codebuild_build_and_test_import_without_hand_edits() {
        let imported = import(GITHUB_BUILD_TEST, &ProviderMap::defaults(), &ImportOptions::default()).unwrap();
        let decl = crate::pipeline::parse(&imported.declaration).expect("imports parse");
        let src = &decl.pipeline.stages[0].actions[0];
        assert_eq!(src.action_type_id.provider, "git");
        assert_eq!(src.configuration.get("Url"), Some("https://github.com/acme/app.git"));
        assert_eq!(src.configuration.get("Branch"), Some("main"));
        assert_eq!(src.configuration.get("OAuthToken"), None);
        assert_eq!(src.capabilities.as_ref().unwrap().exec, ["git"]);

        let build = &decl.pipeline.stages[1].actions[0];
        assert_eq!((build.action_type_id.owner.as_str(), build.action_type_id.provider.as_str()), ("Sluice", "codebuild"));
        assert_eq!(build.configuration.get("ProjectName"), Some("app-build"), "ProjectName stays visible");
        assert!(build.configuration.get("EnvironmentVariables").unwrap().contains("DB_PASSWORD"), "carried over");
        assert_eq!(build.configuration.get("SourceVersion"), Some("#{SourceVariables.CommitId}"));
        let caps = build.capabilities.as_ref().unwrap();
        assert_eq!(caps.exec, ["sh"]);
        assert_eq!(caps.secrets, ["app.prod.db-password", "prod.api"]);

        let test = &decl.pipeline.stages[2].actions[0];
        assert_eq!(test.action_type_id.category, "Test");
        assert_eq!(test.configuration.get("BuildSpec"), Some("buildspec-test.yml"));
        assert_eq!(test.configuration.get("PrimarySource"), Some("App"));
        assert_eq!(test.capabilities.as_ref().unwrap().secrets, Vec::<String>::new());

        let report = imported.report.join("\n");
        for line in [
            "action \"App\": ThirdParty/GitHub -> git@1",
            "action \"App\": Url https://github.com/acme/app.git (derived; --git-base or --source-url to change)",
            "action \"App\": needs a hand if the repository is private",
            "action \"Build\": AWS/CodeBuild -> codebuild@1",
            "action \"Build\": EnvironmentVariables carried over (3 entries)",
            "action \"Build\": grants secrets app.prod.db-password, prod.api",
            "action \"UnitTest\": needs a hand if its buildspec (buildspec-test.yml) names env parameter-store",
        ] {
            assert!(report.contains(line), "{line:?} not in\n{report}");
        }
    }

    /// A source that does not become `git` sets no `CommitId`: the build
    /// after it gets no `SourceVersion` that would fail to resolve.
    #[test]
    fn only_git_sources_give_codebuild_a_source_version() {
        let s3 = GITHUB_BUILD_TEST.replace(
            r#""owner": "ThirdParty", "provider": "GitHub", "version": "1"},
          "configuration": {"Owner": "acme", "Repo": "app", "Branch": "main", "OAuthToken": "****", "PollForSourceChanges": "false"},"#,
            r#""owner": "AWS", "provider": "S3", "version": "1"},
          "configuration": {"S3Bucket": "drops", "S3ObjectKey": "app.zip"},"#,
        );
        assert_ne!(s3, GITHUB_BUILD_TEST, "the source was replaced");
        let map = ProviderMap::with_overrides(r#"{"AWS/S3": {"provider": "noop"}}"#).unwrap();
        let imported = import(&s3, &map, &ImportOptions::default()).unwrap();
        let decl = crate::pipeline::parse(&imported.declaration).unwrap();
        let build = &decl.pipeline.stages[1].actions[0];
        assert_eq!(build.configuration.get("SourceVersion"), None);
        assert!(
            imported.report.join("\n").contains("CODEBUILD_RESOLVED_SOURCE_VERSION stays unset"),
            "{:?}",
            imported.report
        );
    }

    #[test]
    fn codestar_connection_sources_and_overrides() {
        const CODESTAR: &str = r#"
pipeline:
  name: svc
  roleArn: arn:aws:iam::123456789012:role/cp
  artifactStore: {type: S3, location: b}
  stages:
    - name: Source
      actions:
        - name: Checkout
          actionTypeId: {category: Source, owner: AWS, provider: CodeStarSourceConnection, version: "1"}
          configuration:
            ConnectionArn: arn:aws:codestar-connections:us-east-1:123456789012:connection/abc
            FullRepositoryId: acme/svc
            BranchName: release
            OutputArtifactFormat: CODEBUILD_CLONE_REF
          outputArtifacts: [{name: SourceOutput}]
    - name: Build
      actions:
        - name: Package
          actionTypeId: {category: Build, owner: AWS, provider: CodeBuild, version: "1"}
          configuration:
            ProjectName: svc
            BuildSpec: |
              version: 0.2
              env:
                shell: bash
                parameter-store: {TOKEN: /svc/token}
                secrets-manager: {DB: "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db-AbCdEf:password"}
              phases:
                build:
                  commands: [make]
          inputArtifacts: [{name: SourceOutput}]
"#;
        let defaults = ProviderMap::defaults();
        let imported = import(CODESTAR, &defaults, &ImportOptions::default()).unwrap();
        let decl = crate::pipeline::parse(&imported.declaration).unwrap();
        let src = &decl.pipeline.stages[0].actions[0];
        assert_eq!(src.configuration.get("Url"), Some("https://github.com/acme/svc.git"));
        assert_eq!(src.configuration.get("Branch"), Some("release"));
        let build = &decl.pipeline.stages[1].actions[0];
        let caps = build.capabilities.as_ref().unwrap();
        assert_eq!(caps.exec, ["sh", "bash"]);
        assert_eq!(caps.secrets, ["svc.token", "svc.db-AbCdEf"]);
        assert_eq!(build.configuration.get("SourceVersion"), None, "no namespace on the source");
        let report = imported.report.join("\n");
        assert!(report.contains("action \"Package\": runs the inline BuildSpec"), "{report}");
        assert!(report.contains("CODEBUILD_RESOLVED_SOURCE_VERSION stays unset"), "{report}");

        // Another host for every source, or one URL for one action.
        let options = ImportOptions { git_base: "https://git.example.com/".into(), ..ImportOptions::default() };
        let decl = crate::pipeline::parse(&import(CODESTAR, &defaults, &options).unwrap().declaration).unwrap();
        assert_eq!(
            decl.pipeline.stages[0].actions[0].configuration.get("Url"),
            Some("https://git.example.com/acme/svc.git")
        );
        let mut options = ImportOptions::default();
        options.source_urls.insert("Checkout".into(), "/srv/git/svc".into());
        let decl = crate::pipeline::parse(&import(CODESTAR, &defaults, &options).unwrap().declaration).unwrap();
        assert_eq!(decl.pipeline.stages[0].actions[0].configuration.get("Url"), Some("/srv/git/svc"));
        options.source_urls.insert("Nope".into(), "/x".into());
        assert_eq!(
            import(CODESTAR, &defaults, &options).unwrap_err(),
            ["--source-url names action \"Nope\", which is no imported action"]
        );
        // Broken EnvironmentVariables and BuildSpec are named, not dropped.
        let broken = GITHUB_BUILD_TEST
            .replace("\"ProjectName\": \"app-build\",", "\"ProjectName\": \"app-build\", \"BuildSpec\": \"version: [\",");
        let problems = import(&broken, &defaults, &ImportOptions::default()).unwrap_err();
        assert!(
            problems[0].starts_with("pipeline.stages[1].actions[0]: configuration \"BuildSpec\" is not valid YAML"),
            "{problems:?}"
        );
        let broken = GITHUB_BUILD_TEST.replace("\"EnvironmentVariables\": \"[", "\"EnvironmentVariables\": \"{");
        let problems = import(&broken, &defaults, &ImportOptions::default()).unwrap_err();
        assert!(problems[0].contains("\"EnvironmentVariables\" is not a JSON list"), "{problems:?}");
    }
}
