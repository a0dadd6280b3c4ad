//! What a plugin says about itself: the builder behind `describe`.

use crate::bindings::sluice::plugin::types as wit;

/// The CodePipeline action category a plugin belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// Produces the revision an execution carries (git, archives).
    Source,
    /// Turns input artifacts into output artifacts.
    Build,
    /// Checks input artifacts.
    Test,
    /// Puts input artifacts somewhere they run.
    Deploy,
    /// Waits for people.
    Approval,
    /// Calls something else (a notifier, a cloud function).
    Invoke,
}

impl Category {
    /// The name used in pipeline declarations (`"Build"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Source => "Source",
            Category::Build => "Build",
            Category::Test => "Test",
            Category::Deploy => "Deploy",
            Category::Approval => "Approval",
            Category::Invoke => "Invoke",
        }
    }
}

/// The type of a configuration property's value, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyType {
    /// Any text (the default).
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One item per line.
    List,
}

impl PropertyType {
    /// The name used in the WIT `config-property.type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Number => "number",
            PropertyType::Boolean => "boolean",
            PropertyType::List => "list",
        }
    }
}

/// One configuration property an action accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// The key in the action's `configuration` (`Url`).
    pub name: String,
    /// Whether the pipeline must set it.
    pub required: bool,
    /// Whether the value is a secret, masked in logs and in `pipeline get`.
    pub secret: bool,
    /// One sentence for users.
    pub description: String,
    /// The value's type.
    pub kind: PropertyType,
}

impl Property {
    /// A property the pipeline must set, of type string.
    pub fn required(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, description, true)
    }

    /// A property the pipeline may set, of type string.
    pub fn optional(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(name, description, false)
    }

    fn new(name: impl Into<String>, description: impl Into<String>, required: bool) -> Self {
        Self {
            name: name.into(),
            required,
            secret: false,
            description: description.into(),
            kind: PropertyType::String,
        }
    }

    /// Marks the value secret.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Sets the value's type.
    pub fn kind(mut self, kind: PropertyType) -> Self {
        self.kind = kind;
        self
    }
}

/// How many artifacts of one direction an action takes, inclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// The fewest artifacts.
    pub min: u32,
    /// The most artifacts.
    pub max: u32,
}

/// What a plugin may ask the host for. Each entry also needs the pipeline
/// action's grant and the agent's permission before it works.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Programs the plugin may run with [`process::Command`](crate::process::Command).
    pub exec: Vec<String>,
    /// `host:port` patterns for outgoing HTTP.
    pub http: Vec<String>,
    /// Names of secrets the plugin may read with [`secrets::get`](crate::secrets::get).
    pub secrets: Vec<String>,
    /// Names of host environment variables passed to programs it runs.
    pub env: Vec<String>,
    /// Host directories the plugin may write.
    pub fs: Vec<String>,
}

/// What a plugin is: the value [`Plugin::describe`](crate::Plugin::describe)
/// returns, built with chained calls.
///
/// ```
/// use sluice_plugin_sdk::{ActionInfo, Category, Property, PropertyType};
/// let info = ActionInfo::new("shell", "1", Category::Build)
///     .description("Runs shell commands")
///     .property(Property::required("Commands", "One command per line").kind(PropertyType::List))
///     .property(Property::optional("Shell", "The shell, `sh` by default"))
///     .inputs(0, 5)
///     .outputs(0, 5)
///     .exec(["sh"]);
/// assert_eq!(info.configuration.len(), 2);
/// assert_eq!(info.capabilities.exec, ["sh"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionInfo {
    /// The provider name (`git`), registered as `name@version`.
    pub name: String,
    /// The provider version (`1`).
    pub version: String,
    /// The action category.
    pub category: Category,
    /// One or two sentences for users.
    pub description: String,
    /// The configuration properties, in the order users should see them.
    pub configuration: Vec<Property>,
    /// Input artifact bounds; `0..=0` unless set.
    pub input_artifacts: Bounds,
    /// Output artifact bounds; `0..=0` unless set.
    pub output_artifacts: Bounds,
    /// What the plugin may ask the host for; nothing unless set.
    pub capabilities: Capabilities,
}

impl ActionInfo {
    /// A plugin with no properties, no artifacts and no capabilities.
    pub fn new(name: impl Into<String>, version: impl Into<String>, category: Category) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            category,
            description: String::new(),
            configuration: Vec::new(),
            input_artifacts: Bounds::default(),
            output_artifacts: Bounds::default(),
            capabilities: Capabilities::default(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a configuration property.
    pub fn property(mut self, property: Property) -> Self {
        self.configuration.push(property);
        self
    }

    /// Sets how many input artifacts the action takes, `min..=max`.
    pub fn inputs(mut self, min: u32, max: u32) -> Self {
        self.input_artifacts = Bounds { min, max };
        self
    }

    /// Sets how many output artifacts the action produces, `min..=max`.
    pub fn outputs(mut self, min: u32, max: u32) -> Self {
        self.output_artifacts = Bounds { min, max };
        self
    }

    /// Adds programs the plugin may run.
    pub fn exec<S: Into<String>>(mut self, programs: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .exec
            .extend(programs.into_iter().map(Into::into));
        self
    }

    /// Adds `host:port` patterns for outgoing HTTP.
    pub fn http<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .http
            .extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Adds secret names the plugin may read.
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .secrets
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds host environment variable names passed to programs it runs.
    pub fn env<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .env
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Adds host directories the plugin may write.
    pub fn fs<S: Into<String>>(mut self, dirs: impl IntoIterator<Item = S>) -> Self {
        self.capabilities
            .fs
            .extend(dirs.into_iter().map(Into::into));
        self
    }

    pub(crate) fn into_wit(self) -> wit::ActionInfo {
        let bounds = |b: Bounds| wit::ArtifactBounds {
            min: b.min,
            max: b.max,
        };
        wit::ActionInfo {
            name: self.name,
            version: self.version,
            category: self.category.as_str().to_owned(),
            description: self.description,
            configuration: self
                .configuration
                .into_iter()
                .map(|p| wit::ConfigProperty {
                    name: p.name,
                    required: p.required,
                    secret: p.secret,
                    description: p.description,
                    type_: p.kind.as_str().to_owned(),
                })
                .collect(),
            input_artifacts: bounds(self.input_artifacts),
            output_artifacts: bounds(self.output_artifacts),
            capabilities: wit::Capabilities {
                exec: self.capabilities.exec,
                http: self.capabilities.http,
                secrets: self.capabilities.secrets,
                env: self.capabilities.env,
                fs: self.capabilities.fs,
            },
        }
    }
}
