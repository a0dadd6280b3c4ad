//! Built-in plugin `codebuild@1`: runs a repository's AWS CodeBuild
//! buildspec (version 0.2) in the action's workspace, so that a CodePipeline
//! `AWS/CodeBuild` action imports without hand-written commands.
//!
//! The primary input artifact (`PrimarySource`, or the first) is copied to
//! `WORKSPACE/src` (`CODEBUILD_SRC_DIR`), each other input to
//! `WORKSPACE/secondary/NAME` (`CODEBUILD_SRC_DIR_NAME`). The buildspec is
//! `buildspec.yml` of the primary input, or the `BuildSpec` configuration: a
//! path in the primary input, or the buildspec itself inline, as CodeBuild
//! accepts. Commands run exactly as `shell`'s do: through the granted shell
//! (`sh`, or `bash` when `env.shell` says so), confined by the host like
//! every granted program; this plugin asks for no other power, except the
//! secrets its buildspec names, which the action must grant like any secret.
//!
//! Output variables are the buildspec's `exported-variables`; output
//! artifacts come from `artifacts` and `secondary-artifacts` (see
//! [`collect`]). CodeBuild's phase semantics are in [`run`].

mod buildspec;
mod collect;
mod env;
mod run;

use std::fs;
use std::path::Path;

use serde::Deserialize;
use sluice_plugin_sdk::process::host_path;
use sluice_plugin_sdk::{
    ActionInfo, Artifact, Category, Context, Error, Outcome, Plugin, Property, ResultExt, artifacts, log,
};

use buildspec::{Buildspec, MAX_BUILDSPEC_BYTES};
use run::{Session, Status};

/// The buildspec read when `BuildSpec` is not set.
const DEFAULT_BUILDSPEC: &str = "buildspec.yml";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Config {
    #[serde(default)]
    project_name: Option<String>,
    #[serde(default)]
    build_spec: Option<String>,
    #[serde(default)]
    environment_variables: Option<String>,
    #[serde(default)]
    primary_source: Option<String>,
    #[serde(default)]
    source_version: Option<String>,
}

/// The codebuild plugin.
pub struct CodeBuild;

impl Plugin for CodeBuild {
    fn describe() -> ActionInfo {
        ActionInfo::new("codebuild", "1", Category::Build)
            .description(
                "Runs an AWS CodeBuild buildspec (version 0.2) from the primary input artifact or the BuildSpec \
                 configuration: env variables, parameter-store and secrets-manager entries read from Sluice \
                 secrets, exported-variables as output variables, the four phases with on-failure and finally, \
                 artifacts and secondary-artifacts. The action must grant the shell (sh, or bash) with the exec \
                 capability, and every secret the buildspec names.",
            )
            .property(Property::optional(
                "BuildSpec",
                "A path in the primary input (buildspec.yml by default), or the buildspec itself",
            ))
            .property(Property::optional(
                "EnvironmentVariables",
                "CodePipeline's JSON list of {name, value, type}: PLAINTEXT, PARAMETER_STORE or SECRETS_MANAGER",
            ))
            .property(Property::optional("ProjectName", "The CodeBuild project's name, for the log and CODEBUILD_BUILD_ID"))
            .property(Property::optional("PrimarySource", "The input artifact holding the source, the first by default"))
            .property(Property::optional(
                "SourceVersion",
                "The source revision for CODEBUILD_RESOLVED_SOURCE_VERSION, e.g. #{SourceVariables.CommitId}",
            ))
            .inputs(0, 5)
            .outputs(0, 5)
            .exec(["sh", "bash"])
            .secrets(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let config: Config = ctx.config.parse()?;
        let project = config.project_name.as_deref().map(str::trim).filter(|p| !p.is_empty()).unwrap_or(&ctx.action);
        log::info(format!("CodeBuild project \"{project}\""));
        let primary = primary_input(&ctx, config.primary_source.as_deref())?;
        let src = ctx.workspace.join("src");
        let state_dir = ctx.workspace.join(".codebuild");
        for dir in [&src, &state_dir] {
            fs::create_dir_all(dir).with_context(|| format!("creating \"{}\"", dir.display()))?;
        }
        let mut env = vec![("CODEBUILD_SRC_DIR".to_owned(), host_path(&src)?.display().to_string())];
        for input in &ctx.inputs {
            let target =
                if Some(input) == primary { src.clone() } else { ctx.workspace.join("secondary").join(&input.name) };
            log::info(format!("copying input artifact \"{}\"", input.name));
            artifacts::copy(&input.path, &target).with_context(|| format!("copying input artifact \"{}\"", input.name))?;
            if Some(input) != primary {
                env.push((format!("CODEBUILD_SRC_DIR_{}", mangle(&input.name)), host_path(&target)?.display().to_string()));
            }
        }

        let spec = load_buildspec(config.build_spec.as_deref(), &src, primary)?;
        for key in &spec.ignored {
            log::warn(format!("buildspec key \"{key}\" is not supported by Sluice and is ignored"));
        }
        let action_vars = match config.environment_variables.as_deref().map(str::trim) {
            Some(json) if !json.is_empty() => env::action_variables(json)?,
            _ => Vec::new(),
        };
        env.extend(builtin_env(&ctx, project, config.source_version.as_deref()));
        env.extend(env::resolve(&env::declared(&spec, action_vars))?);
        let outputs = collect::assign(&spec, &ctx.outputs)?;

        let session = Session::new(spec.shell.program(), &src, &ctx.workspace, state_dir.join("state.sh"), &env)?;
        let statuses = run::plan(&spec.phases, |phase, succeeding| {
            session.set("CODEBUILD_BUILD_SUCCEEDING", if succeeding { "1" } else { "0" })?;
            log::info(format!("entering phase {}", phase.name.key().to_uppercase()));
            let failure = session.phase(phase)?;
            let state = if failure.is_some() { "FAILED" } else { "SUCCEEDED" };
            log::info(format!("phase complete: {} state: {state}", phase.name.key().to_uppercase()));
            Ok(failure)
        })?;
        if let Some(message) = failure_message(&statuses) {
            return Err(Error::new(message));
        }

        let mut outcome_files = 0;
        for (output, spec) in ctx.outputs.iter().zip(outputs) {
            let count = match spec {
                Some(spec) => {
                    if let Some(name) = &spec.name {
                        log::info(format!("{} name \"{name}\" is kept as output artifact \"{}\"", spec.key, output.name));
                    }
                    collect::collect(&src, spec, output)?
                }
                None => collect::collect_declared(&src, output)?,
            };
            log::info(format!("output artifact \"{}\": {count} files", output.name));
            outcome_files += count;
        }
        let ran = statuses.iter().filter(|(_, s)| *s == Status::Succeeded).count();
        let mut outcome = Outcome::succeeded(format!(
            "buildspec of \"{project}\": {ran} phase{} succeeded, {outcome_files} artifact files",
            if ran == 1 { "" } else { "s" }
        ));
        for (name, value) in session.values(&spec.exported)? {
            outcome = outcome.variable(name, value);
        }
        Ok(outcome)
    }
}

sluice_plugin_sdk::export_plugin!(CodeBuild);

/// The input holding the source: `PrimarySource`, or the first.
fn primary_input<'c>(ctx: &'c Context, named: Option<&str>) -> Result<Option<&'c Artifact>, Error> {
    match named.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => ctx.input(name).map(Some).ok_or_else(|| {
            Error::new(format!("configuration \"PrimarySource\": the action has no input artifact \"{name}\""))
        }),
        None => Ok(ctx.inputs.first()),
    }
}

/// The buildspec: `BuildSpec` inline when it holds one (a line break, or it
/// starts with `version` or `{`), else the path it names (or
/// `buildspec.yml`) in the source directory.
fn load_buildspec(setting: Option<&str>, src: &Path, primary: Option<&Artifact>) -> Result<Buildspec, Error> {
    let setting = setting.map(str::trim).filter(|s| !s.is_empty());
    if let Some(inline) = setting.filter(|s| s.contains('\n') || s.starts_with("version") || s.starts_with('{')) {
        log::info("running the buildspec given in configuration \"BuildSpec\"");
        return buildspec::parse(inline).context("configuration \"BuildSpec\"");
    }
    let path = setting.unwrap_or(DEFAULT_BUILDSPEC);
    if path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(Error::new(format!(
            "configuration \"BuildSpec\": {path:?} must be a path inside the source (no leading / or ..)"
        )));
    }
    let Some(primary) = primary else {
        return Err(Error::new(format!(
            "the action has no input artifact to read \"{path}\" from; give the buildspec inline in \"BuildSpec\""
        )));
    };
    let file = src.join(path);
    let size = fs::metadata(&file).map(|m| m.len()).map_err(|_| {
        Error::new(format!(
            "no buildspec: \"{path}\" is not in input artifact \"{}\" (set \"BuildSpec\" to its path, or to the buildspec itself)",
            primary.name
        ))
    })?;
    if size > MAX_BUILDSPEC_BYTES as u64 {
        return Err(Error::new(format!(
            "buildspec \"{path}\" is {size} bytes, more than the limit of {MAX_BUILDSPEC_BYTES} bytes"
        )));
    }
    let text = fs::read_to_string(&file).with_context(|| format!("reading buildspec \"{path}\""))?;
    log::info(format!("running buildspec \"{path}\" of input artifact \"{}\"", primary.name));
    buildspec::parse(&text).with_context(|| format!("\"{path}\""))
}

/// CodeBuild's own variables, and Sluice's as `shell` sets them.
fn builtin_env(ctx: &Context, project: &str, source_version: Option<&str>) -> Vec<(String, String)> {
    let revision =
        source_version.map(str::trim).filter(|v| !v.is_empty()).or_else(|| ctx.pinned_revision()).map(str::to_owned);
    let mut env = vec![
        ("CODEBUILD_BUILD_ID".to_owned(), format!("{project}:{}", ctx.execution_id)),
        ("CODEBUILD_BUILD_NUMBER".to_owned(), ctx.attempt.to_string()),
        ("CODEBUILD_INITIATOR".to_owned(), format!("codepipeline/{}", ctx.pipeline)),
        ("CODEBUILD_CI".to_owned(), "true".to_owned()),
        ("CODEBUILD_BUILD_SUCCEEDING".to_owned(), "1".to_owned()),
        ("SLUICE_PIPELINE".to_owned(), ctx.pipeline.clone()),
        ("SLUICE_EXECUTION_ID".to_owned(), ctx.execution_id.clone()),
        ("SLUICE_STAGE".to_owned(), ctx.stage.clone()),
        ("SLUICE_ACTION".to_owned(), ctx.action.clone()),
    ];
    if let Some(revision) = revision {
        env.push(("CODEBUILD_RESOLVED_SOURCE_VERSION".to_owned(), revision.clone()));
        env.push(("CODEBUILD_SOURCE_VERSION".to_owned(), revision));
    }
    env
}

/// An artifact name as a variable-name suffix: anything but letters,
/// digits and `_` becomes `_`.
fn mangle(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// `None` when every phase that ran succeeded; else which failed and what ran after.
fn failure_message(statuses: &[(buildspec::PhaseName, Status)]) -> Option<String> {
    let failures: Vec<String> = statuses
        .iter()
        .filter_map(|(name, status)| match status {
            Status::Failed(why) => Some(format!("phase {}: {why}", name.key().to_uppercase())),
            _ => None,
        })
        .collect();
    if failures.is_empty() {
        return None;
    }
    let skipped: Vec<String> =
        statuses.iter().filter(|(_, s)| *s == Status::Skipped).map(|(n, _)| n.key().to_uppercase()).collect();
    let mut message = format!("build failed: {}", failures.join("; "));
    if !skipped.is_empty() {
        message.push_str(&format!(" (skipped {})", skipped.join(", ")));
    }
    Some(message)
}

#[cfg(test)]
mod tests;
