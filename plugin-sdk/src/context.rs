//! What one call of `execute` knows, and what it answers.

use std::path::PathBuf;

use crate::Config;
use crate::bindings::sluice::plugin::types as wit;

/// An artifact directory as the plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    /// The artifact name from the pipeline declaration (`src`).
    pub name: String,
    /// Its directory inside the sandbox: inputs are read-only, outputs
    /// writable and empty.
    pub path: PathBuf,
    /// For outputs: the glob patterns the pipeline asked for (empty: all
    /// files). Always empty for inputs.
    pub files: Vec<String>,
}

impl Artifact {
    fn from_wit(artifact: wit::Artifact) -> Self {
        Self {
            name: artifact.name,
            path: PathBuf::from(artifact.path),
            files: artifact.files,
        }
    }
}

/// Everything one call of [`Plugin::execute`](crate::Plugin::execute) knows.
///
/// ```
/// use sluice_plugin_sdk::Context;
///
/// // What a unit test hands to execute(): this configuration, nothing else.
/// let ctx = Context::for_test(&[("Target", "release")]);
/// assert_eq!(ctx.config.get("Target"), Some("release"));
/// assert!(ctx.input("src").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The pipeline name.
    pub pipeline: String,
    /// The pipeline execution id.
    pub execution_id: String,
    /// The stage name.
    pub stage: String,
    /// The action name.
    pub action: String,
    /// 1 for the first run of this action in this execution, then 2, 3 on retries.
    pub attempt: u32,
    /// The configuration, variables resolved.
    pub config: Config,
    /// Input artifacts, read-only, in declaration order.
    pub inputs: Vec<Artifact>,
    /// Output artifacts, writable and empty, in declaration order.
    pub outputs: Vec<Artifact>,
    /// A writable scratch directory inside the sandbox, empty at the first call.
    pub workspace: PathBuf,
    /// Pipeline variables visible to the action (`name`, `value`).
    pub variables: Vec<(String, String)>,
    /// The token of the previous `in-progress` outcome, when the host calls again.
    pub continuation: Option<String>,
}

impl Context {
    /// The input artifact called `name`.
    pub fn input(&self, name: &str) -> Option<&Artifact> {
        self.inputs.iter().find(|a| a.name == name)
    }

    /// The output artifact called `name`.
    pub fn output(&self, name: &str) -> Option<&Artifact> {
        self.outputs.iter().find(|a| a.name == name)
    }

    /// The revision a source action must fetch when the execution pinned one
    /// (a webhook, a poll or `pipeline start --source-revision` chose it);
    /// `None`: fetch the newest.
    pub fn pinned_revision(&self) -> Option<&str> {
        self.variable(PINNED_REVISION_VARIABLE).filter(|r| !r.trim().is_empty())
    }

    /// A context for a plugin's unit tests: the first attempt of action
    /// `a` in stage `s` of pipeline `p`, execution `e`, with this
    /// configuration, no artifacts, no variables and the system's temporary
    /// directory as workspace. Change what a test needs with struct update
    /// syntax: `Context { outputs: vec![...], ..Context::for_test(&[]) }`.
    pub fn for_test(config: &[(&str, &str)]) -> Self {
        Self {
            pipeline: "p".into(),
            execution_id: "e".into(),
            stage: "s".into(),
            action: "a".into(),
            attempt: 1,
            config: config.iter().copied().collect(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            workspace: std::env::temp_dir(),
            variables: Vec::new(),
            continuation: None,
        }
    }

    /// The value of the variable `name`.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn from_wit(ctx: wit::Context) -> Self {
        Self {
            pipeline: ctx.pipeline,
            execution_id: ctx.execution_id,
            stage: ctx.stage,
            action: ctx.action,
            attempt: ctx.attempt,
            config: Config::from(ctx.configuration),
            inputs: ctx.inputs.into_iter().map(Artifact::from_wit).collect(),
            outputs: ctx.outputs.into_iter().map(Artifact::from_wit).collect(),
            workspace: PathBuf::from(ctx.workspace),
            variables: ctx.variables,
            continuation: ctx.continuation,
        }
    }
}

/// The context variable in which the host passes a pinned source revision.
pub const PINNED_REVISION_VARIABLE: &str = "codepipeline.SourceRevision";

/// How a call of `execute` ended, short of failing (failing is `Err`).
///
/// ```
/// use sluice_plugin_sdk::Outcome;
///
/// let done = Outcome::succeeded("deployed v1.2")
///     .variable("Version", "1.2")
///     .external_url("https://deploy.example.com/42");
/// assert_eq!(done.get_variable("Version"), Some("1.2"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The action is done.
    Succeeded {
        /// One line for the pipeline view.
        summary: String,
        /// Output variables, visible as `#{Namespace.Name}` to later actions.
        variables: Vec<(String, String)>,
        /// A link to what the action did (a deployment, a build page).
        external_url: Option<String>,
    },
    /// The action goes on: call again after `poll_after_ms` with this continuation.
    InProgress {
        /// Opaque state handed back in [`Context::continuation`].
        continuation: String,
        /// How long the host waits before calling again.
        poll_after_ms: u32,
        /// One line for the pipeline view.
        summary: String,
    },
}

impl Outcome {
    /// The action is done.
    pub fn succeeded(summary: impl Into<String>) -> Self {
        Outcome::Succeeded {
            summary: summary.into(),
            variables: Vec::new(),
            external_url: None,
        }
    }

    /// The action goes on; the host calls `execute` again after
    /// `poll_after_ms` with `continuation` in [`Context::continuation`].
    pub fn in_progress(
        continuation: impl Into<String>,
        poll_after_ms: u32,
        summary: impl Into<String>,
    ) -> Self {
        Outcome::InProgress {
            continuation: continuation.into(),
            poll_after_ms,
            summary: summary.into(),
        }
    }

    /// Adds an output variable.
    ///
    /// # Panics
    /// On an in-progress outcome: only a finished action has output
    /// variables, so this is a bug in the plugin (and a trap in the host).
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        match &mut self {
            Outcome::Succeeded { variables, .. } => variables.push((name.into(), value.into())),
            Outcome::InProgress { .. } => panic!("output variables belong to a succeeded outcome"),
        }
        self
    }

    /// Sets the external URL.
    ///
    /// # Panics
    /// On an in-progress outcome, as [`Outcome::variable`].
    pub fn external_url(mut self, url: impl Into<String>) -> Self {
        match &mut self {
            Outcome::Succeeded { external_url, .. } => *external_url = Some(url.into()),
            Outcome::InProgress { .. } => panic!("an external url belongs to a succeeded outcome"),
        }
        self
    }

    /// The summary line.
    pub fn summary(&self) -> &str {
        match self {
            Outcome::Succeeded { summary, .. } | Outcome::InProgress { summary, .. } => summary,
        }
    }

    /// The value of the output variable `name`, if this outcome has it.
    pub fn get_variable(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Succeeded { variables, .. } => variables
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            Outcome::InProgress { .. } => None,
        }
    }

    pub(crate) fn into_wit(self) -> wit::Outcome {
        match self {
            Outcome::Succeeded {
                summary,
                variables,
                external_url,
            } => wit::Outcome::Succeeded(wit::Success {
                summary,
                output_variables: variables,
                external_url,
            }),
            Outcome::InProgress {
                continuation,
                poll_after_ms,
                summary,
            } => wit::Outcome::InProgress(wit::Progress {
                continuation,
                poll_after_ms,
                summary,
            }),
        }
    }
}

/// A source revision, as [`Source::latest_revision`](crate::Plugin) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The revision id (a commit id).
    pub id: String,
    /// One line describing it (a commit message's first line).
    pub summary: String,
    /// When it was created, in seconds since the Unix epoch, if known.
    pub created: Option<u64>,
}

impl Revision {
    /// A revision of unknown creation time.
    pub fn new(id: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            summary: summary.into(),
            created: None,
        }
    }

    /// Sets the creation time, in seconds since the Unix epoch.
    pub fn created(mut self, unix_seconds: u64) -> Self {
        self.created = Some(unix_seconds);
        self
    }

    #[cfg_attr(not(feature = "source"), allow(dead_code))]
    pub(crate) fn into_wit(self) -> wit::Revision {
        wit::Revision {
            id: self.id,
            summary: self.summary,
            created: self.created,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_builders() {
        let out = Outcome::succeeded("done")
            .variable("CommitId", "abc")
            .external_url("https://x");
        assert_eq!(out.get_variable("CommitId"), Some("abc"));
        assert_eq!(out.summary(), "done");
        match out.into_wit() {
            wit::Outcome::Succeeded(s) => {
                assert_eq!(
                    s.output_variables,
                    [("CommitId".to_owned(), "abc".to_owned())]
                );
                assert_eq!(s.external_url.as_deref(), Some("https://x"));
            }
            _ => panic!("expected succeeded"),
        }
        let wait = Outcome::in_progress("token", 500, "waiting");
        assert!(matches!(wait.into_wit(), wit::Outcome::InProgress(p) if p.poll_after_ms == 500));
    }

    #[test]
    #[should_panic(expected = "output variables belong to a succeeded outcome")]
    fn variables_on_in_progress_panic() {
        let _ = Outcome::in_progress("t", 1, "s").variable("a", "b");
    }
}
