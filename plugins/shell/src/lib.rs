//! Built-in plugin `shell@1`: runs shell commands in the action's workspace.
//!
//! The first input artifact (if any) is copied into the workspace, each line
//! of `Commands` runs as `SHELL -c LINE` there, stopping at the first
//! failure, and each output artifact is collected from the workspace by its
//! file patterns. The shell (`sh` unless `Shell` says otherwise) is a host
//! program: the pipeline action must grant it with the `exec` capability
//! (`"capabilities": {"exec": ["sh"]}`), and what the commands run is then up
//! to the host's shell. This crate knows only the SDK.
//!
//! Copies into the workspace and into outputs are done by the shell on the
//! host (`cp -p`) rather than through WASI, because WASI has no permission
//! bits: a copy through the sandbox would lose the executable bit of scripts
//! and built binaries.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_plugin_sdk::process::{Command, host_path};
use sluice_plugin_sdk::{
    ActionInfo, Artifact, Category, Context, Error, Outcome, Plugin, Property, PropertyType,
    ResultExt, artifacts, log,
};

/// The `PATH` commands get: the host's environment is not passed through.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Copies the contents of directory `$1` into directory `$2`, keeping modes.
const COPY_DIR_SCRIPT: &str = r#"cp -R -p "$1"/. "$2""#;

/// Copies each file named on a line of file `$3` from directory `$1` to the
/// same relative path in directory `$2` (its parent already exists), keeping
/// modes.
const COPY_LISTED_SCRIPT: &str =
    r#"while IFS= read -r f; do cp -p "$1/$f" "$2/$f" || exit 1; done < "$3""#;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Config {
    commands: String,
    #[serde(default)]
    shell: Option<String>,
}

/// The shell plugin.
pub struct Shell;

impl Plugin for Shell {
    fn describe() -> ActionInfo {
        ActionInfo::new("shell", "1", Category::Build)
            .description(
                "Runs shell commands, one per line, in a workspace holding a copy of the first input \
                 artifact, then collects the output artifacts from the workspace. The action must grant \
                 the shell with the exec capability.",
            )
            .property(
                Property::required("Commands", "Commands, one per line, each run as `SHELL -c LINE`; blank lines are skipped")
                    .kind(PropertyType::List),
            )
            .property(Property::optional("Shell", "The shell program, `sh` by default; it must be granted"))
            .inputs(0, 5)
            .outputs(0, 5)
            .exec(["sh", "bash"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let config: Config = ctx.config.parse()?;
        let shell = config
            .shell
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("sh");
        let lines = command_lines(&config.commands);
        if lines.is_empty() {
            return Err(Error::new("configuration \"Commands\" has no command"));
        }

        let workspace_host = host_path(&ctx.workspace)?;
        if let Some(input) = ctx.inputs.first() {
            log::info(format!(
                "copying input artifact \"{}\" into the workspace",
                input.name
            ));
            host_script(
                shell,
                &ctx.workspace,
                COPY_DIR_SCRIPT,
                [host_path(&input.path)?, workspace_host.clone()],
            )
            .with_context(|| format!("copying input artifact \"{}\"", input.name))?;
        }

        let env = environment(&ctx, &workspace_host)?;
        for line in &lines {
            log::info(format!("$ {line}"));
            let output = Command::new(shell)
                .arg("-c")
                .arg(line)
                .cwd(&ctx.workspace)
                .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .stream_output(true)
                .run()?;
            match output.status {
                Some(0) => {}
                Some(code) => {
                    return Err(Error::new(format!(
                        "command \"{line}\" exited with status {code}"
                    )));
                }
                None => {
                    return Err(Error::new(format!(
                        "command \"{line}\" was killed by a signal"
                    )));
                }
            }
        }

        for output in &ctx.outputs {
            let count = collect(shell, &ctx.workspace, &workspace_host, output)
                .with_context(|| format!("output artifact \"{}\"", output.name))?;
            log::info(format!(
                "output artifact \"{}\": {count} files",
                output.name
            ));
        }
        let plural = if lines.len() == 1 { "" } else { "s" };
        Ok(Outcome::succeeded(format!(
            "ran {} command{plural}",
            lines.len()
        )))
    }
}

sluice_plugin_sdk::export_plugin!(Shell);

/// The non-blank lines of `Commands`, trimmed.
fn command_lines(commands: &str) -> Vec<&str> {
    commands
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
}

/// `SLUICE_INPUT_SRC` for artifact `src`: uppercase, anything but ASCII
/// letters and digits as `_`.
fn env_name(prefix: &str, artifact: &str) -> String {
    let mangled: String = artifact
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{mangled}")
}

/// The whole environment of the commands.
fn environment(ctx: &Context, workspace_host: &Path) -> Result<Vec<(String, String)>, Error> {
    let mut env = vec![
        ("PATH".to_owned(), PATH.to_owned()),
        ("HOME".to_owned(), workspace_host.display().to_string()),
        ("SLUICE_PIPELINE".to_owned(), ctx.pipeline.clone()),
        ("SLUICE_EXECUTION_ID".to_owned(), ctx.execution_id.clone()),
        ("SLUICE_STAGE".to_owned(), ctx.stage.clone()),
        ("SLUICE_ACTION".to_owned(), ctx.action.clone()),
    ];
    for (prefix, list) in [
        ("SLUICE_INPUT_", &ctx.inputs),
        ("SLUICE_OUTPUT_", &ctx.outputs),
    ] {
        for artifact in list {
            env.push((
                env_name(prefix, &artifact.name),
                host_path(&artifact.path)?.display().to_string(),
            ));
        }
    }
    Ok(env)
}

/// Copies the workspace files matching the output's patterns into it.
fn collect(
    shell: &str,
    workspace: &Path,
    workspace_host: &Path,
    output: &Artifact,
) -> Result<usize, Error> {
    let files = artifacts::matching_files(workspace, &output.files)?;
    if files.is_empty() {
        return Ok(0);
    }
    if let Some(odd) = files.iter().find(|f| f.contains(['\n', '\r'])) {
        return Err(Error::new(format!(
            "file name {odd:?} contains a line break"
        )));
    }
    for file in &files {
        if let Some(parent) = Path::new(file).parent() {
            let dir = output.path.join(parent);
            fs::create_dir_all(&dir).with_context(|| format!("creating \"{}\"", dir.display()))?;
        }
    }
    let list = workspace.join(format!(
        ".sluice-collect-{}.list",
        env_name("", &output.name)
    ));
    fs::write(&list, files.join("\n") + "\n")
        .with_context(|| format!("writing \"{}\"", list.display()))?;
    let copied = host_script(
        shell,
        workspace,
        COPY_LISTED_SCRIPT,
        [
            workspace_host.to_path_buf(),
            host_path(&output.path)?,
            host_path(&list)?,
        ],
    );
    fs::remove_file(&list).with_context(|| format!("removing \"{}\"", list.display()))?;
    copied?;
    Ok(files.len())
}

/// Runs one of this plugin's own scripts with `args` as `$1`, `$2`, ...
fn host_script<const N: usize>(
    shell: &str,
    cwd: &Path,
    script: &str,
    args: [PathBuf; N],
) -> Result<(), Error> {
    Command::new(shell)
        .arg("-c")
        .arg(script)
        .arg("sluice-shell")
        .args(args)
        .cwd(cwd)
        .env("PATH", PATH)
        .run_checked()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! These run natively: the SDK then runs programs directly and sandbox
    //! paths are host paths.
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            for sub in ["in", "ws", "out"] {
                fs::create_dir(root.join(sub)).unwrap();
            }
            fs::create_dir(root.join("in/src")).unwrap();
            fs::write(root.join("in/src/hello.txt"), "hello\n").unwrap();
            fs::write(
                root.join("in/build.sh"),
                "#!/bin/sh\nmkdir -p dist && cp src/hello.txt dist/ && echo built\n",
            )
            .unwrap();
            fs::set_permissions(root.join("in/build.sh"), fs::Permissions::from_mode(0o755))
                .unwrap();
            Fixture { _dir: dir, root }
        }

        fn context(&self, commands: &str, files: &[&str]) -> Context {
            Context {
                pipeline: "web".into(),
                stage: "Build".into(),
                inputs: vec![Artifact {
                    name: "src".into(),
                    path: self.root.join("in"),
                    files: vec![],
                }],
                outputs: vec![Artifact {
                    name: "bin-out".into(),
                    path: self.root.join("out"),
                    files: files.iter().map(|s| s.to_string()).collect(),
                }],
                workspace: self.root.join("ws"),
                ..Context::for_test(&[("Commands", commands)])
            }
        }
    }

    #[test]
    fn runs_commands_and_collects_outputs_keeping_modes() {
        let fx = Fixture::new();
        let commands = "./build.sh\n\n  cp build.sh dist/  \necho \"$SLUICE_PIPELINE $SLUICE_STAGE $SLUICE_OUTPUT_BIN_OUT $HOME\" > dist/env.txt";
        let outcome = Shell::execute(fx.context(commands, &["dist/**"])).unwrap();
        assert_eq!(outcome.summary(), "ran 3 commands");
        assert_eq!(
            fs::read_to_string(fx.root.join("out/dist/hello.txt")).unwrap(),
            "hello\n"
        );
        let env = fs::read_to_string(fx.root.join("out/dist/env.txt")).unwrap();
        assert_eq!(
            env.trim(),
            format!(
                "web Build {} {}",
                fx.root.join("out").display(),
                fx.root.join("ws").display()
            )
        );
        let mode = fs::metadata(fx.root.join("out/dist/build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "the executable bit survives");
        assert!(
            !fx.root.join("out/src").exists(),
            "only the patterns are collected"
        );
        assert!(
            fs::read_dir(fx.root.join("ws")).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".list"))
        );
    }

    #[test]
    fn stops_at_the_first_failure() {
        let fx = Fixture::new();
        let err = Shell::execute(fx.context("true\nexit 3\ntouch never", &[])).unwrap_err();
        assert_eq!(err.message(), "command \"exit 3\" exited with status 3");
        assert!(!fx.root.join("ws/never").exists());
        let err = Shell::execute(fx.context("kill -9 $$", &[])).unwrap_err();
        assert_eq!(
            err.message(),
            "command \"kill -9 $$\" was killed by a signal"
        );
    }

    #[test]
    fn unmatched_output_pattern_fails_clearly() {
        let fx = Fixture::new();
        let err = Shell::execute(fx.context("true", &["target/release/app"])).unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "output artifact \"bin-out\": file pattern \"target/release/app\" matched no file in \"{}\"",
                fx.root.join("ws").display()
            )
        );
    }

    #[test]
    fn requires_commands() {
        let fx = Fixture::new();
        let mut ctx = fx.context("", &[]);
        assert_eq!(
            Shell::execute(ctx.clone()).unwrap_err().message(),
            "configuration \"Commands\" has no command"
        );
        ctx.config = sluice_plugin_sdk::Config::new();
        assert_eq!(
            Shell::execute(ctx).unwrap_err().message(),
            "configuration \"Commands\" is required"
        );
    }

    #[test]
    fn env_names_are_mangled() {
        assert_eq!(
            env_name("SLUICE_INPUT_", "src-v2.tar"),
            "SLUICE_INPUT_SRC_V2_TAR"
        );
    }
}
