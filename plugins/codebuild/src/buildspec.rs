//! Reading a buildspec (CodeBuild's build specification, version 0.2) into
//! plain data, refusing what this plugin cannot honour with an error naming
//! the line (syntax) or the key (`phases.build.commands[2]`).
//!
//! Keys CodeBuild has and a self-hosted runner cannot act on (`run-as`,
//! `proxy`, `batch`, `reports`, `cache`, `runtime-versions`, ...) are
//! accepted and listed in [`Buildspec::ignored`] so that the log can say so;
//! a key CodeBuild does not have is an error, as a misspelt `post-build`
//! would otherwise be silently skipped.

use serde_json::{Map, Value};
use sluice_plugin_sdk::Error;

/// Longest buildspec read, in bytes: a real one is a few kilobytes.
pub const MAX_BUILDSPEC_BYTES: usize = 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
const MAX_DEPTH: usize = 32;
/// Most YAML nodes (scalars, sequences, mappings) accepted.
const MAX_NODES: usize = 50_000;

/// The shell that runs the commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Bash,
}

impl Shell {
    /// The program name, as granted with `exec`.
    pub fn program(self) -> &'static str {
        match self {
            Shell::Sh => "sh",
            Shell::Bash => "bash",
        }
    }
}

/// The four phases, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhaseName {
    Install,
    PreBuild,
    Build,
    PostBuild,
}

impl PhaseName {
    pub const ALL: [PhaseName; 4] = [PhaseName::Install, PhaseName::PreBuild, PhaseName::Build, PhaseName::PostBuild];

    /// The key in `phases`.
    pub fn key(self) -> &'static str {
        match self {
            PhaseName::Install => "install",
            PhaseName::PreBuild => "pre_build",
            PhaseName::Build => "build",
            PhaseName::PostBuild => "post_build",
        }
    }
}

/// A phase's `on-failure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    Abort,
    Continue,
}

/// One phase as declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phase {
    pub name: PhaseName,
    /// `None`: CodeBuild's default transitions.
    pub on_failure: Option<OnFailure>,
    pub commands: Vec<String>,
    pub finally: Vec<String>,
}

/// An `artifacts` section, or one of its `secondary-artifacts`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ArtifactSpec {
    /// Where in the buildspec it was (`artifacts`, `artifacts.secondary-artifacts.docs`).
    pub key: String,
    pub files: Vec<String>,
    pub base_directory: Option<String>,
    pub discard_paths: bool,
    pub name: Option<String>,
    /// `exclude-paths`: globs of files left out, relative to the base directory.
    pub exclude: Vec<String>,
}

/// A parsed buildspec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buildspec {
    pub shell: Shell,
    /// `env.variables`, in order.
    pub variables: Vec<(String, String)>,
    /// `env.parameter-store`: variable name, parameter name.
    pub parameter_store: Vec<(String, String)>,
    /// `env.secrets-manager`: variable name, `secret-id:json-key:version-stage:version-id`.
    pub secrets_manager: Vec<(String, String)>,
    /// `env.exported-variables`.
    pub exported: Vec<String>,
    /// The declared phases, in running order.
    pub phases: Vec<Phase>,
    /// `artifacts`, when it lists files.
    pub artifacts: Option<ArtifactSpec>,
    /// `artifacts.secondary-artifacts`, by identifier.
    pub secondary: Vec<(String, ArtifactSpec)>,
    /// Keys accepted but not acted on, as paths.
    pub ignored: Vec<String>,
}

fn bad(path: &str, message: impl std::fmt::Display) -> Error {
    Error::new(format!("buildspec key \"{path}\": {message}"))
}

/// Parses buildspec text.
pub fn parse(text: &str) -> Result<Buildspec, Error> {
    if text.len() > MAX_BUILDSPEC_BYTES {
        return Err(Error::new(format!(
            "buildspec is {} bytes, more than the limit of {MAX_BUILDSPEC_BYTES} bytes",
            text.len()
        )));
    }
    let root = yaml(text)?;
    let Value::Object(root) = root else {
        return Err(Error::new("buildspec must be a YAML mapping with \"version\" and \"phases\""));
    };
    let mut ignored = Vec::new();
    check_keys(
        &root,
        "",
        &["version", "env", "phases", "artifacts"],
        &["run-as", "proxy", "batch", "reports", "cache"],
        &mut ignored,
    )?;
    check_version(root.get("version"))?;
    let mut spec = Buildspec {
        shell: Shell::Sh,
        variables: Vec::new(),
        parameter_store: Vec::new(),
        secrets_manager: Vec::new(),
        exported: Vec::new(),
        phases: Vec::new(),
        artifacts: None,
        secondary: Vec::new(),
        ignored: Vec::new(),
    };
    if let Some(env) = root.get("env") {
        read_env(env, &mut spec, &mut ignored)?;
    }
    spec.phases = read_phases(root.get("phases"), &mut ignored)?;
    if let Some(artifacts) = root.get("artifacts") {
        let section = mapping(artifacts, "artifacts")?;
        if let Some(secondary) = section.get("secondary-artifacts") {
            for (id, value) in mapping(secondary, "artifacts.secondary-artifacts")? {
                let key = format!("artifacts.secondary-artifacts.{id}");
                let artifact = read_artifact(value, &key, false, &mut ignored)?;
                spec.secondary.push((id.clone(), artifact));
            }
        }
        let primary = read_artifact(artifacts, "artifacts", true, &mut ignored)?;
        if !primary.files.is_empty() {
            spec.artifacts = Some(primary);
        }
    }
    spec.ignored = ignored;
    Ok(spec)
}

/// YAML to a JSON value with the YAML 1.2 core schema and budgets: a
/// syntax error or a breached budget names the line and column.
fn yaml(text: &str) -> Result<Value, Error> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_inclusion_depth = 0;
    let options = serde_saphyr::options! {
        budget: Some(budget),
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options).map_err(|err| {
        let message = err.without_snippet().to_string();
        let message = message.find(" at line ").map_or(message.as_str(), |at| &message[..at]).to_owned();
        match err.location() {
            Some(at) => {
                Error::new(format!("buildspec is not valid YAML at line {}, column {}: {message}", at.line(), at.column()))
            }
            None => Error::new(format!("buildspec is not valid YAML: {message}")),
        }
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Refuses keys that are neither `known` nor `tolerated`; records the
/// tolerated ones present.
fn check_keys(
    map: &Map<String, Value>,
    path: &str,
    known: &[&str],
    tolerated: &[&str],
    ignored: &mut Vec<String>,
) -> Result<(), Error> {
    for key in map.keys() {
        if tolerated.contains(&key.as_str()) {
            ignored.push(join(path, key));
        } else if !known.contains(&key.as_str()) {
            let mut all: Vec<&str> = known.iter().chain(tolerated).copied().collect();
            all.sort_unstable();
            return Err(bad(&join(path, key), format!("unknown key; expected one of {}", all.join(", "))));
        }
    }
    Ok(())
}

fn check_version(version: Option<&Value>) -> Result<(), Error> {
    let text = match version {
        None => return Err(bad("version", "is required (0.2)")),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(bad("version", format!("expected 0.2, found {}", kind(other)))),
    };
    match text.as_str() {
        "0.2" => Ok(()),
        "0.1" => {
            Err(bad("version", "0.1 is not supported: use 0.2 (whose commands share one shell's variables and directory)"))
        }
        other => Err(bad("version", format!("{other:?} is not supported; this plugin reads version 0.2"))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Error> {
    value.as_object().ok_or_else(|| bad(path, format!("expected a mapping, found {}", kind(value))))
}

/// A scalar as text: YAML `3` and `true` are the strings CodeBuild sees.
fn scalar(value: &Value, path: &str) -> Result<String, Error> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(bad(path, format!("expected a string, found {}", kind(other)))),
    }
}

fn string_list(value: &Value, path: &str) -> Result<Vec<String>, Error> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| scalar(v, &format!("{path}[{i}]"))).collect(),
        other => Err(bad(path, format!("expected a list, found {}", kind(other)))),
    }
}

/// `yes`/`no` as CodeBuild writes them, and YAML booleans.
fn yes_no(value: &Value, path: &str) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "yes" | "Yes" | "YES" | "true" | "True") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "no" | "No" | "NO" | "false" | "False") => Ok(false),
        other => Err(bad(path, format!("expected yes or no, found {other}"))),
    }
}

/// A name a POSIX shell can hold in a variable.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn pairs(value: &Value, path: &str) -> Result<Vec<(String, String)>, Error> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (name, v) in mapping(value, path)? {
        let key = join(path, name);
        if !is_variable_name(name) {
            return Err(bad(
                &key,
                "is not a valid environment variable name (letters, digits and _, not starting with a digit)",
            ));
        }
        out.push((name.clone(), scalar(v, &key)?));
    }
    Ok(out)
}

fn read_env(env: &Value, spec: &mut Buildspec, ignored: &mut Vec<String>) -> Result<(), Error> {
    let env = mapping(env, "env")?;
    check_keys(
        env,
        "env",
        &["shell", "variables", "parameter-store", "secrets-manager", "exported-variables"],
        &["git-credential-helper"],
        ignored,
    )?;
    if let Some(shell) = env.get("shell") {
        spec.shell = match scalar(shell, "env.shell")?.as_str() {
            "sh" | "/bin/sh" => Shell::Sh,
            "bash" | "/bin/bash" => Shell::Bash,
            other => return Err(bad("env.shell", format!("{other:?} is not supported; use bash or /bin/sh"))),
        };
    }
    if let Some(v) = env.get("variables") {
        spec.variables = pairs(v, "env.variables")?;
    }
    if let Some(v) = env.get("parameter-store") {
        spec.parameter_store = pairs(v, "env.parameter-store")?;
    }
    if let Some(v) = env.get("secrets-manager") {
        spec.secrets_manager = pairs(v, "env.secrets-manager")?;
    }
    if let Some(v) = env.get("exported-variables") {
        spec.exported = string_list(v, "env.exported-variables")?;
        for (i, name) in spec.exported.iter().enumerate() {
            if !is_variable_name(name) {
                return Err(bad(&format!("env.exported-variables[{i}]"), format!("{name:?} is not a valid variable name")));
            }
        }
    }
    Ok(())
}

fn read_phases(phases: Option<&Value>, ignored: &mut Vec<String>) -> Result<Vec<Phase>, Error> {
    let Some(phases) = phases else {
        return Err(bad("phases", "is required"));
    };
    let phases = mapping(phases, "phases")?;
    let names: Vec<&str> = PhaseName::ALL.iter().map(|p| p.key()).collect();
    check_keys(phases, "phases", &names, &[], ignored)?;
    let mut out = Vec::new();
    for name in PhaseName::ALL {
        let Some(value) = phases.get(name.key()) else { continue };
        let path = format!("phases.{}", name.key());
        if value.is_null() {
            continue;
        }
        let map = mapping(value, &path)?;
        check_keys(map, &path, &["commands", "finally", "on-failure"], &["run-as", "runtime-versions"], ignored)?;
        let on_failure = match map.get("on-failure") {
            None => None,
            Some(v) => match scalar(v, &join(&path, "on-failure"))?.as_str() {
                "ABORT" => Some(OnFailure::Abort),
                "CONTINUE" => Some(OnFailure::Continue),
                other => return Err(bad(&join(&path, "on-failure"), format!("{other:?} is not ABORT or CONTINUE"))),
            },
        };
        let commands = map.get("commands").map_or(Ok(Vec::new()), |v| string_list(v, &join(&path, "commands")))?;
        let finally = map.get("finally").map_or(Ok(Vec::new()), |v| string_list(v, &join(&path, "finally")))?;
        out.push(Phase { name, on_failure, commands, finally });
    }
    Ok(out)
}

fn read_artifact(value: &Value, path: &str, primary: bool, ignored: &mut Vec<String>) -> Result<ArtifactSpec, Error> {
    let map = mapping(value, path)?;
    let mut known = vec!["files", "name", "discard-paths", "base-directory", "exclude-paths"];
    if primary {
        known.push("secondary-artifacts");
    }
    check_keys(map, path, &known, &["enable-symlinks", "s3-prefix"], ignored)?;
    let mut spec = ArtifactSpec { key: path.to_owned(), ..ArtifactSpec::default() };
    if let Some(files) = map.get("files") {
        spec.files = string_list(files, &join(path, "files"))?;
        for (i, pattern) in spec.files.iter().enumerate() {
            check_relative(pattern, &format!("{path}.files[{i}]"))?;
        }
    }
    if !primary && spec.files.is_empty() {
        return Err(bad(&join(path, "files"), "is required"));
    }
    if let Some(base) = map.get("base-directory") {
        let base = scalar(base, &join(path, "base-directory"))?;
        check_relative(&base, &join(path, "base-directory"))?;
        spec.base_directory = Some(base);
    }
    if let Some(discard) = map.get("discard-paths") {
        spec.discard_paths = yes_no(discard, &join(path, "discard-paths"))?;
    }
    if let Some(name) = map.get("name") {
        spec.name = Some(scalar(name, &join(path, "name"))?);
    }
    if let Some(exclude) = map.get("exclude-paths") {
        // CodeBuild takes one pattern or a list.
        spec.exclude = match exclude {
            Value::Array(_) => string_list(exclude, &join(path, "exclude-paths"))?,
            other => vec![scalar(other, &join(path, "exclude-paths"))?],
        };
    }
    Ok(spec)
}

/// Artifact paths stay inside the source directory: relative, no `..`.
fn check_relative(pattern: &str, path: &str) -> Result<(), Error> {
    if pattern.trim().is_empty() {
        return Err(bad(path, "must not be empty"));
    }
    if pattern.starts_with('/') || pattern.starts_with('\\') {
        return Err(bad(path, format!("{pattern:?} is absolute; artifact paths are relative to the source directory")));
    }
    if pattern.split(['/', '\\']).any(|part| part == "..") {
        return Err(bad(path, format!("{pattern:?} leaves the source directory (\"..\")")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
version: 0.2
run-as: builder
env:
  shell: bash
  variables:
    STAGE: prod
    RETRIES: 3
  parameter-store:
    DB_PASSWORD: /app/prod/db-password
  secrets-manager:
    API_KEY: prod/api:key
  exported-variables:
    - IMAGE_TAG
phases:
  install:
    runtime-versions:
      nodejs: 18
    commands:
      - echo install
  build:
    on-failure: CONTINUE
    commands:
      - make
      - |
        echo two
        echo lines
    finally:
      - echo done
  post_build:
    commands:
artifacts:
  files:
    - '**/*'
  base-directory: dist
  discard-paths: yes
  name: web
  secondary-artifacts:
    docs:
      files: [site/index.html]
"#;

    #[test]
    fn reads_every_supported_key() {
        let spec = parse(FULL).unwrap();
        assert_eq!(spec.shell, Shell::Bash);
        // Keys come in sorted order (values are literal, so order cannot matter).
        assert_eq!(spec.variables, [("RETRIES".into(), "3".into()), ("STAGE".into(), "prod".into())]);
        assert_eq!(spec.parameter_store, [("DB_PASSWORD".into(), "/app/prod/db-password".into())]);
        assert_eq!(spec.secrets_manager, [("API_KEY".into(), "prod/api:key".into())]);
        assert_eq!(spec.exported, ["IMAGE_TAG"]);
        let names: Vec<PhaseName> = spec.phases.iter().map(|p| p.name).collect();
        assert_eq!(names, [PhaseName::Install, PhaseName::Build, PhaseName::PostBuild]);
        let build = &spec.phases[1];
        assert_eq!(build.on_failure, Some(OnFailure::Continue));
        assert_eq!(build.commands, ["make", "echo two\necho lines\n"]);
        assert_eq!(build.finally, ["echo done"]);
        assert!(spec.phases[2].commands.is_empty());
        let artifacts = spec.artifacts.unwrap();
        assert_eq!(artifacts.files, ["**/*"]);
        assert_eq!(artifacts.base_directory.as_deref(), Some("dist"));
        assert!(artifacts.discard_paths);
        assert_eq!(artifacts.name.as_deref(), Some("web"));
        assert_eq!(spec.secondary[0].0, "docs");
        assert_eq!(spec.secondary[0].1.files, ["site/index.html"]);
        assert_eq!(spec.ignored, ["run-as", "phases.install.runtime-versions"]);
    }

    #[test]
    fn version_is_checked() {
        let err = |text: &str| parse(text).unwrap_err().message().to_owned();
        assert_eq!(err("phases: {build: {commands: [x]}}"), "buildspec key \"version\": is required (0.2)");
        assert!(err("version: 0.1\nphases: {}").contains("0.1 is not supported"));
        assert!(err("version: 1.0\nphases: {}").contains("\"1.0\" is not supported"));
        assert!(parse("version: '0.2'\nphases: {build: {commands: [x]}}").is_ok());
    }

    #[test]
    fn errors_name_the_line_or_the_key() {
        let err = |text: &str| parse(text).unwrap_err().message().to_owned();
        let syntax = err("version: 0.2\nphases:\n  build:\n    commands: [a\n");
        assert!(syntax.starts_with("buildspec is not valid YAML at line "), "{syntax}");
        assert_eq!(
            err("version: 0.2\nphases:\n  build:\n    commands:\n      - ok\n      - {a: b}\n"),
            "buildspec key \"phases.build.commands[1]\": expected a string, found a mapping"
        );
        assert_eq!(
            err("version: 0.2\nphases:\n  build:\n    commands: make\n"),
            "buildspec key \"phases.build.commands\": expected a list, found a string"
        );
        assert!(
            err("version: 0.2\nphases:\n  post-build: {}\n").starts_with("buildspec key \"phases.post-build\": unknown key")
        );
        assert_eq!(
            err("version: 0.2\nphases:\n  build:\n    on-failure: RETRY\n"),
            "buildspec key \"phases.build.on-failure\": \"RETRY\" is not ABORT or CONTINUE"
        );
        assert_eq!(
            err("version: 0.2\nenv:\n  variables:\n    BAD-NAME: x\nphases: {}\n"),
            "buildspec key \"env.variables.BAD-NAME\": is not a valid environment variable name (letters, digits and _, not starting with a digit)"
        );
        assert!(err("version: 0.2\nenv: {shell: zsh}\nphases: {}\n").contains("\"zsh\" is not supported"));
        assert_eq!(err("- a\n- b\n"), "buildspec must be a YAML mapping with \"version\" and \"phases\"");
        assert!(err("version: 0.2\nversion: 0.2\nphases: {}\n").contains("duplicate"));
        assert_eq!(
            err("version: 0.2\nphases: {}\nartifacts:\n  discard-paths: maybe\n  files: [a]\n"),
            "buildspec key \"artifacts.discard-paths\": expected yes or no, found \"maybe\""
        );
    }

    #[test]
    fn artifact_paths_must_stay_inside() {
        let err = |artifacts: &str| {
            parse(&format!("version: 0.2\nphases: {{}}\nartifacts:\n{artifacts}")).unwrap_err().message().to_owned()
        };
        assert_eq!(
            err("  files: ['../../etc/passwd']\n"),
            "buildspec key \"artifacts.files[0]\": \"../../etc/passwd\" leaves the source directory (\"..\")"
        );
        assert!(err("  files: ['dist/../../x']\n").contains("leaves the source directory"));
        assert!(err("  files: ['/etc/passwd']\n").contains("is absolute"));
        assert!(err("  files: [a]\n  base-directory: ..\n").starts_with("buildspec key \"artifacts.base-directory\""));
        assert!(
            err("  secondary-artifacts:\n    x:\n      files: ['..\\\\win']\n")
                .starts_with("buildspec key \"artifacts.secondary-artifacts.x.files[0]\"")
        );
        assert_eq!(
            err("  secondary-artifacts:\n    x:\n      name: y\n"),
            "buildspec key \"artifacts.secondary-artifacts.x.files\": is required"
        );
    }

    #[test]
    fn hostile_documents_are_refused_quickly() {
        // Deep nesting.
        let deep = format!("version: 0.2\nphases: {{}}\nx: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let message = parse(&deep).unwrap_err().message().to_owned();
        assert!(message.starts_with("buildspec is not valid YAML"), "{message}");
        // An alias bomb: each level doubles the one before.
        let mut bomb = String::from("version: 0.2\nphases: {}\nreports:\n  a0: &a0 [x, x, x, x, x, x, x, x]\n");
        for i in 1..30 {
            let p = i - 1;
            bomb.push_str(&format!("  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let message = parse(&bomb).unwrap_err().message().to_owned();
        assert!(message.starts_with("buildspec is not valid YAML"), "the budget stops it, not a later check: {message}");
        // Too big.
        let huge = format!("version: 0.2\nphases: {{}}\n# {}\n", "x".repeat(MAX_BUILDSPEC_BYTES));
        assert!(parse(&huge).unwrap_err().message().contains("more than the limit"));
        // Many nodes.
        let wide = format!("version: 0.2\nphases:\n  build:\n    commands: [{}]\n", vec!["x"; MAX_NODES + 10].join(","));
        assert!(parse(&wide).is_err());
    }
}
