//! The typed pipeline declaration: CodePipeline's `get-pipeline` shape plus
//! Sluice's own additions (`capabilities`, `agentLabels`).
//!
//! Serialization writes CodePipeline's field names in CodePipeline's order,
//! with the fields that mean nothing to Sluice (kept in `extra`) put back where
//! CodePipeline has them. Deserialization goes through the same hand-written
//! walker as [`super::parse()`], so every way into these types rejects unknown
//! fields and reports every problem with its path.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::limits;
use super::parse::{self, Cx};

/// Pipeline fields CodePipeline defines that mean nothing to Sluice: accepted,
/// kept in [`Pipeline::extra`] and given back.
pub const PIPELINE_PASSTHROUGH: &[&str] = &["roleArn", "artifactStore", "artifactStores"];

/// Stage fields CodePipeline defines that Sluice does not act on yet: accepted,
/// kept in [`Stage::extra`] and given back.
pub const STAGE_PASSTHROUGH: &[&str] = &["blockers", "onFailure", "onSuccess", "beforeEntry"];

/// Action fields CodePipeline defines that mean nothing to Sluice: accepted,
/// kept in [`Action::extra`] and given back.
pub const ACTION_PASSTHROUGH: &[&str] = &["commands", "outputVariables", "roleArn", "region", "environmentVariables"];

/// A whole declaration document: `{"pipeline": {...}}`. CodePipeline's
/// `metadata` object is accepted on input and not kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Declaration {
    pub pipeline: Pipeline,
}

/// How the pipeline handles several executions at once (docs/design.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionMode {
    /// One execution per stage; a newer waiting execution replaces an older one.
    #[default]
    Superseded,
    /// Executions run in order and none is superseded.
    Queued,
    /// Executions run independently of each other.
    Parallel,
}

impl ExecutionMode {
    /// Every mode, in the order CodePipeline documents them.
    pub const ALL: [ExecutionMode; 3] = [Self::Superseded, Self::Queued, Self::Parallel];

    /// The name used in declarations: `SUPERSEDED`, `QUEUED` or `PARALLEL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Superseded => "SUPERSEDED",
            Self::Queued => "QUEUED",
            Self::Parallel => "PARALLEL",
        }
    }

    /// The mode with the given declaration name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == name)
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline: its stages, variables and triggers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pipeline {
    pub name: String,
    /// `V1` or `V2`, kept for CodePipeline compatibility; Sluice treats both alike.
    pub pipeline_type: Option<String>,
    pub execution_mode: ExecutionMode,
    pub variables: Vec<Variable>,
    /// Kept as written until triggers get a typed model.
    pub triggers: Vec<Value>,
    pub stages: Vec<Stage>,
    /// Accepted and given back; the store assigns the real version.
    pub version: Option<u64>,
    /// [`PIPELINE_PASSTHROUGH`] fields, in document order.
    pub extra: Map<String, Value>,
}

impl Pipeline {
    /// The stage with this name.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// The declared variable with this name.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|variable| variable.name == name)
    }
}

/// A pipeline variable, referenced as `#{variables.NAME}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A stage: actions grouped by `runOrder`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stage {
    pub name: String,
    pub actions: Vec<Action>,
    /// [`STAGE_PASSTHROUGH`] fields, in document order.
    pub extra: Map<String, Value>,
}

impl Stage {
    /// The action with this name.
    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.iter().find(|action| action.name == name)
    }

    /// The actions grouped by run order, ascending; within a group, in
    /// declaration order. Each group runs in parallel, the groups in series.
    pub fn run_order_groups(&self) -> Vec<(u32, Vec<&Action>)> {
        let mut groups: BTreeMap<u32, Vec<&Action>> = BTreeMap::new();
        for action in &self.actions {
            groups.entry(action.run_order()).or_default().push(action);
        }
        groups.into_iter().collect()
    }
}

/// One action: a plugin (`actionTypeId.provider@version`) run with its
/// configuration, input and output artifacts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Action {
    pub name: String,
    pub action_type_id: ActionTypeId,
    /// As declared; absent stays absent so that `get` returns what `create`
    /// accepted. Use [`Action::run_order`] for the effective value.
    pub run_order: Option<u32>,
    pub configuration: Configuration,
    pub input_artifacts: Vec<InputArtifact>,
    pub output_artifacts: Vec<OutputArtifact>,
    pub namespace: Option<String>,
    pub timeout_in_minutes: Option<u32>,
    /// Sluice: what the plugin is granted (docs/design.md section 4).
    pub capabilities: Option<Capabilities>,
    /// Sluice: labels an agent must carry to run this action.
    pub agent_labels: BTreeMap<String, String>,
    /// Sluice: how often a Source action is polled for a new revision, in
    /// seconds; 0 turns polling off (webhooks only). Absent: the default.
    pub poll_interval_seconds: Option<u32>,
    /// Sluice: whether an attempt lost with its agent (killed, cut off,
    /// silent past its lease) runs again on another agent, as Buildkite's
    /// `retry: automatic: exit_status: -1`. Absent means no: only the
    /// pipeline's author knows whether running the action twice is safe.
    pub retry_on_agent_lost: Option<bool>,
    /// Sluice: the sha256 the action's plugin must have (refused otherwise),
    /// so that a re-registered version cannot change what runs.
    pub plugin_digest: Option<String>,
    /// [`ACTION_PASSTHROUGH`] fields, in document order.
    pub extra: Map<String, Value>,
}

impl Action {
    /// The effective run order: as declared, else [`limits::DEFAULT_RUN_ORDER`].
    pub fn run_order(&self) -> u32 {
        self.run_order.unwrap_or(limits::DEFAULT_RUN_ORDER)
    }

    /// The effective polling interval of a Source action, in seconds (0: off).
    pub fn poll_interval_seconds(&self) -> u32 {
        self.poll_interval_seconds.unwrap_or(limits::DEFAULT_POLL_INTERVAL_SECONDS)
    }

    /// Whether an attempt lost with its agent is run again.
    pub fn retries_on_agent_lost(&self) -> bool {
        self.retry_on_agent_lost.unwrap_or(false)
    }

    /// The effective timeout: as declared, else 7 days for an `Approval`
    /// action and 60 minutes for any other (docs/design.md section 3).
    pub fn timeout_minutes(&self) -> u32 {
        self.timeout_in_minutes.unwrap_or(if self.action_type_id.category == "Approval" {
            limits::DEFAULT_APPROVAL_TIMEOUT_MINUTES
        } else {
            limits::DEFAULT_TIMEOUT_MINUTES
        })
    }
}

/// Which plugin runs an action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct ActionTypeId {
    /// `Source`, `Build`, `Test`, `Deploy`, `Approval`, `Invoke` or `Compute`.
    pub category: String,
    /// `Sluice` (built-in) or `Custom` (pushed); `AWS` and `ThirdParty` only
    /// on import, to be remapped.
    pub owner: String,
    pub provider: String,
    pub version: String,
}

impl ActionTypeId {
    /// `provider@version`, the name a plugin is registered under.
    pub fn provider_key(&self) -> String {
        format!("{}@{}", self.provider, self.version)
    }
}

/// An artifact an action consumes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct InputArtifact {
    pub name: String,
}

/// An artifact an action produces.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct OutputArtifact {
    pub name: String,
    /// Which files of the action's output directory make up the artifact
    /// (CodePipeline's compute-action field); all files when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

/// What an action grants its plugin; everything not listed is denied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Capabilities {
    /// Host programs the plugin may spawn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// `host:port` the plugin may reach over outgoing HTTP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<String>,
    /// Secret names the plugin may read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Environment variables passed through from the agent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Host paths the plugin may open.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<String>,
    /// TCP ports the plugin's host programs may use (`tcp:PORT`,
    /// `tcp-bind:PORT`); port-level, not host-level.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
}

impl Capabilities {
    /// The same lists as the host's grants.
    pub fn grants(&self) -> sluice_protocol::Grants {
        sluice_protocol::Grants {
            exec: self.exec.clone(),
            http: self.http.clone(),
            secrets: self.secrets.clone(),
            env: self.env.clone(),
            fs: self.fs.clone(),
            net: self.net.clone(),
        }
    }
}

/// An action's configuration: string keys to string values, in declaration
/// order. CodePipeline's rule that every value is a string is enforced by the
/// type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configuration(Vec<(String, String)>);

impl Configuration {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key`, keeping its position if it was already present.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The entries in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The keys in declaration order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Configuration {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut configuration = Configuration::new();
        for (key, value) in iter {
            configuration.insert(key, value);
        }
        configuration
    }
}

impl Serialize for Configuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Writes the `extra` entries named in `keys`, in that order.
fn passthrough<M: SerializeMap>(map: &mut M, extra: &Map<String, Value>, keys: &[&str]) -> Result<(), M::Error> {
    for key in keys {
        if let Some(value) = extra.get(*key) {
            map.serialize_entry(key, value)?;
        }
    }
    Ok(())
}

/// Writes the `extra` entries that are neither typed fields nor CodePipeline
/// passthrough fields (only possible for a declaration built in code), after
/// everything else so that nothing put in `extra` is lost.
fn leftovers<M: SerializeMap>(
    map: &mut M,
    extra: &Map<String, Value>,
    typed: &[&str],
    known: &[&str],
) -> Result<(), M::Error> {
    for (key, value) in extra {
        if !typed.contains(&key.as_str()) && !known.contains(&key.as_str()) {
            map.serialize_entry(key, value)?;
        }
    }
    Ok(())
}

impl Serialize for Pipeline {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        passthrough(&mut map, &self.extra, PIPELINE_PASSTHROUGH)?;
        map.serialize_entry("stages", &self.stages)?;
        if let Some(version) = self.version {
            map.serialize_entry("version", &version)?;
        }
        map.serialize_entry("executionMode", &self.execution_mode)?;
        if let Some(pipeline_type) = &self.pipeline_type {
            map.serialize_entry("pipelineType", pipeline_type)?;
        }
        if !self.variables.is_empty() {
            map.serialize_entry("variables", &self.variables)?;
        }
        if !self.triggers.is_empty() {
            map.serialize_entry("triggers", &self.triggers)?;
        }
        leftovers(&mut map, &self.extra, parse::PIPELINE_FIELDS, PIPELINE_PASSTHROUGH)?;
        map.end()
    }
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        passthrough(&mut map, &self.extra, &["blockers"])?;
        map.serialize_entry("actions", &self.actions)?;
        passthrough(&mut map, &self.extra, &["onFailure", "onSuccess", "beforeEntry"])?;
        leftovers(&mut map, &self.extra, parse::STAGE_FIELDS, STAGE_PASSTHROUGH)?;
        map.end()
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("actionTypeId", &self.action_type_id)?;
        if let Some(run_order) = self.run_order {
            map.serialize_entry("runOrder", &run_order)?;
        }
        if !self.configuration.is_empty() {
            map.serialize_entry("configuration", &self.configuration)?;
        }
        passthrough(&mut map, &self.extra, &["commands"])?;
        if !self.output_artifacts.is_empty() {
            map.serialize_entry("outputArtifacts", &self.output_artifacts)?;
        }
        if !self.input_artifacts.is_empty() {
            map.serialize_entry("inputArtifacts", &self.input_artifacts)?;
        }
        passthrough(&mut map, &self.extra, &["outputVariables", "roleArn", "region"])?;
        if let Some(namespace) = &self.namespace {
            map.serialize_entry("namespace", namespace)?;
        }
        if let Some(timeout) = self.timeout_in_minutes {
            map.serialize_entry("timeoutInMinutes", &timeout)?;
        }
        passthrough(&mut map, &self.extra, &["environmentVariables"])?;
        if let Some(capabilities) = &self.capabilities {
            map.serialize_entry("capabilities", capabilities)?;
        }
        if !self.agent_labels.is_empty() {
            map.serialize_entry("agentLabels", &self.agent_labels)?;
        }
        if let Some(interval) = self.poll_interval_seconds {
            map.serialize_entry("pollIntervalSeconds", &interval)?;
        }
        if let Some(digest) = &self.plugin_digest {
            map.serialize_entry("pluginDigest", digest)?;
        }
        if let Some(retry) = self.retry_on_agent_lost {
            map.serialize_entry("retryOnAgentLost", &retry)?;
        }
        leftovers(&mut map, &self.extra, parse::ACTION_FIELDS, ACTION_PASSTHROUGH)?;
        map.end()
    }
}

/// Deserializes through the declaration walker, so that serde and
/// [`super::parse()`] accept and reject exactly the same documents.
macro_rules! deserialize_with_walker {
    ($($ty:ty => $walker:path),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(deserializer)?;
                let mut cx = Cx::default();
                let out = $walker(&value, "", &mut cx);
                cx.finish(out).map_err(D::Error::custom)
            }
        }
    )*};
}

deserialize_with_walker! {
    Declaration => parse::declaration,
    Pipeline => parse::pipeline,
    Stage => parse::stage,
    Action => parse::action,
    ActionTypeId => parse::action_type_id,
    Variable => parse::variable,
    InputArtifact => parse::input_artifact,
    OutputArtifact => parse::output_artifact,
    Capabilities => parse::capabilities,
    Configuration => parse::configuration,
    ExecutionMode => parse::execution_mode,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str, run_order: Option<u32>) -> Action {
        Action { name: name.into(), run_order, ..Action::default() }
    }

    #[test]
    fn run_order_groups_ascend_and_keep_declaration_order() {
        let stage = Stage {
            name: "Build".into(),
            actions: vec![action("c", Some(3)), action("a", None), action("b", Some(1)), action("d", Some(2))],
            extra: Map::new(),
        };
        let groups: Vec<(u32, Vec<&str>)> = stage
            .run_order_groups()
            .into_iter()
            .map(|(order, actions)| (order, actions.iter().map(|a| a.name.as_str()).collect()))
            .collect();
        assert_eq!(groups, vec![(1, vec!["a", "b"]), (2, vec!["d"]), (3, vec!["c"])]);
    }

    #[test]
    fn effective_defaults() {
        let mut a = action("a", None);
        assert_eq!(a.run_order(), 1);
        assert_eq!(a.timeout_minutes(), 60);
        a.action_type_id.category = "Approval".into();
        assert_eq!(a.timeout_minutes(), 7 * 24 * 60);
        a.timeout_in_minutes = Some(5);
        assert_eq!(a.timeout_minutes(), 5);
    }

    #[test]
    fn configuration_keeps_order_and_replaces_in_place() {
        let mut c: Configuration = [("B", "1"), ("A", "2")].into_iter().collect();
        c.insert("B", "3");
        c.insert("C", "4");
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![("B", "3"), ("A", "2"), ("C", "4")]);
        assert_eq!(c.get("A"), Some("2"));
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"B":"3","A":"2","C":"4"}"#);
    }

    #[test]
    fn extras_go_back_where_codepipeline_has_them() {
        let mut a = action("a", Some(2));
        a.extra.insert("region".into(), "eu-west-1".into());
        a.extra.insert("commands".into(), serde_json::json!(["make"]));
        a.extra.insert("sluiceLater".into(), true.into());
        a.namespace = Some("N".into());
        let keys: Vec<String> = match serde_json::to_value(&a).unwrap() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        };
        assert_eq!(keys, ["name", "actionTypeId", "runOrder", "commands", "region", "namespace", "sluiceLater"]);
    }

    #[test]
    fn serde_deserialize_rejects_unknown_fields_with_paths() {
        let err = serde_json::from_value::<Stage>(serde_json::json!({
            "name": "S", "actions": [{"name": "a", "bogus": 1,
                "actionTypeId": {"category": "Build", "owner": "Sluice", "provider": "noop", "version": "1"}}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("actions[0].bogus: unknown field \"bogus\""), "{err}");
    }

    #[test]
    fn execution_mode_names() {
        for mode in ExecutionMode::ALL {
            assert_eq!(ExecutionMode::from_name(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), Value::from(mode.as_str()));
        }
        assert_eq!(ExecutionMode::from_name("superseded"), None);
    }
}
