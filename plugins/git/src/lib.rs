//! Built-in source plugin `git@1`: fetches a branch (or one commit of it)
//! from a git repository into the output artifact, without `.git`.
//!
//! Configuration: `Url` (a local path, `file://`, `http(s)://` or anything
//! else the host's git understands), `Branch` (`main` by default),
//! `CommitId` (an exact commit; its branch is then fetched in full) and
//! `Depth` (history depth, 1 by default, 0 for all). Output variables carry
//! CodePipeline's names: `CommitId`, `BranchName`, `CommitMessage`,
//! `AuthorDate` (ISO 8601), `AuthorDisplayName`.
//!
//! `git` is a host program: the pipeline action must grant it with the
//! `exec` capability. It runs with `GIT_TERMINAL_PROMPT=0` (never waits for
//! a password) and `HOME` set to the workspace, so the host user's global
//! git configuration and credentials are not used. This crate knows only the SDK.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_plugin_sdk::process::{Command, host_path};
use sluice_plugin_sdk::{
    ActionInfo, Category, Config, Context, Error, Outcome, Plugin, Property, PropertyType,
    ResultExt, Revision, Source, log,
};

/// The `PATH` git gets (it may run `ssh` or credential helpers).
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Characters of a commit id in summaries.
const SHORT_ID: usize = 7;

/// Separates the fields of `git log --format` output; it cannot occur in them.
const FIELD_SEPARATOR: &str = "%x00";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GitConfig {
    url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    depth: Option<u32>,
}

impl GitConfig {
    fn from(config: &Config) -> Result<Self, Error> {
        let parsed: GitConfig = config.parse()?;
        if parsed.url.trim().is_empty() {
            return Err(Error::new("configuration \"Url\" is required"));
        }
        Ok(parsed)
    }

    fn branch(&self) -> &str {
        self.branch
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .unwrap_or("main")
    }
}

/// The git plugin.
pub struct Git;

impl Plugin for Git {
    fn describe() -> ActionInfo {
        ActionInfo::new("git", "1", Category::Source)
            .description(
                "Fetches a branch, or one commit of it, from a git repository into the output artifact \
                 (without .git). The action must grant git with the exec capability.",
            )
            .property(Property::required("Url", "Repository: a local path, file://, http(s):// or ssh URL"))
            .property(Property::optional("Branch", "The branch, main by default"))
            .property(Property::optional("CommitId", "An exact commit on the branch instead of its head"))
            .property(
                Property::optional("Depth", "History to fetch: 1 by default, 0 for all (ignored with CommitId)")
                    .kind(PropertyType::Number),
            )
            .inputs(0, 0)
            .outputs(1, 1)
            .exec(["git"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let config = GitConfig::from(&ctx.config)?;
        let branch = config.branch();
        let [output] = ctx.outputs.as_slice() else {
            return Err(Error::new(format!(
                "expected one output artifact, got {}",
                ctx.outputs.len()
            )));
        };
        let git = GitCli::in_workspace(&ctx.workspace)?;

        // A retry may find the repository of an earlier attempt: start afresh.
        let repo = ctx.workspace.join("repo.git");
        if fs::symlink_metadata(&repo).is_ok() {
            fs::remove_dir_all(&repo)
                .with_context(|| format!("removing \"{}\"", repo.display()))?;
        }
        let repo_host = host_path(&repo)?.display().to_string();
        git.run(["init", "--quiet", "--bare", &repo_host])?;
        let git_dir = format!("--git-dir={repo_host}");

        let commit = config
            .commit_id
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        // An exact commit may lie anywhere in the branch's history.
        let depth = if commit.is_some() {
            0
        } else {
            config.depth.unwrap_or(1)
        };
        let remote_ref = format!("refs/remotes/origin/{branch}");
        let refspec = format!("+refs/heads/{branch}:{remote_ref}");
        let depth_arg = format!("--depth={depth}");
        let mut fetch = vec![git_dir.as_str(), "fetch", "--no-tags"];
        if depth > 0 {
            fetch.push(&depth_arg);
        }
        fetch.extend([config.url.as_str(), refspec.as_str()]);
        log::info(format!("fetching branch \"{branch}\" of {}", config.url));
        git.run(fetch)?;

        let wanted = match commit {
            Some(commit) => git
                .output([
                    git_dir.as_str(),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{commit}^{{commit}}"),
                ])
                .map_err(|_| {
                    Error::new(format!(
                        "commit \"{commit}\" not found on branch \"{branch}\" of {}",
                        config.url
                    ))
                })?,
            None => git.output([
                git_dir.as_str(),
                "rev-parse",
                "--verify",
                &format!("{remote_ref}^{{commit}}"),
            ])?,
        };

        let work_tree = format!("--work-tree={}", host_path(&output.path)?.display());
        git.run([
            git_dir.as_str(),
            &work_tree,
            "checkout",
            "--force",
            "--quiet",
            &wanted,
            "--",
            ".",
        ])?;

        let format = format!(
            "--format={}",
            ["%H", "%an", "%aI", "%B"].join(FIELD_SEPARATOR)
        );
        let log = git.output([git_dir.as_str(), "log", "-1", &format, &wanted])?;
        let mut fields = log.splitn(4, '\0').map(str::trim);
        let mut field = || fields.next().unwrap_or_default().to_owned();
        let (id, author, date, message) = (field(), field(), field(), field());
        let title = message.lines().next().unwrap_or_default();
        Ok(
            Outcome::succeeded(format!("{branch}@{}: {title}", short(&id)))
                .variable("CommitId", &id)
                .variable("BranchName", branch)
                .variable("CommitMessage", &message)
                .variable("AuthorDate", date)
                .variable("AuthorDisplayName", author),
        )
    }
}

impl Source for Git {
    fn latest_revision(config: &Config) -> Result<Revision, Error> {
        let config = GitConfig::from(config)?;
        let branch = config.branch();
        let wanted = format!("refs/heads/{branch}");
        let listed =
            GitCli::without_workspace().output(["ls-remote", config.url.as_str(), &wanted])?;
        let id = listed
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(_, name)| *name == wanted)
            .map(|(id, _)| id.to_owned())
            .ok_or_else(|| {
                Error::new(format!("branch \"{branch}\" not found in {}", config.url))
            })?;
        let summary = format!("{branch}@{}", short(&id));
        Ok(Revision::new(id, summary))
    }
}

sluice_plugin_sdk::export_source!(Git);

/// Runs git with this plugin's fixed environment.
struct GitCli {
    /// The workspace (sandbox path, host path): git's working directory and
    /// `HOME`. `None` for `latest_revision`, which has no workspace.
    workspace: Option<(PathBuf, PathBuf)>,
}

impl GitCli {
    fn in_workspace(workspace: &Path) -> Result<Self, Error> {
        Ok(Self {
            workspace: Some((workspace.to_path_buf(), host_path(workspace)?)),
        })
    }

    fn without_workspace() -> Self {
        Self { workspace: None }
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let command = Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("PATH", PATH);
        match &self.workspace {
            Some((sandbox, host)) => command.cwd(sandbox).env("HOME", host),
            None => command,
        }
    }

    fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> Result<(), Error> {
        self.command(args).stream_output(true).run_checked()?;
        Ok(())
    }

    /// Runs git and returns its stdout, trimmed.
    fn output<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> Result<String, Error> {
        Ok(self.command(args).run_checked()?.stdout_text())
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(SHORT_ID)]
}

#[cfg(test)]
mod tests {
    //! These run natively against repositories made with the host's git:
    //! the SDK then runs programs directly and sandbox paths are host paths.
    use super::*;
    use sluice_plugin_sdk::Artifact;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        first: String,
        second: String,
    }

    fn sh(cwd: &Path, script: &str) -> String {
        let out = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            sh(&root, "git init -q -b main src");
            let src = root.join("src");
            let commit = "git -c user.name='Ann Dev' -c user.email=ann@example.com commit -q";
            sh(
                &src,
                &format!("echo one > a.txt && git add . && {commit} -m 'first commit'"),
            );
            let first = sh(&src, "git rev-parse HEAD");
            sh(
                &src,
                &format!(
                    "mkdir d && echo two > d/b.txt && git add . && {commit} -m 'second commit' -m 'body'"
                ),
            );
            let second = sh(&src, "git rev-parse HEAD");
            Fixture {
                _dir: dir,
                root,
                first,
                second,
            }
        }

        fn context(&self, config: &[(&str, &str)]) -> Context {
            let (ws, out) = (self.root.join("ws"), self.root.join("out"));
            for dir in [&ws, &out] {
                let _ = fs::remove_dir_all(dir);
                fs::create_dir_all(dir).unwrap();
            }
            Context {
                pipeline: "web".into(),
                execution_id: "e1".into(),
                stage: "Source".into(),
                action: "Src".into(),
                attempt: 1,
                config: config.iter().copied().collect(),
                inputs: vec![],
                outputs: vec![Artifact {
                    name: "src".into(),
                    path: out,
                    files: vec![],
                }],
                workspace: ws,
                variables: vec![],
                continuation: None,
            }
        }

        fn url(&self) -> String {
            self.root.join("src").display().to_string()
        }
    }

    #[test]
    fn fetches_the_branch_head_without_dot_git() {
        let fx = Fixture::new();
        let url = fx.url();
        let outcome = Git::execute(fx.context(&[("Url", &url)])).unwrap();
        assert_eq!(
            outcome.summary(),
            format!("main@{}: second commit", &fx.second[..7])
        );
        assert_eq!(outcome.get_variable("CommitId"), Some(fx.second.as_str()));
        assert_eq!(outcome.get_variable("BranchName"), Some("main"));
        assert_eq!(
            outcome.get_variable("CommitMessage"),
            Some("second commit\n\nbody")
        );
        assert_eq!(outcome.get_variable("AuthorDisplayName"), Some("Ann Dev"));
        let date = outcome.get_variable("AuthorDate").unwrap();
        assert!(date.len() >= 20 && date.as_bytes()[10] == b'T', "{date}");
        let out = fx.root.join("out");
        assert_eq!(fs::read_to_string(out.join("d/b.txt")).unwrap(), "two\n");
        assert!(!out.join(".git").exists());
    }

    #[test]
    fn checks_out_an_exact_commit_over_file_urls() {
        let fx = Fixture::new();
        let url = format!("file://{}", fx.url());
        let outcome =
            Git::execute(fx.context(&[("Url", &url), ("CommitId", &fx.first), ("Depth", "1")]))
                .unwrap();
        assert_eq!(outcome.get_variable("CommitId"), Some(fx.first.as_str()));
        assert!(!fx.root.join("out/d").exists());

        let missing = "0123456789abcdef0123456789abcdef01234567";
        let err = Git::execute(fx.context(&[("Url", &url), ("CommitId", missing)])).unwrap_err();
        assert_eq!(
            err.message(),
            format!("commit \"{missing}\" not found on branch \"main\" of {url}")
        );
    }

    #[test]
    fn git_failures_carry_git_stderr() {
        let fx = Fixture::new();
        let url = fx.root.join("nowhere").display().to_string();
        let err = Git::execute(fx.context(&[("Url", &url)])).unwrap_err();
        assert!(err.message().contains("exited with status 128"), "{err}");
        assert!(
            err.message()
                .contains("does not appear to be a git repository"),
            "{err}"
        );
        assert!(!err.is_retryable());
        let err = Git::execute(fx.context(&[("Url", &fx.url()), ("Branch", "nope")])).unwrap_err();
        assert!(
            err.message()
                .contains("couldn't find remote ref refs/heads/nope"),
            "{err}"
        );
    }

    #[test]
    fn latest_revision_lists_the_branch() {
        let fx = Fixture::new();
        let config: Config = [("Url", fx.url())].into_iter().collect();
        let revision = Git::latest_revision(&config).unwrap();
        assert_eq!(
            revision,
            Revision::new(fx.second.clone(), format!("main@{}", &fx.second[..7]))
        );
        let config: Config = [("Url", fx.url()), ("Branch", "dev".into())]
            .into_iter()
            .collect();
        assert_eq!(
            Git::latest_revision(&config).unwrap_err().message(),
            format!("branch \"dev\" not found in {}", fx.url())
        );
        let config: Config = [("Branch", "main")].into_iter().collect();
        assert_eq!(
            Git::latest_revision(&config).unwrap_err().message(),
            "configuration \"Url\" is required"
        );
    }
}
