//! The validation phase: the rules of a well-formed pipeline (names, limits,
//! artifact flow, variable references) and of its actions' providers, checked
//! on the typed model. Every problem is reported, each with its JSON path.
//!
//! Providers are looked up through [`ProviderCatalog`], so this module knows
//! nothing of how plugins are stored or registered.

use std::collections::{BTreeMap, HashMap};

use super::Diagnostic;
use super::limits;
use super::model::{Action, Declaration, Pipeline, Stage};
use super::parse::{child, index};
use super::vars::{self, Piece, VarRef};

/// What the validator needs to know about a registered provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The category an action using this provider must declare.
    pub category: String,
    /// The configuration keys the provider understands.
    pub properties: Vec<PropertyInfo>,
    /// Fewest and most input artifacts.
    pub inputs: (u32, u32),
    /// Fewest and most output artifacts.
    pub outputs: (u32, u32),
    /// The sha256 of the registered component (none for providers the
    /// controller runs itself).
    pub digest: Option<String>,
}

/// One configuration key of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyInfo {
    pub name: String,
    pub required: bool,
}

/// The providers a declaration may use, as registered with the controller.
pub trait ProviderCatalog {
    /// The provider `provider@version` of `owner` (`Sluice` or `Custom`).
    fn provider(&self, owner: &str, provider: &str, version: &str) -> Option<ProviderInfo>;

    /// Every registered provider as `provider@version`, to help the user when
    /// a lookup fails.
    fn known(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A fixed, in-memory catalog: for tests, and for callers that snapshot the
/// plugin registry before validating.
#[derive(Debug, Clone, Default)]
pub struct StaticCatalog {
    providers: BTreeMap<(String, String, String), ProviderInfo>,
}

impl StaticCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `provider@version` for `owner`.
    pub fn insert(&mut self, owner: &str, provider: &str, version: &str, info: ProviderInfo) {
        self.providers.insert((owner.into(), provider.into(), version.into()), info);
    }

    /// [`StaticCatalog::insert`], by value.
    pub fn with(mut self, owner: &str, provider: &str, version: &str, info: ProviderInfo) -> Self {
        self.insert(owner, provider, version, info);
        self
    }
}

impl ProviderCatalog for StaticCatalog {
    fn provider(&self, owner: &str, provider: &str, version: &str) -> Option<ProviderInfo> {
        self.providers.get(&(owner.into(), provider.into(), version.into())).cloned()
    }

    fn known(&self) -> Vec<String> {
        let mut known: Vec<String> =
            self.providers.keys().map(|(_, provider, version)| format!("{provider}@{version}")).collect();
        known.dedup();
        known
    }
}

/// CodePipeline's action categories.
pub const CATEGORIES: &[&str] = &["Source", "Build", "Test", "Deploy", "Approval", "Invoke", "Compute"];

/// Owners whose providers Sluice runs: built-in plugins and pushed plugins.
pub const OWNERS: &[&str] = &["Sluice", "Custom"];

/// CodePipeline owners, accepted only once their providers are remapped.
pub const IMPORT_OWNERS: &[&str] = &["AWS", "ThirdParty"];

/// `pipelineType` values.
pub const PIPELINE_TYPES: &[&str] = &["V1", "V2"];

/// The rule a kind of name follows.
struct NameRule {
    what: &'static str,
    max: usize,
    allowed: fn(char) -> bool,
    chars: &'static str,
}

fn declaration_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '-' | '_')
}

fn dotless_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '@' | '-' | '_')
}

fn artifact_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

const PIPELINE_NAME: NameRule =
    NameRule { what: "pipeline name", max: limits::NAME_MAX_LEN, allowed: declaration_char, chars: "A-Z a-z 0-9 . @ - _" };
const STAGE_NAME: NameRule = NameRule { what: "stage name", ..PIPELINE_NAME };
const ACTION_NAME: NameRule = NameRule { what: "action name", ..PIPELINE_NAME };
/// CodePipeline's artifact rule, stricter than other names; it also keeps
/// `.` and `..` out of the directory names artifacts get on agents.
const ARTIFACT_NAME: NameRule =
    NameRule { what: "artifact name", max: limits::NAME_MAX_LEN, allowed: artifact_char, chars: "A-Z a-z 0-9 - _" };
/// CodePipeline's namespace rule: no `.`, which separates namespace and name
/// in `#{Namespace.Name}`.
const NAMESPACE_NAME: NameRule =
    NameRule { what: "namespace", max: limits::NAME_MAX_LEN, allowed: dotless_char, chars: "A-Z a-z 0-9 @ - _" };
const VARIABLE_NAME: NameRule = NameRule {
    what: "variable name",
    max: limits::VARIABLE_NAME_MAX_LEN,
    allowed: dotless_char,
    chars: "A-Z a-z 0-9 @ - _",
};

/// Where an action sits, to decide what runs before what.
#[derive(Clone, Copy)]
struct Site<'d> {
    stage: usize,
    action: usize,
    run_order: u32,
    stage_name: &'d str,
    action_name: &'d str,
}

impl<'d> Site<'d> {
    fn new(stage: usize, stage_decl: &'d Stage, action: usize, action_decl: &'d Action) -> Self {
        Site {
            stage,
            action,
            run_order: action_decl.run_order(),
            stage_name: &stage_decl.name,
            action_name: &action_decl.name,
        }
    }

    fn runs_before(&self, other: &Site<'_>) -> bool {
        (self.stage, self.run_order) < (other.stage, other.run_order)
    }

    fn same_action(&self, other: &Site<'_>) -> bool {
        (self.stage, self.action) == (other.stage, other.action)
    }

    fn path(&self) -> String {
        format!("pipeline.stages[{}].actions[{}]", self.stage, self.action)
    }

    /// Why `self` (a producer) cannot serve `consumer`, which it does not run before.
    fn not_before(&self, consumer: &Site<'_>) -> String {
        if self.same_action(consumer) {
            "this action itself".into()
        } else if self.stage == consumer.stage && self.run_order == consumer.run_order {
            format!(
                "action {:?}, which runs in parallel with this action; give this action a higher runOrder",
                self.action_name
            )
        } else if self.stage == consumer.stage {
            format!("action {:?} at runOrder {}, which runs after this action", self.action_name, self.run_order)
        } else {
            format!("action {:?} in stage {:?}, which runs after this action", self.action_name, self.stage_name)
        }
    }
}

struct Validator<'d> {
    pipeline: &'d Pipeline,
    catalog: &'d dyn ProviderCatalog,
    /// First producer of each output artifact.
    producers: HashMap<&'d str, Site<'d>>,
    /// First action declaring each namespace.
    namespaces: HashMap<&'d str, Site<'d>>,
    diagnostics: Vec<Diagnostic>,
}

/// Checks a parsed declaration and returns every problem found; empty means
/// the pipeline can be stored and run.
pub fn validate(declaration: &Declaration, catalog: &dyn ProviderCatalog) -> Vec<Diagnostic> {
    let pipeline = &declaration.pipeline;
    let mut v =
        Validator { pipeline, catalog, producers: HashMap::new(), namespaces: HashMap::new(), diagnostics: Vec::new() };
    for (site, action) in v.sites() {
        for output in &action.output_artifacts {
            v.producers.entry(output.name.as_str()).or_insert(site);
        }
        if let Some(namespace) = &action.namespace {
            v.namespaces.entry(namespace.as_str()).or_insert(site);
        }
    }
    v.pipeline_level();
    v.stages();
    v.diagnostics
}

impl<'d> Validator<'d> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic { path: path.into(), message: message.into() });
    }

    /// Every action with where it sits, in declaration order.
    fn sites(&self) -> Vec<(Site<'d>, &'d Action)> {
        let pipeline: &'d Pipeline = self.pipeline;
        let mut sites = Vec::new();
        for (si, stage) in pipeline.stages.iter().enumerate() {
            for (ai, action) in stage.actions.iter().enumerate() {
                let site = Site::new(si, stage, ai, action);
                sites.push((site, action));
            }
        }
        sites
    }

    fn name(&mut self, path: &str, name: &str, rule: &NameRule) {
        let what = rule.what;
        let length = name.chars().count();
        if name.is_empty() {
            self.error(path, format!("{what} must not be empty"));
        } else if length > rule.max {
            self.error(path, format!("{what} is {length} characters long, more than {}", rule.max));
        } else if !name.chars().all(rule.allowed) {
            self.error(path, format!("{what} {name:?} may only contain {}", rule.chars));
        } else if name == "." || name == ".." {
            self.error(path, format!("{what} {name:?} is reserved"));
        }
    }

    fn pipeline_level(&mut self) {
        let pipeline = self.pipeline;
        self.name("pipeline.name", &pipeline.name, &PIPELINE_NAME);
        if let Some(pipeline_type) = &pipeline.pipeline_type
            && !PIPELINE_TYPES.contains(&pipeline_type.as_str())
        {
            self.error("pipeline.pipelineType", format!("unknown pipeline type {pipeline_type:?}, expected V1 or V2"));
        }
        let stages = pipeline.stages.len();
        if !(limits::MIN_STAGES..=limits::MAX_STAGES).contains(&stages) {
            self.error(
                "pipeline.stages",
                format!("a pipeline has {} to {} stages, found {stages}", limits::MIN_STAGES, limits::MAX_STAGES),
            );
        }
        self.variables();
        self.triggers();
    }

    fn variables(&mut self) {
        let variables = &self.pipeline.variables;
        if variables.len() > limits::MAX_VARIABLES {
            self.error(
                "pipeline.variables",
                format!("a pipeline has at most {} variables, found {}", limits::MAX_VARIABLES, variables.len()),
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, variable) in variables.iter().enumerate() {
            let path = index("pipeline.variables", i);
            self.name(&child(&path, "name"), &variable.name, &VARIABLE_NAME);
            if let Some(first) = seen.insert(&variable.name, i) {
                seen.insert(&variable.name, first);
                self.error(
                    child(&path, "name"),
                    format!("variable {:?} is already declared at pipeline.variables[{first}]", variable.name),
                );
            }
            if let Some(default) = &variable.default_value
                && default.chars().count() > limits::VARIABLE_DEFAULT_MAX_LEN
            {
                self.error(
                    child(&path, "defaultValue"),
                    format!("default value is longer than {} characters", limits::VARIABLE_DEFAULT_MAX_LEN),
                );
            }
            if let Some(description) = &variable.description
                && description.chars().count() > limits::VARIABLE_DESCRIPTION_MAX_LEN
            {
                self.error(
                    child(&path, "description"),
                    format!("description is longer than {} characters", limits::VARIABLE_DESCRIPTION_MAX_LEN),
                );
            }
        }
    }

    /// Triggers are otherwise kept as written; the one cross-reference they
    /// hold, the source action they watch, is checked now rather than when
    /// the first push arrives.
    fn triggers(&mut self) {
        let pipeline = self.pipeline;
        if let Err(problems) = super::triggers::git_triggers(pipeline) {
            self.diagnostics.extend(problems);
        }
        for (i, trigger) in pipeline.triggers.iter().enumerate() {
            let Some(name) = trigger.pointer("/gitConfiguration/sourceActionName").and_then(|v| v.as_str()) else {
                continue;
            };
            let found = pipeline.stages.first().and_then(|stage| stage.action(name));
            if found.is_none_or(|action| action.action_type_id.category != "Source") {
                self.error(
                    format!("pipeline.triggers[{i}].gitConfiguration.sourceActionName"),
                    format!("there is no Source action {name:?} in the first stage"),
                );
            }
        }
    }

    fn stages(&mut self) {
        let pipeline = self.pipeline;
        let mut stage_names: HashMap<&str, usize> = HashMap::new();
        for (si, stage) in pipeline.stages.iter().enumerate() {
            let path = index("pipeline.stages", si);
            self.name(&child(&path, "name"), &stage.name, &STAGE_NAME);
            if let Err(problems) = super::conditions::stage_conditions(stage, &path) {
                self.diagnostics.extend(problems);
            }
            match stage_names.get(stage.name.as_str()) {
                Some(first) => self.error(
                    child(&path, "name"),
                    format!("stage name {:?} is already used by pipeline.stages[{first}]", stage.name),
                ),
                None => {
                    stage_names.insert(&stage.name, si);
                }
            }
            let actions = stage.actions.len();
            if !(limits::MIN_ACTIONS_PER_STAGE..=limits::MAX_ACTIONS_PER_STAGE).contains(&actions) {
                self.error(
                    child(&path, "actions"),
                    format!(
                        "a stage has {} to {} actions, found {actions}",
                        limits::MIN_ACTIONS_PER_STAGE,
                        limits::MAX_ACTIONS_PER_STAGE
                    ),
                );
            }
            // Action names are unique within a stage, as in CodePipeline.
            let mut action_names: HashMap<&str, usize> = HashMap::new();
            for (ai, action) in stage.actions.iter().enumerate() {
                let apath = index(&child(&path, "actions"), ai);
                match action_names.get(action.name.as_str()) {
                    Some(first) => self.error(
                        child(&apath, "name"),
                        format!(
                            "action name {:?} is already used in this stage by {}",
                            action.name,
                            index(&child(&path, "actions"), *first)
                        ),
                    ),
                    None => {
                        action_names.insert(&action.name, ai);
                    }
                }
                let site = Site::new(si, stage, ai, action);
                self.action(&apath, site, action);
            }
        }
    }

    fn action(&mut self, path: &str, site: Site<'d>, action: &'d Action) {
        self.name(&child(path, "name"), &action.name, &ACTION_NAME);
        if let Some(run_order) = action.run_order
            && !(limits::MIN_RUN_ORDER..=limits::MAX_RUN_ORDER).contains(&run_order)
        {
            self.error(
                child(path, "runOrder"),
                format!("runOrder is {} to {}, found {run_order}", limits::MIN_RUN_ORDER, limits::MAX_RUN_ORDER),
            );
        }
        if let Some(timeout) = action.timeout_in_minutes
            && !(limits::MIN_TIMEOUT_MINUTES..=limits::MAX_TIMEOUT_MINUTES).contains(&timeout)
        {
            self.error(
                child(path, "timeoutInMinutes"),
                format!(
                    "timeoutInMinutes is {} to {}, found {timeout}",
                    limits::MIN_TIMEOUT_MINUTES,
                    limits::MAX_TIMEOUT_MINUTES
                ),
            );
        }
        if let Some(interval) = action.poll_interval_seconds {
            if action.action_type_id.category != "Source" {
                self.error(child(path, "pollIntervalSeconds"), "only Source actions are polled for changes");
            } else if interval > limits::MAX_POLL_INTERVAL_SECONDS {
                self.error(
                    child(path, "pollIntervalSeconds"),
                    format!(
                        "pollIntervalSeconds is 0 (no polling) or 1 to {}, found {interval}",
                        limits::MAX_POLL_INTERVAL_SECONDS
                    ),
                );
            }
        }
        self.namespace(path, site, action);
        self.action_type(path, site, action);
        self.configuration(path, site, action);
        self.artifacts(path, site, action);
        self.grants(path, action);
    }

    fn namespace(&mut self, path: &str, site: Site<'d>, action: &Action) {
        let Some(namespace) = &action.namespace else {
            return;
        };
        let path = child(path, "namespace");
        self.name(&path, namespace, &NAMESPACE_NAME);
        if namespace == vars::VARIABLES_NAMESPACE || namespace == vars::CODEPIPELINE_NAMESPACE {
            self.error(&path, format!("namespace {namespace:?} is reserved"));
        } else if let Some(first) = self.namespaces.get(namespace.as_str())
            && !first.same_action(&site)
        {
            let message = format!("namespace {namespace:?} is already declared by {}", first.path());
            self.error(&path, message);
        }
    }

    fn action_type(&mut self, action_path: &str, site: Site<'d>, action: &Action) {
        let id = &action.action_type_id;
        let path = child(action_path, "actionTypeId");
        let category_path = child(&path, "category");
        if !CATEGORIES.contains(&id.category.as_str()) {
            self.error(
                &category_path,
                format!("unknown category {:?}, expected one of {}", id.category, CATEGORIES.join(", ")),
            );
        } else if site.stage == 0 && id.category != "Source" {
            self.error(
                &category_path,
                format!("the first stage may only contain Source actions, this is a {} action", id.category),
            );
        } else if site.stage > 0 && id.category == "Source" {
            self.error(&category_path, "Source actions may only be in the first stage");
        }

        if IMPORT_OWNERS.contains(&id.owner.as_str()) {
            self.error(
                &path,
                format!(
                    "provider {:?} (owner {}) has no mapping: map it to a Sluice or Custom provider before loading",
                    id.provider, id.owner
                ),
            );
            return;
        }
        if !OWNERS.contains(&id.owner.as_str()) {
            self.error(child(&path, "owner"), format!("unknown owner {:?}, expected Sluice or Custom", id.owner));
            return;
        }
        let mut named = true;
        for (field, value) in [("provider", &id.provider), ("version", &id.version)] {
            if value.is_empty() {
                self.error(child(&path, field), format!("{field} must not be empty"));
                named = false;
            }
        }
        if !named {
            return;
        }
        let Some(info) = self.catalog.provider(&id.owner, &id.provider, &id.version) else {
            let known = self.catalog.known();
            let known = if known.is_empty() {
                "no providers are registered".to_owned()
            } else {
                format!("known providers: {}", known.join(", "))
            };
            self.error(&path, format!("unknown provider {}@{} (owner {}); {known}", id.provider, id.version, id.owner));
            return;
        };
        let key = id.provider_key();
        if let Some(pin) = &action.plugin_digest {
            let wanted = pin.strip_prefix("sha256:").unwrap_or(pin);
            if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    child(action_path, "pluginDigest"),
                    "expected a sha256 digest (64 hex digits, optionally sha256:)",
                );
            } else if info.digest.as_deref() != Some(&wanted.to_ascii_lowercase()) {
                self.error(
                    child(action_path, "pluginDigest"),
                    format!(
                        "{key} is registered with digest {}, not the pinned {wanted}",
                        info.digest.as_deref().unwrap_or("none (it runs in the controller)")
                    ),
                );
            }
        }
        if !category_fits(&info.category, &id.category) && CATEGORIES.contains(&id.category.as_str()) {
            self.error(&category_path, format!("provider {key} is a {} provider, not {}", info.category, id.category));
        }
        let config_path = child(action_path, "configuration");
        for property in info.properties.iter().filter(|p| p.required) {
            if action.configuration.get(&property.name).is_none() {
                self.error(&config_path, format!("provider {key} requires configuration key {:?}", property.name));
            }
        }
        for key_name in action.configuration.keys() {
            if !info.properties.iter().any(|p| p.name == key_name) {
                let keys: Vec<&str> = info.properties.iter().map(|p| p.name.as_str()).collect();
                let keys =
                    if keys.is_empty() { "it takes none".to_owned() } else { format!("its keys: {}", keys.join(", ")) };
                self.error(
                    child(&config_path, key_name),
                    format!("provider {key} has no configuration key {key_name:?} ({keys})"),
                );
            }
        }
        for (field, noun, (min, max), found) in [
            ("inputArtifacts", "input", info.inputs, action.input_artifacts.len()),
            ("outputArtifacts", "output", info.outputs, action.output_artifacts.len()),
        ] {
            let found = u32::try_from(found).unwrap_or(u32::MAX);
            if !(min..=max).contains(&found) {
                let takes = match (min, max) {
                    (0, 0) => format!("no {noun} artifacts"),
                    (min, max) if min == max => {
                        format!("exactly {min} {noun} artifact{}", if min == 1 { "" } else { "s" })
                    }
                    (min, max) => format!("{min} to {max} {noun} artifacts"),
                };
                self.error(child(action_path, field), format!("provider {key} takes {takes}, found {found}"));
            }
        }
    }

    fn configuration(&mut self, path: &str, site: Site<'d>, action: &Action) {
        let config_path = child(path, "configuration");
        if action.action_type_id.category == "Approval"
            && action.action_type_id.provider == "manual"
            && let Some(n) = action.configuration.get("RequiredApprovals")
            && !n.trim().parse::<u32>().is_ok_and(|n| (1..=limits::MAX_REQUIRED_APPROVALS).contains(&n))
        {
            self.error(
                child(&config_path, "RequiredApprovals"),
                format!("RequiredApprovals is a whole number from 1 to {}, found {n:?}", limits::MAX_REQUIRED_APPROVALS),
            );
        }
        // Separation of duties (issue 15, gov).
        if action.action_type_id.category == "Approval"
            && action.action_type_id.provider == "manual"
            && let Some(text) = action.configuration.get("Approvers")
        {
            let at = child(&config_path, "Approvers");
            match super::approvers::parse(text) {
                Ok(list) => {
                    let required = action.configuration.get("RequiredApprovals").and_then(|n| n.trim().parse().ok());
                    if let Err(why) = super::approvers::check_enough(&list, required.unwrap_or(1)) {
                        self.error(at, why);
                    }
                }
                Err(problems) => {
                    for problem in problems {
                        self.error(at.clone(), problem);
                    }
                }
            }
        }
        for (key, value) in action.configuration.iter() {
            let path = child(&config_path, key);
            if key.is_empty() {
                self.error(&path, "configuration key must not be empty");
            } else if key.chars().count() > limits::CONFIG_KEY_MAX_LEN {
                self.error(&path, format!("configuration key is longer than {} characters", limits::CONFIG_KEY_MAX_LEN));
            }
            if value.len() > limits::CONFIG_VALUE_MAX_LEN {
                self.error(
                    &path,
                    format!(
                        "configuration value is {} bytes, more than the limit of {}",
                        value.len(),
                        limits::CONFIG_VALUE_MAX_LEN
                    ),
                );
            }
            for piece in vars::pieces(value) {
                match piece {
                    Piece::Text(_) => {}
                    Piece::Malformed { text, reason } => {
                        self.error(&path, format!("malformed variable reference {text:?}: {reason}"));
                    }
                    Piece::Ref(reference) => {
                        if let Some(problem) = self.reference(&reference, site) {
                            self.error(&path, format!("variable reference \"{reference}\": {problem}"));
                        }
                    }
                }
            }
        }
    }

    /// Why `reference`, used by the action at `site`, cannot be resolved.
    fn reference(&self, reference: &VarRef, site: Site<'d>) -> Option<String> {
        let VarRef { namespace, name } = reference;
        match namespace.as_str() {
            vars::VARIABLES_NAMESPACE => {
                self.pipeline.variable(name).is_none().then(|| format!("no pipeline variable {name:?} is declared"))
            }
            vars::CODEPIPELINE_NAMESPACE => (!vars::CODEPIPELINE_VARIABLES.contains(&name.as_str()))
                .then(|| format!("the codepipeline namespace only has {}", vars::CODEPIPELINE_VARIABLES.join(", "))),
            _ => match self.namespaces.get(namespace.as_str()) {
                None => Some(format!("no action declares namespace {namespace:?}")),
                Some(producer) if !producer.runs_before(&site) => {
                    Some(format!("namespace {namespace:?} belongs to {}", producer.not_before(&site)))
                }
                Some(_) => None,
            },
        }
    }

    fn artifacts(&mut self, path: &str, site: Site<'d>, action: &Action) {
        let outputs_path = child(path, "outputArtifacts");
        for (i, output) in action.output_artifacts.iter().enumerate() {
            let path = index(&outputs_path, i);
            self.name(&child(&path, "name"), &output.name, &ARTIFACT_NAME);
            if let Some(first) = self.producers.get(output.name.as_str())
                && !first.same_action(&site)
            {
                let message = format!(
                    "artifact {:?} is already produced by {}; output artifact names are unique in a pipeline",
                    output.name,
                    first.path()
                );
                self.error(&path, message);
            } else if action.output_artifacts[..i].iter().any(|o| o.name == output.name) {
                self.error(&path, format!("artifact {:?} is listed twice", output.name));
            }
            for (fi, file) in output.files.iter().flatten().enumerate() {
                if file.is_empty() {
                    self.error(index(&child(&path, "files"), fi), "file pattern must not be empty");
                }
            }
        }
        let inputs_path = child(path, "inputArtifacts");
        for (i, input) in action.input_artifacts.iter().enumerate() {
            let path = index(&inputs_path, i);
            self.name(&child(&path, "name"), &input.name, &ARTIFACT_NAME);
            if action.input_artifacts[..i].iter().any(|other| other.name == input.name) {
                self.error(&path, format!("artifact {:?} is listed twice", input.name));
                continue;
            }
            match self.producers.get(input.name.as_str()) {
                None => self.error(&path, format!("artifact {:?} is not produced by any earlier action", input.name)),
                Some(producer) if !producer.runs_before(&site) => {
                    let message = format!("artifact {:?} is produced by {}", input.name, producer.not_before(&site));
                    self.error(&path, message);
                }
                Some(_) => {}
            }
        }
    }

    /// Capability grants and agent labels: emptiness, the `host:port`
    /// syntax of `http` grants and the `tcp:PORT` syntax of `net` grants;
    /// what a grant permits is for the agent's policy.
    fn grants(&mut self, path: &str, action: &Action) {
        if let Some(capabilities) = &action.capabilities {
            let path = child(path, "capabilities");
            for (kind, grants) in [
                ("exec", &capabilities.exec),
                ("http", &capabilities.http),
                ("secrets", &capabilities.secrets),
                ("env", &capabilities.env),
                ("fs", &capabilities.fs),
                ("net", &capabilities.net),
            ] {
                for (i, grant) in grants.iter().enumerate() {
                    if grant.is_empty() {
                        self.error(index(&child(&path, kind), i), "a grant must not be empty");
                    } else if kind == "http"
                        && let Err(e) = grant.parse::<sluice_runtime::net::Endpoint>()
                    {
                        self.error(index(&child(&path, kind), i), e);
                    } else if kind == "net"
                        && let Err(e) = grant.parse::<sluice_runtime::sandbox::NetGrant>()
                    {
                        self.error(index(&child(&path, kind), i), e);
                    }
                }
            }
        }
        if action.agent_labels.contains_key("") {
            self.error(child(path, "agentLabels"), "label names must not be empty");
        }
    }
}

/// Whether an action of `declared` category may use a provider of
/// `provided` category. Build and Test providers serve both, as CodeBuild
/// does in CodePipeline (a test step is a build tool run on built output);
/// every other category must match exactly.
fn category_fits(provided: &str, declared: &str) -> bool {
    const INTERCHANGEABLE: [&str; 2] = ["Build", "Test"];
    provided == declared || (INTERCHANGEABLE.contains(&provided) && INTERCHANGEABLE.contains(&declared))
}
