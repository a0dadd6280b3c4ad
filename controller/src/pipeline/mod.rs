//! Pipeline declarations: parse, validate and write back the JSON or YAML a
//! user declares a pipeline in (docs/design.md section 2).
//!
//! The format is AWS CodePipeline's `get-pipeline` output, `{"pipeline":
//! {...}}`, plus Sluice's `capabilities`, `agentLabels` and
//! `pollIntervalSeconds` on actions, so a
//! CodePipeline definition loads with at most its providers remapped.
//! Sluice's own action fields may also be spelled as reserved
//! `configuration` keys (`Sluice:Capabilities`, ...; see [`reserved`]),
//! which is how they travel through the AWS SDKs.
//!
//! Two phases, both pure and both reporting every problem with its JSON path
//! (`pipeline.stages[1].actions[0].inputArtifacts[0]: artifact "src2" is not
//! produced by any earlier action`):
//!
//! - [`parse()`] reads the text and walks it into the typed [`Declaration`],
//!   reporting syntax errors, wrong types, missing and unknown fields. Fields
//!   CodePipeline defines but Sluice does not use ([`PIPELINE_PASSTHROUGH`],
//!   [`STAGE_PASSTHROUGH`], [`ACTION_PASSTHROUGH`]) are kept in `extra` and
//!   written back; any other field is an error, never silently dropped.
//! - [`validate()`] checks names, the [`limits`], artifact flow, variable
//!   references and each action's provider through a [`ProviderCatalog`].
//!
//! [`parse_and_validate`] runs both and reports both phases at once;
//! [`to_json`] writes a declaration back in CodePipeline's shape and order.
//!
//! This module must not know about storage, the engine, agents or plugins
//! beyond the [`ProviderCatalog`] trait; it does no I/O.

// Who may decide a manual approval (issue 15, gov).
pub mod approvers;
pub mod conditions;
pub mod import;
mod import_codebuild;
pub mod limits;
mod model;
mod parse;
pub mod reserved;
pub mod triggers;
mod validate;
mod vars;

#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use model::{
    ACTION_PASSTHROUGH, Action, ActionTypeId, Capabilities, Configuration, Declaration, ExecutionMode, InputArtifact,
    OutputArtifact, PIPELINE_PASSTHROUGH, Pipeline, STAGE_PASSTHROUGH, Stage, Variable,
};
pub use validate::{
    CATEGORIES, IMPORT_OWNERS, OWNERS, PropertyInfo, ProviderCatalog, ProviderInfo, StaticCatalog, validate,
};
pub use vars::{CODEPIPELINE_NAMESPACE, CODEPIPELINE_VARIABLES, VARIABLES_NAMESPACE, VarRef, resolve, variable_references};

/// One problem in a declaration, at a JSON path such as
/// `pipeline.stages[0].actions[1].name`. Syntax errors use `line L, column C`
/// as the path, problems with the document as a whole `document`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a declaration, in document order within each phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Parses a declaration from JSON (if the first non-blank character is `{`)
/// or YAML. Does not validate; see [`parse_and_validate`].
pub fn parse(text: &str) -> Result<Declaration, Diagnostics> {
    let value = parse::document(text).map_err(|diagnostic| Diagnostics(vec![diagnostic]))?;
    let mut cx = parse::Cx::default();
    let declaration = parse::declaration(&value, "", &mut cx);
    cx.finish(declaration)
}

/// The name a declaration gives its pipeline, read without validating the
/// rest (what the permission of creating it is checked on).
pub fn declared_name(text: &str) -> Option<String> {
    let value = parse::document(text).ok()?;
    value.get("pipeline")?.get("name")?.as_str().map(str::to_string)
}

/// Parses and validates, reporting the problems of both phases at once. A
/// validation problem at or under a path that already has a parse problem is
/// left out: it would only repeat it.
pub fn parse_and_validate(text: &str, catalog: &dyn ProviderCatalog) -> Result<Declaration, Diagnostics> {
    let value = parse::document(text).map_err(|diagnostic| Diagnostics(vec![diagnostic]))?;
    let mut cx = parse::Cx::default();
    let declaration = parse::declaration(&value, "", &mut cx);
    let mut diagnostics = cx.diagnostics;
    let parse_paths: Vec<String> = diagnostics.iter().map(|d| d.path.clone()).collect();
    diagnostics
        .extend(validate(&declaration, catalog).into_iter().filter(|d| !parse_paths.iter().any(|p| is_within(&d.path, p))));
    if diagnostics.is_empty() { Ok(declaration) } else { Err(Diagnostics(diagnostics)) }
}

/// Whether `path` is `ancestor` or lies under it.
fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "document"
        || path.strip_prefix(ancestor).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Writes a declaration as pretty JSON (two-space indent, trailing newline)
/// in CodePipeline's shape and field order. `parse(&to_json(d)) == Ok(d)`,
/// and a declaration already in this canonical form comes back byte for byte.
pub fn to_json(declaration: &Declaration) -> String {
    let mut text = serde_json::to_string_pretty(declaration)
        .expect("a declaration holds only strings, numbers and JSON values, which always serialize");
    text.push('\n');
    text
}
