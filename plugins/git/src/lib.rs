//! Built-in source plugin `git@1`: fetches one commit of a branch or tag
//! from a git repository into the output artifact, without `.git`.
//!
//! Configuration: `Url` (a local path, `file://`, `http(s)://` or anything
//! else the host's git understands), `Branch` (`main` by default) or `Tag`,
//! `CommitId` (an exact commit), `Depth` (history depth, 1 by default, 0 for
//! all) and `CredentialsSecret` (the name of a granted secret holding
//! `user:password`, or a token alone, sent to http(s) remotes as basic
//! authentication). When the execution pinned a revision (a webhook, a poll
//! or `pipeline start --source-revision` chose it), that commit is fetched.
//! Output variables carry CodePipeline's names: `CommitId`, `BranchName`,
//! `CommitMessage`, `AuthorDate` (ISO 8601), `AuthorDisplayName`; with a
//! tag also `TagName`.
//!
//! `git` is a host program: the pipeline action must grant it with the
//! `exec` capability. It runs with `GIT_TERMINAL_PROMPT=0` (never waits for
//! a password) and `HOME` set to the workspace, so the host user's global
//! git configuration and credentials are not used. Credentials reach git
//! through its per-process configuration environment, never its arguments
//! (which every user of the host can list). This crate knows only the SDK.
//!
//! Nothing from the configuration or a pinned revision reaches git as an
//! option: `Url` must not start with `-`; `Branch` and `Tag` must be valid
//! ref names (git's `check-ref-format` rules); commits (`CommitId`, a
//! pinned revision) must be full object ids (40 or 64 hex digits); and
//! every command ends its options with `--` or `--end-of-options` before
//! the values it was given.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use sluice_plugin_sdk::process::{Command, host_path};
use sluice_plugin_sdk::{
    ActionInfo, Category, Config, Context, Error, Outcome, Plugin, Property, PropertyType,
    ResultExt, Revision, Source, log, secrets,
};

/// The `PATH` git gets (it may run `ssh` or credential helpers).
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Characters of a commit id in summaries.
const SHORT_ID: usize = 7;

/// Separates the fields of `git log --format` output; it cannot occur in them.
const FIELD_SEPARATOR: &str = "%x00";

/// User name sent with a token that names none (GitHub's convention).
const TOKEN_USER: &str = "x-access-token";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GitConfig {
    url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    depth: Option<u32>,
    #[serde(default)]
    credentials_secret: Option<String>,
}

/// The ref a configuration follows.
enum Ref<'c> {
    Branch(&'c str),
    Tag(&'c str),
}

impl Ref<'_> {
    /// `refs/heads/main` or `refs/tags/v1`.
    fn full(&self) -> String {
        match self {
            Ref::Branch(b) => format!("refs/heads/{b}"),
            Ref::Tag(t) => format!("refs/tags/{t}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ref::Branch(b) => format!("branch \"{b}\""),
            Ref::Tag(t) => format!("tag \"{t}\""),
        }
    }

    fn name(&self) -> &str {
        match self {
            Ref::Branch(n) | Ref::Tag(n) => n,
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl GitConfig {
    fn from(config: &Config) -> Result<Self, Error> {
        let parsed: GitConfig = config.parse()?;
        if parsed.url.trim().is_empty() {
            return Err(Error::new("configuration \"Url\" is required"));
        }
        check_url(&parsed.url)?;
        if non_empty(&parsed.tag).is_some() && non_empty(&parsed.branch).is_some() {
            return Err(Error::new("give \"Branch\" or \"Tag\", not both"));
        }
        for (key, value) in [("Branch", &parsed.branch), ("Tag", &parsed.tag)] {
            if let Some(name) = non_empty(value) {
                check_ref_name(name).map_err(|why| {
                    Error::new(format!("configuration \"{key}\": {name:?} is not a valid ref name: {why}"))
                })?;
            }
        }
        if let Some(commit) = non_empty(&parsed.commit_id) {
            object_id(commit).map_err(|why| Error::new(format!("configuration \"CommitId\": {why}")))?;
        }
        Ok(parsed)
    }

    fn reference(&self) -> Ref<'_> {
        match non_empty(&self.tag) {
            Some(tag) => Ref::Tag(tag),
            None => Ref::Branch(non_empty(&self.branch).unwrap_or("main")),
        }
    }

    /// Git configuration (key, value) that authenticates http(s) requests.
    fn credentials(&self) -> Result<Vec<(String, String)>, Error> {
        let Some(name) = non_empty(&self.credentials_secret) else {
            return Ok(Vec::new());
        };
        let value = secrets::get(name)?;
        let value = value.trim();
        let pair = if value.contains(':') {
            value.to_string()
        } else {
            format!("{TOKEN_USER}:{value}")
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        Ok(vec![(
            "http.extraHeader".into(),
            format!("Authorization: Basic {encoded}"),
        )])
    }
}

/// The git plugin.
pub struct Git;

impl Plugin for Git {
    fn describe() -> ActionInfo {
        ActionInfo::new("git", "1", Category::Source)
            .description(
                "Fetches one commit of a branch or tag of a git repository into the output artifact \
                 (without .git). The action must grant git with the exec capability.",
            )
            .property(Property::required("Url", "Repository: a local path, file://, http(s):// or ssh URL"))
            .property(Property::optional("Branch", "The branch, main by default"))
            .property(Property::optional("Tag", "A tag to fetch instead of a branch"))
            .property(Property::optional("CommitId", "An exact commit instead of the branch or tag head"))
            .property(
                Property::optional("Depth", "History to fetch: 1 by default, 0 for all")
                    .kind(PropertyType::Number),
            )
            .property(Property::optional(
                "CredentialsSecret",
                "Name of a granted secret holding user:password (or a token) for http(s) remotes",
            ))
            .inputs(0, 0)
            .outputs(1, 1)
            .exec(["git"])
            .secrets(["*"])
    }

    fn execute(ctx: Context) -> Result<Outcome, Error> {
        let config = GitConfig::from(&ctx.config)?;
        let reference = config.reference();
        let [output] = ctx.outputs.as_slice() else {
            return Err(Error::new(format!(
                "expected one output artifact, got {}",
                ctx.outputs.len()
            )));
        };
        let git = GitCli::in_workspace(&ctx.workspace, config.credentials()?)?;

        // A retry may find the repository of an earlier attempt: start afresh.
        let repo = ctx.workspace.join("repo.git");
        if fs::symlink_metadata(&repo).is_ok() {
            fs::remove_dir_all(&repo)
                .with_context(|| format!("removing \"{}\"", repo.display()))?;
        }
        let repo_host = host_path(&repo)?.display().to_string();
        git.run(["init", "--quiet", "--bare", "--", &repo_host])?;
        let git_dir = format!("--git-dir={repo_host}");

        // A pinned revision wins over the configured commit.
        let commit = match ctx.pinned_revision().map(str::trim) {
            Some(pinned) => Some(
                object_id(pinned).map_err(|why| Error::new(format!("pinned revision: {why}")))?,
            ),
            None => non_empty(&config.commit_id).map(object_id).transpose()?,
        };
        let commit = commit.as_deref();
        let depth = config.depth.unwrap_or(1);
        let depth_arg = format!("--depth={depth}");
        let fetch = |what: &[&str], depth: u32| -> Result<(), Error> {
            git.run(fetch_args(&git_dir, (depth > 0).then_some(depth_arg.as_str()), &config.url, what))
        };
        let remote_ref = format!("refs/remotes/origin/{}", reference.name());
        let refspec = format!("+{}:{remote_ref}", reference.full());

        let wanted = match commit {
            Some(commit) => {
                log::info(format!(
                    "fetching commit {} of {}",
                    short(commit),
                    config.url
                ));
                // Servers hand out any reachable commit by id (protocol v2);
                // older ones only refs: then fetch the ref in full and look.
                if fetch(&[commit], depth).is_err() {
                    log::info(format!(
                        "the remote does not serve commits by id; fetching {} in full",
                        reference.describe()
                    ));
                    fetch(&[refspec.as_str()], 0)?;
                }
                git.output([
                    git_dir.as_str(),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    "--end-of-options",
                    &format!("{commit}^{{commit}}"),
                ])
                .map_err(|_| {
                    Error::new(format!(
                        "commit \"{commit}\" not found on {} of {}",
                        reference.describe(),
                        config.url
                    ))
                })?
            }
            None => {
                log::info(format!(
                    "fetching {} of {}",
                    reference.describe(),
                    config.url
                ));
                fetch(&[refspec.as_str()], depth)?;
                git.output([
                    git_dir.as_str(),
                    "rev-parse",
                    "--verify",
                    "--end-of-options",
                    &format!("{remote_ref}^{{commit}}"),
                ])?
            }
        };

        let work_tree = format!("--work-tree={}", host_path(&output.path)?.display());
        // A commit may have no files at all; `checkout -- .` would refuse it.
        let files = git.output([
            git_dir.as_str(),
            "ls-tree",
            "--name-only",
            "--end-of-options",
            &wanted,
        ])?;
        if !files.is_empty() {
            git.run([
                git_dir.as_str(),
                &work_tree,
                "checkout",
                "--force",
                "--quiet",
                "--end-of-options",
                &wanted,
                "--",
                ".",
            ])?;
        }

        let format = format!(
            "--format={}",
            ["%H", "%an", "%aI", "%B"].join(FIELD_SEPARATOR)
        );
        let log = git.output([
            git_dir.as_str(),
            "log",
            "-1",
            &format,
            "--end-of-options",
            &wanted,
        ])?;
        let mut fields = log.splitn(4, '\0').map(str::trim);
        let mut field = || fields.next().unwrap_or_default().to_owned();
        let (id, author, date, message) = (field(), field(), field(), field());
        let title = message.lines().next().unwrap_or_default();
        let mut outcome =
            Outcome::succeeded(format!("{}@{}: {title}", reference.name(), short(&id)))
                .variable("CommitId", &id)
                .variable("CommitMessage", &message)
                .variable("AuthorDate", date)
                .variable("AuthorDisplayName", author);
        outcome = match reference {
            Ref::Branch(branch) => outcome.variable("BranchName", branch),
            Ref::Tag(tag) => outcome.variable("TagName", tag),
        };
        Ok(outcome)
    }
}

impl Source for Git {
    fn latest_revision(config: &Config) -> Result<Revision, Error> {
        let config = GitConfig::from(config)?;
        let reference = config.reference();
        let wanted = reference.full();
        // An annotated tag lists its object and, peeled (`^{}`), its commit.
        let peeled = format!("{wanted}^{{}}");
        let listed = GitCli::without_workspace(config.credentials()?).output([
            "ls-remote",
            "--",
            config.url.as_str(),
            &wanted,
            &peeled,
        ])?;
        let refs: Vec<(&str, &str)> = listed
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .collect();
        let id = refs
            .iter()
            .find(|(_, name)| *name == peeled)
            .or_else(|| refs.iter().find(|(_, name)| *name == wanted))
            .map(|(id, _)| id.to_string())
            .ok_or_else(|| {
                Error::new(format!(
                    "{} not found in {}",
                    reference.describe(),
                    config.url
                ))
            })?;
        let summary = format!("{}@{}", reference.name(), short(&id));
        Ok(Revision::new(id, summary))
    }
}

sluice_plugin_sdk::export_source!(Git);

/// Runs git with this plugin's fixed environment.
struct GitCli {
    /// The workspace (sandbox path, host path): git's working directory and
    /// `HOME`. `None` for `latest_revision`, which has no workspace.
    workspace: Option<(PathBuf, PathBuf)>,
    /// Configuration given through git's environment (`GIT_CONFIG_*`).
    config: Vec<(String, String)>,
}

impl GitCli {
    fn in_workspace(workspace: &Path, config: Vec<(String, String)>) -> Result<Self, Error> {
        Ok(Self {
            workspace: Some((workspace.to_path_buf(), host_path(workspace)?)),
            config,
        })
    }

    fn without_workspace(config: Vec<(String, String)>) -> Self {
        Self {
            workspace: None,
            config,
        }
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut command = Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("PATH", PATH);
        if !self.config.is_empty() {
            command = command.env("GIT_CONFIG_COUNT", self.config.len().to_string());
            for (i, (key, value)) in self.config.iter().enumerate() {
                command = command
                    .env(format!("GIT_CONFIG_KEY_{i}"), key)
                    .env(format!("GIT_CONFIG_VALUE_{i}"), value);
            }
        }
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
    // Commit ids are ASCII hex; anything else is shown whole rather than
    // cut inside a character.
    id.get(..id.len().min(SHORT_ID)).unwrap_or(id)
}

/// The arguments of `git fetch`: options, then `--`, then the remote and
/// what to fetch, so that neither can be read as an option.
fn fetch_args<'a>(git_dir: &'a str, depth: Option<&'a str>, url: &'a str, what: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![git_dir, "fetch", "--no-tags"];
    args.extend(depth);
    args.extend(["--", url]);
    args.extend(what);
    args
}

/// Refuses a remote git would read as an option (`--upload-pack=...` runs
/// a command) or that holds control characters.
fn check_url(url: &str) -> Result<(), Error> {
    if url.trim_start().starts_with('-') {
        return Err(Error::new(format!(
            "configuration \"Url\": {url:?} starts with \"-\"; git would read it as an option"
        )));
    }
    if url.chars().any(char::is_control) {
        return Err(Error::new("configuration \"Url\" must not contain control characters"));
    }
    Ok(())
}

/// A full object id (40 hex digits for SHA-1, 64 for SHA-256), in lower
/// case; abbreviated ids and anything else are refused, so that a revision
/// is never read as an option or a revision expression.
fn object_id(text: &str) -> Result<String, Error> {
    let text = text.trim();
    if matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(text.to_ascii_lowercase());
    }
    let shown: String = text.chars().take(80).collect();
    Err(Error::new(format!(
        "{shown:?} is not a full commit id (40 or 64 hexadecimal digits)"
    )))
}

/// git's `check-ref-format` rules for a branch or tag name (the part after
/// `refs/heads/` or `refs/tags/`), and no leading `-` (as `--branch`
/// refuses it).
fn check_ref_name(name: &str) -> Result<(), &'static str> {
    if name.starts_with('-') {
        return Err("it starts with \"-\"");
    }
    if name == "@" {
        return Err("it is \"@\"");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("it starts or ends with \"/\" or has an empty component");
    }
    if name.ends_with('.') {
        return Err("it ends with \".\"");
    }
    if name.contains("..") {
        return Err("it contains \"..\"");
    }
    if name.contains("@{") {
        return Err("it contains \"@{\"");
    }
    if name
        .chars()
        .any(|c| c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err("it contains a control character, a space or one of ~ ^ : ? * [ \\");
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Err("a component starts with \".\" or ends with \".lock\"");
    }
    Ok(())
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
                outputs: vec![Artifact {
                    name: "src".into(),
                    path: out,
                    files: vec![],
                }],
                workspace: ws,
                ..Context::for_test(config)
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
    fn a_commit_without_files_gives_an_empty_artifact() {
        let fx = Fixture::new();
        sh(
            &fx.root.join("src"),
            "git rm -q -r . && git -c user.name=A -c user.email=a@b commit -q -m empty",
        );
        let outcome = Git::execute(fx.context(&[("Url", &fx.url())])).unwrap();
        assert_eq!(outcome.get_variable("CommitMessage"), Some("empty"));
        assert_eq!(fs::read_dir(fx.root.join("out")).unwrap().count(), 0);
    }

    #[test]
    fn a_pinned_revision_wins_and_tags_are_fetched() {
        let fx = Fixture::new();
        let url = fx.url();
        let mut ctx = fx.context(&[("Url", &url)]);
        ctx.variables.push((
            sluice_plugin_sdk::PINNED_REVISION_VARIABLE.into(),
            fx.first.clone(),
        ));
        let outcome = Git::execute(ctx).unwrap();
        assert_eq!(outcome.get_variable("CommitId"), Some(fx.first.as_str()));
        assert!(
            !fx.root.join("out/d").exists(),
            "the first commit has no d/"
        );

        sh(
            &fx.root.join("src"),
            &format!("git tag -a v1 -m 'release one' {}", fx.first),
        );
        let outcome = Git::execute(fx.context(&[("Url", &url), ("Tag", "v1")])).unwrap();
        assert_eq!(outcome.get_variable("CommitId"), Some(fx.first.as_str()));
        assert_eq!(outcome.get_variable("TagName"), Some("v1"));
        let config: Config = [("Url", url.clone()), ("Tag", "v1".into())]
            .into_iter()
            .collect();
        assert_eq!(
            Git::latest_revision(&config).unwrap().id,
            fx.first,
            "an annotated tag peels to its commit"
        );
        let err = Git::execute(fx.context(&[("Url", &url), ("Tag", "v1"), ("Branch", "main")]))
            .unwrap_err();
        assert_eq!(err.message(), "give \"Branch\" or \"Tag\", not both");
    }

    #[test]
    fn credentials_come_from_a_secret_and_never_from_arguments() {
        let config: Config = [
            ("Url", "https://example.invalid/r.git"),
            ("CredentialsSecret", "GIT_CREDS"),
        ]
        .into_iter()
        .collect();
        let parsed = GitConfig::from(&config).unwrap();
        // Not set: the error names the secret.
        assert!(
            parsed
                .credentials()
                .unwrap_err()
                .message()
                .contains("GIT_CREDS")
        );
        // SAFETY of the test: no other test reads this variable.
        unsafe { std::env::set_var("SLUICE_SECRET_GIT_CREDS", "ann:s3cret") };
        let header = parsed.credentials().unwrap();
        assert_eq!(header[0].0, "http.extraHeader");
        assert_eq!(header[0].1, "Authorization: Basic YW5uOnMzY3JldA==");
        let cli = GitCli::without_workspace(header);
        let command = format!("{:?}", cli.command(["ls-remote"]));
        assert!(command.contains("GIT_CONFIG_VALUE_0"), "{command}");
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
    fn ref_names_follow_check_ref_format() {
        for good in ["main", "release/1.2", "feature/x-y_z", "v1.0.0", "ü-branch"] {
            assert_eq!(check_ref_name(good), Ok(()), "{good}");
        }
        for bad in [
            "-main", "--upload-pack=x", "@", "/a", "a/", "a//b", "a.", "a..b", "a@{1}", "a b",
            "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a\tb", ".hidden", "a/.b", "x.lock",
            "a/b.lock/c",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad:?} was accepted");
        }
        // Cross-checked with git itself where it is installed.
        for name in ["main", "a..b", "a/.b", "x.lock", "a@{1}", "release/1.2"] {
            let git_says = std::process::Command::new("git")
                .args(["check-ref-format", &format!("refs/heads/{name}")])
                .status()
                .unwrap()
                .success();
            assert_eq!(check_ref_name(name).is_ok(), git_says, "{name}");
        }
    }

    #[test]
    fn only_full_object_ids_are_revisions() {
        let sha1 = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(object_id(sha1).unwrap(), sha1.to_ascii_lowercase());
        assert!(object_id(&"a".repeat(64)).is_ok());
        for bad in ["", "abc1234", "HEAD", "main", "--upload-pack=touch /tmp/x", &"g".repeat(40), &"a".repeat(41), "é"] {
            let err = object_id(bad).unwrap_err();
            assert!(err.message().contains("is not a full commit id"), "{bad:?}: {err}");
        }
        assert_eq!(short("é-not-ascii"), "é-not-");
        assert_eq!(short("ab"), "ab");
    }

    #[test]
    fn options_in_the_configuration_are_refused_before_git_runs() {
        let fx = Fixture::new();
        let url = fx.url();
        let marker = fx.root.join("pwned");
        let payload = format!("--upload-pack=touch {}", marker.display());
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("Url", &payload)], "starts with \"-\"; git would read it as an option"),
            (&[("Url", &url), ("Branch", &payload)], "configuration \"Branch\""),
            (&[("Url", &url), ("Tag", "-v1")], "configuration \"Tag\""),
            (&[("Url", &url), ("CommitId", &payload)], "configuration \"CommitId\""),
            (&[("Url", " -oProxyCommand=x")], "starts with \"-\""),
        ];
        for (config, expected) in cases {
            let err = Git::execute(fx.context(config)).unwrap_err();
            assert!(err.message().contains(expected), "{config:?}: {err}");
            let config: Config = config.iter().copied().collect();
            assert!(Git::latest_revision(&config).is_err());
        }
        assert!(!marker.exists(), "git ran the payload");
    }

    #[test]
    fn an_option_like_pinned_revision_runs_nothing() {
        let fx = Fixture::new();
        let url = fx.url();
        let marker = fx.root.join("pwned");
        let payload = format!("--upload-pack=touch {}", marker.display());
        let mut ctx = fx.context(&[("Url", &url)]);
        ctx.variables.push((sluice_plugin_sdk::PINNED_REVISION_VARIABLE.into(), payload.clone()));
        let err = Git::execute(ctx).unwrap_err();
        assert!(err.message().starts_with("pinned revision: "), "{err}");
        assert!(err.message().contains("is not a full commit id"), "{err}");
        assert!(!marker.exists(), "git ran the payload");

        // Even past the check, `--` keeps it from being an option: real git
        // is given the payload where the revision goes and runs nothing.
        let repo = fx.root.join("check.git");
        sh(&fx.root, &format!("git init -q --bare {}", repo.display()));
        let git_dir = format!("--git-dir={}", repo.display());
        let args = fetch_args(&git_dir, Some("--depth=1"), &url, &[payload.as_str()]);
        let out = std::process::Command::new("git").args(&args).output().unwrap();
        assert!(!out.status.success());
        assert!(!marker.exists(), "git ran the payload given after --");
        // The remote's place: with `--` git takes the payload as a path.
        let args = fetch_args(&git_dir, None, &payload, &["main"]);
        let out = std::process::Command::new("git").args(&args).current_dir(&fx.root).output().unwrap();
        assert!(!out.status.success());
        assert!(!marker.exists(), "git ran the payload given as the remote after --");
        // Without `--` the same arguments do run it: the attack is real.
        let unguarded: Vec<&str> = args.iter().copied().filter(|a| *a != "--").collect();
        let _ = std::process::Command::new("git").args(&unguarded).current_dir(&fx.root).output().unwrap();
        assert!(marker.exists(), "without -- git runs the upload-pack it is given");
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
