//! The parse phase: text to a `serde_json::Value`, then a hand walk of that
//! value into the typed model, collecting every structural problem (unknown
//! field, missing field, wrong type) with its JSON path.
//!
//! The walk never stops at the first problem: each walker returns a best-effort
//! value (defaults where the input was unusable) so that the caller can still
//! run validation and report both phases at once. Semantic rules (names,
//! limits, references, providers) are not checked here but in `validate`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::model::{
    ACTION_PASSTHROUGH, Action, ActionTypeId, Capabilities, Configuration, Declaration, ExecutionMode, InputArtifact,
    OutputArtifact, PIPELINE_PASSTHROUGH, Pipeline, STAGE_PASSTHROUGH, Stage, Variable,
};
use super::{Diagnostic, Diagnostics};
use super::{limits, reserved};

pub(crate) const DECLARATION_FIELDS: &[&str] = &["pipeline"];
/// Top-level fields of `get-pipeline` output that are accepted and dropped:
/// `metadata` describes the stored pipeline (ARN, dates), not the declaration.
const DECLARATION_IGNORED: &[&str] = &["metadata"];
pub(crate) const PIPELINE_FIELDS: &[&str] =
    &["name", "stages", "version", "executionMode", "pipelineType", "variables", "triggers"];
pub(crate) const STAGE_FIELDS: &[&str] = &["name", "actions"];
pub(crate) const ACTION_FIELDS: &[&str] = &[
    "name",
    "actionTypeId",
    "runOrder",
    "configuration",
    "outputArtifacts",
    "inputArtifacts",
    "namespace",
    "timeoutInMinutes",
    "capabilities",
    "agentLabels",
    "pollIntervalSeconds",
    "retryOnAgentLost",
    "pluginDigest",
];
const ACTION_TYPE_ID_FIELDS: &[&str] = &["category", "owner", "provider", "version"];
const VARIABLE_FIELDS: &[&str] = &["name", "defaultValue", "description"];
const INPUT_ARTIFACT_FIELDS: &[&str] = &["name"];
const OUTPUT_ARTIFACT_FIELDS: &[&str] = &["name", "files"];
const CAPABILITY_FIELDS: &[&str] = &["exec", "http", "secrets", "env", "fs", "net"];

/// Collected diagnostics of one walk.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Cx {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { "document" } else { path };
        self.diagnostics.push(Diagnostic { path: path.to_owned(), message: message.into() });
    }

    /// The walked value if nothing was wrong, else every problem found.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.diagnostics.is_empty() { Ok(value) } else { Err(Diagnostics(self.diagnostics)) }
    }
}

/// Reads the text of a declaration into a JSON value: JSON if the first
/// non-blank character is `{`, YAML otherwise. A syntax error is one
/// diagnostic whose path is its line and column.
pub(crate) fn document(text: &str) -> Result<Value, Diagnostic> {
    if text.len() > limits::MAX_DOCUMENT_BYTES {
        return Err(Diagnostic {
            path: "document".into(),
            message: format!(
                "declaration is {} bytes, more than the limit of {} bytes",
                text.len(),
                limits::MAX_DOCUMENT_BYTES
            ),
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|err| syntax_error("JSON", &err.to_string(), Some((err.line(), err.column()))))
    } else {
        yaml(text).map_err(|err| {
            let location = err.location().map(|l| (l.line() as usize, l.column() as usize));
            syntax_error("YAML", &yaml_message(&err), location)
        })
    }
}

/// Reads YAML into a JSON value with the YAML 1.2 core schema, as
/// declarations have always been read: `yes`, `on`, `0755` and `1_000` stay
/// strings, a tag the schema does not know and a duplicate key are errors,
/// and `<<` is an ordinary key (no YAML 1.1 merge).
pub(crate) fn yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        // One line: the location goes into the diagnostic's path.
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options(text, options)
}

/// The parser's message, without its advice to the programmer on a
/// duplicate key.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    match err.without_snippet() {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key {}", Value::from(key.as_str()))
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => "duplicate key".into(),
        other => other.to_string(),
    }
}

fn syntax_error(format: &str, message: &str, location: Option<(usize, usize)>) -> Diagnostic {
    // Both parsers append their own " at line L column C"; the location is the
    // path here, so keep only the message.
    let message = message.find(" at line ").map_or(message, |at| &message[..at]);
    Diagnostic {
        path: match location {
            Some((line, column)) => format!("line {line}, column {column}"),
            None => "document".into(),
        },
        message: format!("invalid {format}: {message}"),
    }
}

/// `path.key`, or `path["key"]` when the key is not a plain word, so that
/// every path stays unambiguous.
pub(crate) fn child(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@'));
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Value::from(key)),
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// "a string", "an object", ... for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(value: &'a Value, path: &str, cx: &mut Cx) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => {
            cx.error(path, format!("expected an object, found {}", kind(other)));
            None
        }
    }
}

/// Reports every field that is neither typed nor passthrough, and returns the
/// passthrough ones in document order.
fn fields(map: &Map<String, Value>, path: &str, typed: &[&str], passthrough: &[&str], cx: &mut Cx) -> Map<String, Value> {
    let mut extra = Map::new();
    for (key, value) in map {
        if passthrough.contains(&key.as_str()) {
            extra.insert(key.clone(), value.clone());
        } else if !typed.contains(&key.as_str()) {
            cx.error(&child(path, key), format!("unknown field {}", Value::from(key.as_str())));
        }
    }
    extra
}

fn string(value: &Value, path: &str, cx: &mut Cx) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => {
            // YAML reads `version: 1` as a number. Keep its text so that
            // validation does not also report an empty field; the document
            // is rejected anyway.
            cx.error(path, format!("expected a string, found {}; quote it: \"{value}\"", kind(value)));
            value.to_string()
        }
        other => {
            cx.error(path, format!("expected a string, found {}", kind(other)));
            String::new()
        }
    }
}

fn required<'a>(map: &'a Map<String, Value>, path: &str, key: &str, cx: &mut Cx) -> Option<&'a Value> {
    let value = map.get(key);
    if value.is_none() {
        cx.error(&child(path, key), format!("missing required field {}", Value::from(key)));
    }
    value
}

fn required_string(map: &Map<String, Value>, path: &str, key: &str, cx: &mut Cx) -> String {
    required(map, path, key, cx).map(|v| string(v, &child(path, key), cx)).unwrap_or_default()
}

fn optional_string(map: &Map<String, Value>, path: &str, key: &str, cx: &mut Cx) -> Option<String> {
    map.get(key).map(|v| string(v, &child(path, key), cx))
}

/// A non-negative whole number no larger than `max`.
fn whole(value: &Value, path: &str, max: u64, cx: &mut Cx) -> Option<u64> {
    match value.as_u64() {
        Some(n) if n <= max => Some(n),
        Some(n) => {
            cx.error(path, format!("{n} is too large"));
            None
        }
        None => {
            let found = if value.is_number() { "a negative or fractional number" } else { kind(value) };
            cx.error(path, format!("expected a whole number, found {found}"));
            None
        }
    }
}

fn optional_u32(map: &Map<String, Value>, path: &str, key: &str, cx: &mut Cx) -> Option<u32> {
    let value = map.get(key)?;
    whole(value, &child(path, key), u64::from(u32::MAX), cx).and_then(|n| u32::try_from(n).ok())
}

fn optional_bool(map: &Map<String, Value>, path: &str, key: &str, cx: &mut Cx) -> Option<bool> {
    match map.get(key)? {
        Value::Bool(b) => Some(*b),
        other => {
            cx.error(&child(path, key), format!("expected true or false, found {}", kind(other)));
            None
        }
    }
}

/// Whether a list field must be present.
#[derive(Clone, Copy)]
enum Presence {
    Required,
    Optional,
}

/// Walks the array `map[key]` item by item.
fn list<T>(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
    presence: Presence,
    cx: &mut Cx,
    item: impl Fn(&Value, &str, &mut Cx) -> T,
) -> Vec<T> {
    let value = match presence {
        Presence::Required => required(map, path, key, cx),
        Presence::Optional => map.get(key),
    };
    let path = child(path, key);
    match value {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().enumerate().map(|(i, v)| item(v, &index(&path, i), cx)).collect(),
        Some(other) => {
            cx.error(&path, format!("expected an array, found {}", kind(other)));
            Vec::new()
        }
    }
}

fn strings(value: &Value, path: &str, cx: &mut Cx) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| string(v, &index(path, i), cx)).collect(),
        other => {
            cx.error(path, format!("expected an array of strings, found {}", kind(other)));
            Vec::new()
        }
    }
}

pub(crate) fn declaration(value: &Value, path: &str, cx: &mut Cx) -> Declaration {
    let Some(map) = object(value, path, cx) else {
        return Declaration::default();
    };
    for (key, _) in map {
        if !DECLARATION_FIELDS.contains(&key.as_str()) && !DECLARATION_IGNORED.contains(&key.as_str()) {
            cx.error(&child(path, key), format!("unknown field {}", Value::from(key.as_str())));
        }
    }
    let pipeline =
        required(map, path, "pipeline", cx).map(|v| self::pipeline(v, &child(path, "pipeline"), cx)).unwrap_or_default();
    Declaration { pipeline }
}

pub(crate) fn pipeline(value: &Value, path: &str, cx: &mut Cx) -> Pipeline {
    let Some(map) = object(value, path, cx) else {
        return Pipeline::default();
    };
    let extra = fields(map, path, PIPELINE_FIELDS, PIPELINE_PASSTHROUGH, cx);
    // Walked in canonical field order so that diagnostics come in that order.
    let name = required_string(map, path, "name", cx);
    let stages = list(map, path, "stages", Presence::Required, cx, stage);
    let version = map.get("version").and_then(|v| whole(v, &child(path, "version"), u64::MAX, cx));
    let execution_mode =
        map.get("executionMode").map(|v| execution_mode(v, &child(path, "executionMode"), cx)).unwrap_or_default();
    let pipeline_type = optional_string(map, path, "pipelineType", cx);
    let variables = list(map, path, "variables", Presence::Optional, cx, variable);
    let triggers = list(map, path, "triggers", Presence::Optional, cx, |v, _, _| v.clone());
    Pipeline { name, pipeline_type, execution_mode, variables, triggers, stages, version, extra }
}

pub(crate) fn execution_mode(value: &Value, path: &str, cx: &mut Cx) -> ExecutionMode {
    let name = string(value, path, cx);
    ExecutionMode::from_name(&name).unwrap_or_else(|| {
        if value.is_string() {
            let all: Vec<&str> = ExecutionMode::ALL.iter().map(|m| m.as_str()).collect();
            cx.error(path, format!("unknown execution mode {}, expected one of {}", Value::from(name), all.join(", ")));
        }
        ExecutionMode::default()
    })
}

pub(crate) fn variable(value: &Value, path: &str, cx: &mut Cx) -> Variable {
    let Some(map) = object(value, path, cx) else {
        return Variable::default();
    };
    fields(map, path, VARIABLE_FIELDS, &[], cx);
    Variable {
        name: required_string(map, path, "name", cx),
        default_value: optional_string(map, path, "defaultValue", cx),
        description: optional_string(map, path, "description", cx),
    }
}

pub(crate) fn stage(value: &Value, path: &str, cx: &mut Cx) -> Stage {
    let Some(map) = object(value, path, cx) else {
        return Stage::default();
    };
    let extra = fields(map, path, STAGE_FIELDS, STAGE_PASSTHROUGH, cx);
    Stage {
        name: required_string(map, path, "name", cx),
        actions: list(map, path, "actions", Presence::Required, cx, action),
        extra,
    }
}

pub(crate) fn action(value: &Value, path: &str, cx: &mut Cx) -> Action {
    let Some(map) = object(value, path, cx) else {
        return Action::default();
    };
    let extra = fields(map, path, ACTION_FIELDS, ACTION_PASSTHROUGH, cx);
    // Sluice's own fields may come as reserved configuration keys: one
    // map with both spellings resolved, the keys out of the configuration.
    let (configuration_value, merged) = reserved_keys(map, path, cx);
    let map = &merged;
    Action {
        name: required_string(map, path, "name", cx),
        action_type_id: required(map, path, "actionTypeId", cx)
            .map(|v| action_type_id(v, &child(path, "actionTypeId"), cx))
            .unwrap_or_default(),
        run_order: optional_u32(map, path, "runOrder", cx),
        configuration: configuration_value.map(|v| configuration(&v, &child(path, "configuration"), cx)).unwrap_or_default(),
        input_artifacts: list(map, path, "inputArtifacts", Presence::Optional, cx, input_artifact),
        output_artifacts: list(map, path, "outputArtifacts", Presence::Optional, cx, output_artifact),
        namespace: optional_string(map, path, "namespace", cx),
        timeout_in_minutes: optional_u32(map, path, "timeoutInMinutes", cx),
        capabilities: map.get("capabilities").map(|v| capabilities(v, &child(path, "capabilities"), cx)),
        agent_labels: map.get("agentLabels").map(|v| agent_labels(v, &child(path, "agentLabels"), cx)).unwrap_or_default(),
        poll_interval_seconds: optional_u32(map, path, "pollIntervalSeconds", cx),
        retry_on_agent_lost: optional_bool(map, path, "retryOnAgentLost", cx),
        plugin_digest: optional_string(map, path, "pluginDigest", cx),
        extra,
    }
}

/// The action's configuration without its reserved `Sluice:` keys, and the
/// action's fields with those keys' values in place of the fields they
/// stand for. A field given both ways, an unknown reserved key and a
/// value that is not what its field takes are errors.
fn reserved_keys(map: &Map<String, Value>, path: &str, cx: &mut Cx) -> (Option<Value>, Map<String, Value>) {
    let mut merged = map.clone();
    let Some(Value::Object(config)) = map.get("configuration") else {
        return (map.get("configuration").cloned(), merged);
    };
    let config_path = child(path, "configuration");
    let mut kept = Map::new();
    for (key, value) in config {
        if !key.starts_with(reserved::PREFIX) {
            kept.insert(key.clone(), value.clone());
            continue;
        }
        let key_path = child(&config_path, key);
        let Some(text) = value.as_str() else {
            cx.error(&key_path, format!("configuration values must be strings, found {}", kind(value)));
            continue;
        };
        match reserved::field_value(key, text) {
            None => {
                let known: Vec<&str> = reserved::KEYS.iter().map(|(_, k)| *k).collect();
                cx.error(
                    &key_path,
                    format!("unknown reserved configuration key; the {} keys are {}", reserved::PREFIX, known.join(", ")),
                );
            }
            Some((field, _)) if map.contains_key(field) => {
                cx.error(&key_path, format!("{field} is given twice: as the field {field:?} and as {key:?}; keep one"));
            }
            Some((_, Err(message))) => cx.error(&key_path, message),
            Some((field, Ok(value))) => {
                merged.insert(field.to_string(), value);
            }
        }
    }
    (Some(Value::Object(kept)), merged)
}

pub(crate) fn action_type_id(value: &Value, path: &str, cx: &mut Cx) -> ActionTypeId {
    let Some(map) = object(value, path, cx) else {
        return ActionTypeId::default();
    };
    fields(map, path, ACTION_TYPE_ID_FIELDS, &[], cx);
    ActionTypeId {
        category: required_string(map, path, "category", cx),
        owner: required_string(map, path, "owner", cx),
        provider: required_string(map, path, "provider", cx),
        version: required_string(map, path, "version", cx),
    }
}

pub(crate) fn configuration(value: &Value, path: &str, cx: &mut Cx) -> Configuration {
    let Some(map) = object(value, path, cx) else {
        return Configuration::default();
    };
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => {
                    let hint = match other {
                        Value::Number(_) | Value::Bool(_) => format!("; quote it: \"{other}\""),
                        _ => String::new(),
                    };
                    cx.error(
                        &child(path, key),
                        format!("configuration values must be strings, found {}{hint}", kind(other)),
                    );
                    // Keep the key so that validation does not also report
                    // it as missing; the document is rejected anyway.
                    other.to_string()
                }
            };
            (key.clone(), text)
        })
        .collect()
}

pub(crate) fn input_artifact(value: &Value, path: &str, cx: &mut Cx) -> InputArtifact {
    let Some(map) = object(value, path, cx) else {
        return InputArtifact::default();
    };
    fields(map, path, INPUT_ARTIFACT_FIELDS, &[], cx);
    InputArtifact { name: required_string(map, path, "name", cx) }
}

pub(crate) fn output_artifact(value: &Value, path: &str, cx: &mut Cx) -> OutputArtifact {
    let Some(map) = object(value, path, cx) else {
        return OutputArtifact::default();
    };
    fields(map, path, OUTPUT_ARTIFACT_FIELDS, &[], cx);
    OutputArtifact {
        name: required_string(map, path, "name", cx),
        files: map.get("files").map(|v| strings(v, &child(path, "files"), cx)),
    }
}

pub(crate) fn capabilities(value: &Value, path: &str, cx: &mut Cx) -> Capabilities {
    let Some(map) = object(value, path, cx) else {
        return Capabilities::default();
    };
    fields(map, path, CAPABILITY_FIELDS, &[], cx);
    let mut grant = |key: &str| map.get(key).map(|v| strings(v, &child(path, key), cx)).unwrap_or_default();
    Capabilities {
        exec: grant("exec"),
        http: grant("http"),
        secrets: grant("secrets"),
        env: grant("env"),
        fs: grant("fs"),
        net: grant("net"),
    }
}

fn agent_labels(value: &Value, path: &str, cx: &mut Cx) -> BTreeMap<String, String> {
    let Some(map) = object(value, path, cx) else {
        return BTreeMap::new();
    };
    map.iter().map(|(key, value)| (key.clone(), string(value, &child(path, key), cx))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn walk(value: Value) -> Vec<String> {
        let mut cx = Cx::default();
        declaration(&value, "", &mut cx);
        cx.diagnostics.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn paths_quote_keys_that_are_not_words() {
        assert_eq!(child("", "pipeline"), "pipeline");
        assert_eq!(child("a.configuration", "Url"), "a.configuration.Url");
        assert_eq!(child("a", "x.y"), r#"a["x.y"]"#);
        assert_eq!(child("a", "has space"), r#"a["has space"]"#);
        assert_eq!(index("a.stages", 3), "a.stages[3]");
    }

    #[test]
    fn reports_every_structural_problem_at_once() {
        let problems = walk(json!({
            "pipeline": {
                "name": 7,
                "stages": [
                    {"actions": "nope", "colour": "red"},
                    {"name": "B", "actions": [{"name": "a", "runOrder": -1, "timeoutInMinutes": 1.5,
                        "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop"},
                        "configuration": {"N": 2, "L": [1]}, "agentLabels": {"os": true},
                        "retryOnAgentLost": "yes"}]}
                ]
            },
            "tags": []
        }));
        assert_eq!(
            problems,
            [
                "tags: unknown field \"tags\"",
                "pipeline.name: expected a string, found a number; quote it: \"7\"",
                "pipeline.stages[0].colour: unknown field \"colour\"",
                "pipeline.stages[0].name: missing required field \"name\"",
                "pipeline.stages[0].actions: expected an array, found a string",
                "pipeline.stages[1].actions[0].actionTypeId.version: missing required field \"version\"",
                "pipeline.stages[1].actions[0].runOrder: expected a whole number, found a negative or fractional number",
                "pipeline.stages[1].actions[0].configuration.N: configuration values must be strings, found a number; quote it: \"2\"",
                "pipeline.stages[1].actions[0].configuration.L: configuration values must be strings, found an array",
                "pipeline.stages[1].actions[0].timeoutInMinutes: expected a whole number, found a negative or fractional number",
                "pipeline.stages[1].actions[0].agentLabels.os: expected a string, found a boolean; quote it: \"true\"",
                "pipeline.stages[1].actions[0].retryOnAgentLost: expected true or false, found a string",
            ]
        );
    }

    /// Reserved keys become the fields they stand for; plugins, which see
    /// the configuration, never see them.
    #[test]
    fn reserved_configuration_keys_become_fields() {
        let mut cx = Cx::default();
        let a = action(
            &json!({"name": "a", "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "shell", "version": "1"},
                "configuration": {"Commands": "make", "Sluice:Capabilities": "{\"exec\": [\"make\"]}",
                    "Sluice:AgentLabels": "{\"os\": \"linux\"}", "Sluice:RetryOnAgentLost": "true",
                    "Sluice:PollIntervalSeconds": "90", "Sluice:PluginDigest": "sha256:00"}}),
            "a",
            &mut cx,
        );
        assert!(cx.diagnostics.is_empty(), "{:?}", cx.diagnostics);
        assert_eq!(a.configuration.keys().collect::<Vec<_>>(), ["Commands"]);
        assert_eq!(a.capabilities.unwrap().exec, ["make"]);
        assert_eq!(a.agent_labels.get("os").map(String::as_str), Some("linux"));
        assert_eq!((a.retry_on_agent_lost, a.poll_interval_seconds), (Some(true), Some(90)));
        assert_eq!(a.plugin_digest.as_deref(), Some("sha256:00"));
    }

    #[test]
    fn root_must_be_an_object_with_a_pipeline() {
        assert_eq!(walk(json!([])), ["document: expected an object, found an array"]);
        assert_eq!(walk(json!({})), ["pipeline: missing required field \"pipeline\""]);
        assert_eq!(walk(json!({"pipeline": {"name": "p", "stages": []}, "metadata": {"x": 1}})), Vec::<String>::new());
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let json = document("{\n  \"pipeline\": {,\n}").unwrap_err();
        assert_eq!(json.path, "line 2, column 16");
        assert!(json.message.starts_with("invalid JSON: "), "{}", json.message);
        assert!(!json.message.contains(" at line "), "{}", json.message);

        let yaml = document("pipeline:\n  name: [a\n  stages: b\n").unwrap_err();
        assert!(yaml.path.starts_with("line "), "{}", yaml.path);
        assert!(yaml.message.starts_with("invalid YAML: "), "{}", yaml.message);
    }

    #[test]
    fn yaml_refuses_duplicate_keys_where_they_are() {
        let err = document("pipeline:\n  name: p\n  name: q\n").unwrap_err();
        assert_eq!(err.path, "line 3, column 3");
        assert_eq!(err.message, "invalid YAML: duplicate key \"name\"");
    }

    #[test]
    fn yaml_reads_the_core_schema() {
        let value = document("a: yes\nb: on\nc: 0755\nd: 1_000\ne: 0x1F\nf: true\ng: ~\n<<: {h: 1}\n").unwrap();
        assert_eq!(
            value,
            json!({"a": "yes", "b": "on", "c": "0755", "d": "1_000", "e": 31, "f": true, "g": null, "<<": {"h": 1}})
        );
        let err = document("a: !custom x\n").unwrap_err();
        assert!(err.message.starts_with("invalid YAML: "), "{}", err.message);
    }

    #[test]
    fn oversized_documents_are_refused_before_parsing() {
        let text = " ".repeat(limits::MAX_DOCUMENT_BYTES + 1);
        assert!(document(&text).unwrap_err().message.contains("more than the limit"));
    }
}
