//! A daemon's settings from three places, in this order of precedence: its
//! flags, then `SLUICE_*` environment variables, then a TOML file named by
//! `--config FILE`; what none of them gives is the flag's default.
//!
//! The flags stay the one definition: every setting is a flag of the
//! daemon's clap command, its variable is made from its long name
//! ([`with_env`]: `--data-dir` is `SLUICE_DATA_DIR` for the controller) and
//! its key in the file is the long name itself (`data-dir = "/var/lib/sluice"`).
//! A key that is not a flag is an error naming the key, so that a typo never
//! passes silently. The file's values are handed to clap as the flags they
//! stand for, so they are validated by the same parsers as flags are.
//!
//! Must not know any daemon's flags: the controller and the agent pass
//! their commands in.

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Where a daemon's settings are in its command, and how they are named.
#[derive(Debug, Clone, Copy)]
pub struct Daemon<'a> {
    /// The daemon as an operator calls it, for messages (`sluice controller`).
    pub name: &'a str,
    /// Subcommands from the binary's command to the daemon's (`["controller"]`),
    /// empty when the binary is the daemon.
    pub path: &'a [&'a str],
    /// What the variables' names start with (`SLUICE_`).
    pub env_prefix: &'a str,
    /// The id of the flag that names the file (`config`).
    pub config_flag: &'a str,
    /// Ids of flags that are no settings and have neither variable nor key
    /// (`check_config`).
    pub not_settings: &'a [&'a str],
    /// Ids of global flags of the binary's command that are settings of the
    /// daemon too (the controller binds the `--api` that admin commands call).
    pub globals: &'a [&'a str],
}

/// Why the settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags themselves are wrong, or help or the version was asked
    /// for: the caller lets clap print it and exit (`Error::exit`).
    #[error("{0}")]
    Flags(#[from] clap::Error),
    #[error("reading the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("the config file {path}: unknown key {key:?}: it is no flag of {daemon}{hint}")]
    UnknownKey { path: PathBuf, key: String, daemon: String, hint: String },
    #[error("the config file {path}: key {key:?}: {message}")]
    Value { path: PathBuf, key: String, message: String },
    #[error("the config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The variable's name.
    Env(String),
    File,
    Default,
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File => f.write_str("config file"),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("not set"),
        }
    }
}

/// One setting as the daemon will use it.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The flag's long name, which is its key in the file.
    pub key: String,
    pub values: Vec<String>,
    pub source: Source,
    shape: Shape,
    secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Switch,
    One,
    Many,
}

/// The parsed command line with the environment and the file folded in.
#[derive(Debug)]
pub struct Parsed {
    /// The matches of the binary's whole command, as if every setting had
    /// been given as a flag.
    pub matches: ArgMatches,
    /// The daemon's settings, when the command line ran the daemon.
    pub settings: Option<Settings>,
}

#[derive(Debug)]
pub struct Settings {
    pub file: Option<PathBuf>,
    pub effective: Vec<Setting>,
    /// Keys of the file that a flag or a variable overrode (flags >
    /// environment > file): said at start, since a variable set for another
    /// purpose (the CLI's `SLUICE_API`) would otherwise win silently.
    pub overridden: Vec<String>,
}

/// The variable of a flag: the prefix, then the long name in capitals with
/// `_` for `-`.
pub fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Gives every setting of the daemon a variable, unless it has one already
/// (kept as it was, for compatibility). Repeatable flags take a
/// comma-separated list from their variable.
pub fn with_env(cmd: Command, daemon: &Daemon) -> Command {
    let not_settings: Vec<&str> = daemon.not_settings.to_vec();
    let prefix = daemon.env_prefix.to_string();
    let config_flag = daemon.config_flag.to_string();
    at_path(cmd, daemon.path, &mut |sub| {
        sub.mut_args(|arg| {
            let id = arg.get_id().as_str().to_string();
            if arg.get_env().is_some() || not_settings.contains(&id.as_str()) || id == config_flag {
                return arg;
            }
            let Some(long) = arg.get_long().map(str::to_string) else { return arg };
            let repeatable = matches!(arg.get_action(), clap::ArgAction::Append) && arg.get_value_delimiter().is_none();
            let arg = arg.env(env_name(&prefix, &long));
            if repeatable { arg.value_delimiter(',') } else { arg }
        })
    })
}

fn at_path(cmd: Command, path: &[&str], f: &mut dyn FnMut(Command) -> Command) -> Command {
    match path.split_first() {
        None => f(cmd),
        Some((first, rest)) => cmd.mut_subcommand(*first, |sub| at_path(sub, rest, f)),
    }
}

fn sub_command<'c>(cmd: &'c Command, path: &[&str]) -> Option<&'c Command> {
    path.iter().try_fold(cmd, |cmd, name| cmd.find_subcommand(name))
}

fn sub_matches<'m>(matches: &'m ArgMatches, path: &[&str]) -> Option<&'m ArgMatches> {
    path.iter().try_fold(matches, |m, name| match m.subcommand() {
        Some((sub, sub_m)) if sub == *name => Some(sub_m),
        _ => None,
    })
}

/// Parses `argv` with `cmd`, the daemon's variables and its config file.
pub fn parse(cmd: Command, argv: Vec<OsString>, daemon: &Daemon) -> Result<Parsed, Error> {
    let cmd = with_env(cmd, daemon);
    // A first look without validation: a flag the file gives (a required
    // `--data-dir`, one half of a pair) may still be missing here.
    let first = cmd.clone().ignore_errors(true).try_get_matches_from(&argv);
    let first_sub = first.as_ref().ok().and_then(|m| sub_matches(m, daemon.path));
    let Some(first_sub) = first_sub else {
        return Ok(Parsed { matches: cmd.try_get_matches_from(argv)?, settings: None });
    };
    let file = first_sub.try_get_raw(daemon.config_flag).ok().flatten().and_then(|mut v| v.next()).map(PathBuf::from);
    let settings = settings_args(&cmd, daemon);
    let mut extra = Vec::new();
    let mut from_file = BTreeSet::new();
    let mut overridden = Vec::new();
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.clone(), source })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::Syntax { path: path.clone(), message: syntax_message(&text, &e) })?;
        for (key, value) in &table {
            let Some(arg) = settings.iter().find(|a| a.get_long() == Some(key.as_str())) else {
                return Err(unknown_key(path, key, &settings, daemon));
            };
            let id = arg.get_id().as_str();
            let given = source_of(first_sub, id).or_else(|| first.as_ref().ok().and_then(|m| source_of(m, id)));
            if matches!(given, Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                overridden.push(key.clone());
                continue;
            }
            let args = file_value_as_flags(arg, key, value).map_err(|message| Error::Value {
                path: path.clone(),
                key: key.clone(),
                message,
            })?;
            if !args.is_empty() {
                from_file.insert(id.to_string());
            }
            extra.extend(args);
        }
    }
    let mut full = argv;
    full.extend(extra.into_iter().map(OsString::from));
    let matches = cmd.clone().try_get_matches_from(full).map_err(|e| match (&file, e.kind()) {
        (_, clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) | (None, _) => Error::Flags(e),
        (Some(path), _) => Error::Invalid { path: path.clone(), message: e.render().to_string().trim().to_string() },
    })?;
    let effective = {
        let sub = sub_matches(&matches, daemon.path).unwrap_or(&matches);
        settings.iter().map(|arg| effective(arg, sub, &matches, &from_file)).collect()
    };
    Ok(Parsed { matches, settings: Some(Settings { file, effective, overridden }) })
}

/// A TOML error as its line, column and message, without the source line
/// toml's Display quotes: that line may hold a secret (a join token).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else { return message };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: {message}")
}

/// Where `id` got its value in `matches`; none when `matches` does not
/// know it (clap panics on ids of other commands).
fn source_of(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    if matches.ids().any(|known| known == id) { matches.value_source(id) } else { None }
}

/// The daemon's settings: its flags and the global ones it uses.
fn settings_args(cmd: &Command, daemon: &Daemon) -> Vec<Arg> {
    let own = sub_command(cmd, daemon.path).map(|sub| sub.get_arguments().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let globals = cmd.get_arguments().filter(|a| daemon.globals.contains(&a.get_id().as_str())).cloned();
    own.into_iter()
        .chain(globals)
        .filter(|a| {
            let id = a.get_id().as_str();
            a.get_long().is_some()
                && id != daemon.config_flag
                && !daemon.not_settings.contains(&id)
                && !matches!(id, "help" | "version")
        })
        .collect()
}

fn unknown_key(path: &std::path::Path, key: &str, settings: &[Arg], daemon: &Daemon) -> Error {
    let kebab = key.replace('_', "-");
    let hint = if kebab != key && settings.iter().any(|a| a.get_long() == Some(kebab.as_str())) {
        format!(" (did you mean {kebab:?}? keys are the flags' long names)")
    } else if key == daemon.config_flag {
        " (a config file cannot name another)".to_string()
    } else {
        String::new()
    };
    Error::UnknownKey { path: path.to_path_buf(), key: key.to_string(), daemon: daemon.name.to_string(), hint }
}

fn shape(arg: &Arg) -> Shape {
    if !arg.get_action().takes_values() {
        Shape::Switch
    } else if matches!(arg.get_action(), clap::ArgAction::Append) {
        Shape::Many
    } else {
        Shape::One
    }
}

/// The flags a key of the file stands for: `--key=value` once per value,
/// `--key` for a switch that is true, nothing for one that is false.
fn file_value_as_flags(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let flag = format!("--{key}");
    match (shape(arg), value) {
        (Shape::Switch, toml::Value::Boolean(on)) => Ok(if *on { vec![flag] } else { vec![] }),
        (Shape::Switch, other) => Err(format!("is a switch: true or false, not {}", other.type_str())),
        (Shape::Many, toml::Value::Array(items)) => {
            items.iter().map(|item| scalar(item).map(|v| format!("{flag}={v}"))).collect()
        }
        (Shape::One, toml::Value::Array(_)) => Err("takes one value, not a list".to_string()),
        (_, value) => Ok(vec![format!("{flag}={}", scalar(value)?)]),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expects a string or a number, not {}", other.type_str())),
    }
}

fn effective(arg: &Arg, sub: &ArgMatches, root: &ArgMatches, from_file: &BTreeSet<String>) -> Setting {
    let id = arg.get_id().as_str();
    let (matches, source) = match source_of(sub, id) {
        Some(source) => (sub, Some(source)),
        None => (root, source_of(root, id)),
    };
    let source = match source {
        Some(ValueSource::CommandLine) if from_file.contains(id) => Source::File,
        Some(ValueSource::CommandLine) => Source::Flag,
        Some(ValueSource::EnvVariable) => {
            Source::Env(arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
        }
        Some(ValueSource::DefaultValue) => Source::Default,
        _ => Source::Unset,
    };
    let values = matches
        .try_get_raw(id)
        .ok()
        .flatten()
        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    Setting {
        key: arg.get_long().unwrap_or(id).to_string(),
        values,
        source,
        shape: shape(arg),
        secret: arg.is_hide_env_values_set(),
    }
}

impl Settings {
    /// The effective settings as a config file that would give them, each
    /// with where it came from; secrets are not shown.
    pub fn to_toml(&self, daemon: &Daemon) -> String {
        let mut out = format!("# effective settings of {}", daemon.name);
        if let Some(file) = &self.file {
            let _ = write!(out, " (config file {})", file.display());
        }
        out.push('\n');
        for setting in &self.effective {
            let _ = writeln!(out, "{}", setting.line());
        }
        for warning in self.overrides() {
            let _ = writeln!(out, "# {warning}");
        }
        out
    }

    /// One sentence per file key that a flag or a variable overrode, naming
    /// which.
    pub fn overrides(&self) -> Vec<String> {
        let file = self.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
        self.overridden
            .iter()
            .map(|key| {
                let by = self.effective.iter().find(|s| &s.key == key).map(|s| s.source.to_string()).unwrap_or_default();
                format!("{key} of the config file {file} is overridden by the {by}")
            })
            .collect()
    }
}

impl Setting {
    fn line(&self) -> String {
        let value = |v: &String| {
            if self.secret {
                "\"(hidden)\"".to_string()
            } else if v.parse::<i64>().is_ok() {
                v.clone()
            } else {
                toml::Value::String(v.clone()).to_string()
            }
        };
        let text = match (self.shape, &self.source) {
            (_, Source::Unset) => return format!("# {} = (not set)", self.key),
            (Shape::Switch, _) => (self.values.first().map(String::as_str) == Some("true")).to_string(),
            (Shape::Many, _) => format!("[{}]", self.values.iter().map(value).collect::<Vec<_>>().join(", ")),
            (Shape::One, _) => self.values.first().map(value).unwrap_or_default(),
        };
        format!("{} = {text}  # {}", self.key, self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{ArgAction, value_parser};

    const DAEMON: Daemon = Daemon {
        name: "demo daemon",
        path: &["run"],
        env_prefix: "SLUICE_TEST_",
        config_flag: "config",
        not_settings: &["check-config"],
        globals: &["api"],
    };

    fn command() -> Command {
        Command::new("demo")
            .arg(Arg::new("api").long("api").global(true))
            .arg(Arg::new("token").long("token").global(true))
            .subcommand(
                Command::new("run")
                    .arg(Arg::new("config").long("config").value_parser(value_parser!(PathBuf)))
                    .arg(Arg::new("check-config").long("check-config").action(ArgAction::SetTrue))
                    .arg(Arg::new("data-dir").long("data-dir").required(true))
                    .arg(Arg::new("slots").long("slots").default_value("2").value_parser(value_parser!(u32)))
                    .arg(Arg::new("fsync").long("fsync").action(ArgAction::SetTrue))
                    .arg(Arg::new("name").long("name").action(ArgAction::Append))
                    .arg(Arg::new("secret").long("secret").env("SLUICE_TEST_OLD_SECRET").hide_env_values(true)),
            )
            .subcommand(Command::new("other"))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn parse_args(args: &[&str]) -> Result<Parsed, Error> {
        parse(command(), args.iter().map(OsString::from).collect(), &DAEMON)
    }

    fn run_matches(parsed: &Parsed) -> &ArgMatches {
        parsed.matches.subcommand_matches("run").unwrap()
    }

    fn setting<'p>(parsed: &'p Parsed, key: &str) -> &'p Setting {
        parsed.settings.as_ref().unwrap().effective.iter().find(|s| s.key == key).unwrap()
    }

    #[test]
    fn every_setting_gets_a_variable_and_old_ones_are_kept() {
        let mut cmd = with_env(command(), &DAEMON);
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let env = |id: &str| run.get_arguments().find(|a| a.get_id() == id).unwrap().get_env().map(|e| e.to_owned());
        assert_eq!(env("data-dir").unwrap(), "SLUICE_TEST_DATA_DIR");
        assert_eq!(env("secret").unwrap(), "SLUICE_TEST_OLD_SECRET");
        assert_eq!(env("config"), None);
        assert_eq!(env("check-config"), None);
    }

    #[test]
    fn the_file_fills_in_what_no_flag_gives_and_the_required_flag_may_come_from_it() {
        let f = file("data-dir = \"/srv/x\"\nslots = 7\nfsync = true\nname = [\"a\", \"b\"]\napi = \"127.0.0.1:1\"\n");
        let parsed = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap(), "--slots", "3"]).unwrap();
        let run = run_matches(&parsed);
        assert_eq!(run.get_one::<String>("data-dir").unwrap(), "/srv/x");
        assert_eq!(*run.get_one::<u32>("slots").unwrap(), 3, "the flag wins over the file");
        assert!(run.get_flag("fsync"));
        assert_eq!(run.get_many::<String>("name").unwrap().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(parsed.matches.get_one::<String>("api").unwrap(), "127.0.0.1:1");
        assert_eq!(setting(&parsed, "slots").source, Source::Flag);
        assert_eq!(setting(&parsed, "data-dir").source, Source::File);
        let toml = parsed.settings.as_ref().unwrap().to_toml(&DAEMON);
        assert!(toml.contains("data-dir = \"/srv/x\"  # config file"), "{toml}");
        assert!(toml.contains("slots = 3  # flag"), "{toml}");
        assert!(toml.contains("name = [\"a\", \"b\"]  # config file"), "{toml}");
        assert!(toml.contains("# secret = (not set)"), "{toml}");
        assert!(toml.contains("# slots of the config file") && toml.contains("overridden by the flag"), "{toml}");
        assert_eq!(parsed.settings.as_ref().unwrap().overridden, ["slots"]);
        // What --check-config prints is a file that gives the same settings.
        let again = file(&toml.replace("# secret = (not set)", ""));
        let reparsed = parse_args(&["demo", "run", "--config", again.path().to_str().unwrap()]).unwrap();
        assert_eq!(*run_matches(&reparsed).get_one::<u32>("slots").unwrap(), 3);
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_errors_naming_the_key() {
        let f = file("data-dir = \"/x\"\nslotz = 3\n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&e, Error::UnknownKey { key, .. } if key == "slotz"), "{e}");
        assert!(e.to_string().contains("unknown key \"slotz\""), "{e}");
        let f = file("data_dir = \"/x\"\n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("did you mean \"data-dir\""), "{e}");
        // A global flag that is no setting of the daemon is no key either.
        let f = file("token = \"t\"\n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("unknown key \"token\""), "{e}");
        for (text, key) in [("fsync = \"yes\"", "fsync"), ("slots = [1, 2]", "slots"), ("name = [{ a = 1 }]", "name")] {
            let f = file(&format!("data-dir = \"/x\"\n{text}\n"));
            let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
            assert!(matches!(&e, Error::Value { key: k, .. } if k == key), "{text}: {e}");
        }
        let f = file("data-dir = \"/x\"\nslots = \"many\"\n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&e, Error::Invalid { .. }) && e.to_string().contains("--slots"), "{e}");
        let f = file("data-dir = \n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&e, Error::Syntax { .. }), "{e}");
        // A broken line may hold a secret: the error names where, not what.
        let f = file("data-dir = \"/x\"\ntoken = \"sjt_secret\n");
        let e = parse_args(&["demo", "run", "--config", f.path().to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("sjt_secret"), "{e}");
        let e = parse_args(&["demo", "run", "--config", "/nonexistent/sluice.toml"]).unwrap_err();
        assert!(matches!(&e, Error::Read { .. }), "{e}");
    }

    #[test]
    fn without_a_file_the_flags_are_checked_as_always() {
        let e = parse_args(&["demo", "run"]).unwrap_err();
        assert!(matches!(&e, Error::Flags(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument), "{e}");
        let parsed = parse_args(&["demo", "other"]).unwrap();
        assert!(parsed.settings.is_none());
        let parsed = parse_args(&["demo", "run", "--data-dir", "/d"]).unwrap();
        assert_eq!(setting(&parsed, "slots").source, Source::Default);
        assert_eq!(setting(&parsed, "fsync").values, ["false"]);
    }

    #[test]
    fn secrets_are_not_printed() {
        let parsed = parse_args(&["demo", "run", "--data-dir", "/d", "--secret", "hunter2"]).unwrap();
        let toml = parsed.settings.unwrap().to_toml(&DAEMON);
        assert!(!toml.contains("hunter2") && toml.contains("secret = \"(hidden)\""), "{toml}");
    }
}
