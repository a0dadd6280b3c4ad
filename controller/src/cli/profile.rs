//! `sluice profile`: named controllers, so that a command needs only
//! `--profile NAME` (or `SLUICE_PROFILE`) instead of the address, the CA
//! and the token each time. A profile keeps the token's file, never the
//! token. The file is `SLUICE_CONFIG`, else
//! `$XDG_CONFIG_HOME/sluice/config.toml`, else `~/.config/sluice/config.toml`,
//! written 0600 and atomically.
//!
//! Profiles were kept in `profiles.json` before: when `config.toml` does not
//! exist, the `profiles.json` beside it is read, and the next change writes
//! `config.toml` (the old file is left as it was, and no longer read). A
//! `SLUICE_CONFIG` ending in `.json` is still read and written as JSON.

use super::output::s;
use super::{Ctx, Failure};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum ProfileCmd {
    /// Save a profile: the API address (--api), the CA its certificate
    /// chains to (--ca) and the file holding the token; or all three from
    /// a controller's data dir (its controller.json and admin.token), where
    /// --api and --ca override its parts.
    Add {
        name: String,
        /// A file holding the API token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A controller's data dir on this machine: address and CA from its
        /// controller.json, the token from its admin.token.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Use this profile when no --profile is given.
        #[arg(long)]
        default: bool,
    },
    /// The saved profiles.
    List,
    /// Forget a profile.
    Remove { name: String },
}

/// One saved controller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Profile {
    /// The token in the profile's token file, if it names one.
    pub fn token(&self) -> Result<Option<String>, Failure> {
        let Some(path) = &self.token_file else { return Ok(None) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure::new(2, format!("reading the profile's token file {}: {e}", path.display())))?;
        if let Some(warning) = loose_mode_warning(path) {
            eprintln!("warning: {warning}");
        }
        Ok(Some(text.trim().to_string()))
    }
}

/// A warning when a token file may be read by others than its owner (as
/// ssh does for keys); a token is a password. Warned, not refused: the
/// file may be on a filesystem without modes.
fn loose_mode_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the token file {} has mode {mode:04o}: others may read it; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
    #[serde(skip)]
    path: Option<PathBuf>,
}

/// Where the profiles are kept.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|p| !p.is_empty())?).join(".config"),
    };
    Some(base.join("sluice").join(CONFIG_FILE))
}

const CONFIG_FILE: &str = "config.toml";
/// Where earlier releases kept the profiles, beside `config.toml`.
const LEGACY_FILE: &str = "profiles.json";

/// How a profiles file is written: by its name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

impl Format {
    fn of(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "json") { Format::Json } else { Format::Toml }
    }
}

/// `config.toml` as it is written: kebab-case keys; any other key is an
/// error naming it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, TomlProfile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct TomlProfile {
    api: TomlApi,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_file: Option<PathBuf>,
}

// Several controllers, one leader (issue 18, reach).
/// A profile's `api`: one address, or a cluster's as a list (kept as one
/// comma-separated text, as `--api` takes it).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum TomlApi {
    One(String),
    Many(Vec<String>),
}

impl From<TomlApi> for String {
    fn from(api: TomlApi) -> Self {
        match api {
            TomlApi::One(api) => api,
            TomlApi::Many(list) => list.join(","),
        }
    }
}

impl From<&str> for TomlApi {
    fn from(api: &str) -> Self {
        if api.contains(',') {
            TomlApi::Many(api.split(',').map(|a| a.trim().to_string()).collect())
        } else {
            TomlApi::One(api.to_string())
        }
    }
}

impl Profiles {
    /// The saved profiles; none when the file does not exist.
    pub fn load() -> Result<Self, Failure> {
        let Some(path) = config_path() else { return Ok(Self::default()) };
        Self::load_from(path)
    }

    fn load_from(path: PathBuf) -> Result<Self, Failure> {
        let legacy = path.with_file_name(LEGACY_FILE);
        let (text, read_from) = match std::fs::read_to_string(&path) {
            Ok(text) => (text, path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Format::of(&path) == Format::Toml => {
                match std::fs::read_to_string(&legacy) {
                    Ok(text) => (text, legacy),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Self { path: Some(path), ..Self::default() });
                    }
                    Err(e) => return Err(Failure::new(2, format!("reading the profiles {}: {e}", legacy.display()))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self { path: Some(path), ..Self::default() }),
            Err(e) => return Err(Failure::new(2, format!("reading the profiles {}: {e}", path.display()))),
        };
        let invalid =
            |e: &dyn std::fmt::Display| Failure::new(2, format!("the profiles {} are not valid: {e}", read_from.display()));
        let mut profiles = match Format::of(&read_from) {
            Format::Json => serde_json::from_str::<Self>(&text).map_err(|e| invalid(&e))?,
            Format::Toml => Self::from(toml::from_str::<TomlFile>(&text).map_err(|e| invalid(&e))?),
        };
        profiles.path = Some(path);
        Ok(profiles)
    }

    /// The profile `name` (which must exist), else the default one if any.
    pub fn select(&self, name: Option<&str>) -> Result<Option<Profile>, Failure> {
        let Some(name) = name.filter(|n| !n.is_empty()).or(self.default.as_deref()) else { return Ok(None) };
        match self.profiles.get(name) {
            Some(profile) => Ok(Some(profile.clone())),
            None => Err(Failure::new(
                2,
                format!("no profile {name:?} (--profile or SLUICE_PROFILE): `sluice profile list` shows the saved ones"),
            )),
        }
    }

    fn save(&self) -> Result<(), Failure> {
        let path = self.path.clone().ok_or_else(|| Failure::new(2, "no place for profiles: set SLUICE_CONFIG or HOME"))?;
        let text = match Format::of(&path) {
            Format::Json => serde_json::to_string_pretty(self).map_err(|e| Failure::new(1, e.to_string()))? + "\n",
            Format::Toml => {
                let file = TomlFile::from(self);
                let body = toml::to_string(&file).map_err(|e| Failure::new(1, e.to_string()))?;
                format!("# Profiles of the sluice CLI (`sluice profile add`), chosen with --profile.\n{body}")
            }
        };
        write_atomically(&path, text.as_bytes())
            .map_err(|e| Failure::new(1, format!("writing the profiles {}: {e:#}", path.display())))
    }
}

impl From<TomlFile> for Profiles {
    fn from(file: TomlFile) -> Self {
        let profiles = file
            .profiles
            .into_iter()
            .map(|(name, p)| (name, Profile { api: p.api.into(), ca: p.ca, token_file: p.token_file }))
            .collect();
        Profiles { default: file.default, profiles, path: None }
    }
}

impl From<&Profiles> for TomlFile {
    fn from(profiles: &Profiles) -> Self {
        let entries = profiles
            .profiles
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    TomlProfile { api: p.api.as_str().into(), ca: p.ca.clone(), token_file: p.token_file.clone() },
                )
            })
            .collect();
        TomlFile { default: profiles.default.clone(), profiles: entries }
    }
}

/// Writes `path` whole or not at all (a temp file beside it, renamed),
/// readable by its owner alone.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)?;
    Ok(())
}

/// A path as given, made absolute, so that a profile works from any directory.
fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    if !path.exists() {
        return Err(Failure::new(2, format!("{} does not exist", path.display())));
    }
    std::path::absolute(path).map_err(|e| Failure::new(2, format!("{}: {e}", path.display())))
}

/// A profile from a controller's data dir: its controller.json's
/// address and CA, its admin token's file.
fn from_data_dir(dir: &Path) -> Result<Profile, Failure> {
    let file = dir.join("controller.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        Failure::new(2, format!("reading {}: {e} (is it a controller's data dir, started at least once?)", file.display()))
    })?;
    let addresses: Value =
        serde_json::from_str(&text).map_err(|e| Failure::new(2, format!("{} is not JSON: {e}", file.display())))?;
    let api = addresses["api"].as_str().ok_or_else(|| Failure::new(2, format!("{} names no api", file.display())))?;
    let ca = addresses["ca"].as_str().map(|p| absolute(Path::new(p))).transpose()?;
    Ok(Profile { api: api.to_string(), ca, token_file: Some(absolute(&dir.join("admin.token"))?) })
}

pub fn run(ctx: &Ctx, cmd: ProfileCmd) -> Result<i32, Failure> {
    let mut profiles = Profiles::load()?;
    match cmd {
        ProfileCmd::Add { name, token_file, data_dir, default } => {
            let mut profile = match (&data_dir, &ctx.api) {
                (Some(dir), _) => from_data_dir(dir)?,
                (None, Some(api)) => Profile { api: api.clone(), ca: None, token_file: None },
                (None, None) => return Err(Failure::new(2, "profile add needs --api URL or --data-dir DIR")),
            };
            if let (Some(api), Some(_)) = (&ctx.api, &data_dir) {
                profile.api = api.clone();
            }
            if let Some(ca) = &ctx.ca {
                profile.ca = Some(absolute(ca)?);
            }
            if let Some(token) = token_file {
                profile.token_file = Some(absolute(&token)?);
            }
            // A cluster's controllers: a comma-separated list (issue 18, reach).
            for api in profile.api.split(',') {
                reqwest::Url::parse(api.trim()).map_err(|e| Failure::new(2, format!("--api {api:?} is not a URL: {e}")))?;
            }
            profiles.profiles.insert(name.clone(), profile.clone());
            if default || profiles.profiles.len() == 1 {
                profiles.default = Some(name.clone());
            }
            profiles.save()?;
            let out = json!({ "name": name, "profile": profile, "default": profiles.default.as_deref() == Some(&name) });
            ctx.output.print(&out, |out| format!("profile {} saved: {}\n", s(&out["name"]), s(&out["profile"]["api"])));
        }
        ProfileCmd::List => {
            let out = json!({ "default": profiles.default, "profiles": profiles.profiles });
            ctx.output.print(&out, |_| {
                let mut text = String::new();
                for (name, p) in &profiles.profiles {
                    let mark = if profiles.default.as_deref() == Some(name) { "*" } else { " " };
                    let ca = p.ca.as_ref().map(|c| c.display().to_string()).unwrap_or_else(|| "system roots".into());
                    text.push_str(&format!("{mark} {name}\t{}\tca: {ca}\n", p.api));
                }
                text
            });
        }
        ProfileCmd::Remove { name } => {
            if profiles.profiles.remove(&name).is_none() {
                return Err(Failure::new(2, format!("no profile {name:?}")));
            }
            if profiles.default.as_deref() == Some(&name) {
                profiles.default = None;
            }
            profiles.save()?;
            ctx.output.print(&json!({ "name": name }), |_| format!("profile {name} removed\n"));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_others_can_read_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ci.token");
        std::fs::write(&file, "t").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(loose_mode_warning(&file).is_some_and(|w| w.contains("0644") && w.contains("chmod 600")));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(loose_mode_warning(&file), None);
    }

    #[test]
    fn a_named_profile_must_exist_and_the_default_is_used_otherwise() {
        let mut profiles = Profiles::default();
        assert!(profiles.select(None).unwrap().is_none());
        let prod = Profile { api: "https://ci.example:7400".into(), ca: None, token_file: None };
        profiles.profiles.insert("prod".into(), prod.clone());
        assert_eq!(profiles.select(Some("prod")).unwrap(), Some(prod.clone()));
        assert_eq!(profiles.select(Some("nope")).unwrap_err().code, 2);
        assert!(profiles.select(None).unwrap().is_none());
        profiles.default = Some("prod".into());
        assert_eq!(profiles.select(None).unwrap(), Some(prod));
    }

    #[test]
    fn profiles_move_from_profiles_json_to_config_toml() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"default": "prod", "profiles": {"prod": {"api": "https://ci:7400", "tokenFile": "/t"}}}"#;
        std::fs::write(dir.path().join("profiles.json"), json).unwrap();
        let toml_path = dir.path().join("config.toml");
        let mut profiles = Profiles::load_from(toml_path.clone()).unwrap();
        assert_eq!(profiles.select(None).unwrap().unwrap().token_file, Some(PathBuf::from("/t")), "the old file is read");
        profiles
            .profiles
            .insert("dev".into(), Profile { api: "https://dev:7400".into(), ca: Some("/ca".into()), token_file: None });
        profiles.save().unwrap();
        let text = std::fs::read_to_string(&toml_path).unwrap();
        assert!(text.contains("[profiles.prod]") && text.contains("token-file = \"/t\""), "{text}");
        assert_eq!(std::fs::read_to_string(dir.path().join("profiles.json")).unwrap(), json, "the old file is left alone");
        // config.toml now wins over the old file.
        std::fs::write(dir.path().join("profiles.json"), "{}").unwrap();
        let again = Profiles::load_from(toml_path.clone()).unwrap();
        assert_eq!(again.profiles.len(), 2);
        assert_eq!(again.default.as_deref(), Some("prod"));
    }

    #[test]
    fn an_unknown_key_in_config_toml_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[profiles.prod]\napi = \"https://ci:7400\"\ntoken = \"secret\"\n").unwrap();
        let e = Profiles::load_from(path).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("token") && e.message.contains("config.toml"), "{}", e.message);
    }

    // Several controllers, one leader (issue 18, reach).
    #[test]
    fn a_profile_may_list_a_clusters_controllers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text =
            "[profiles.ha]\napi = [\"https://a:7400\", \"https://b:7400\"]\n[profiles.one]\napi = \"https://c:7400\"\n";
        std::fs::write(&path, text).unwrap();
        let profiles = Profiles::load_from(path.clone()).unwrap();
        assert_eq!(profiles.select(Some("ha")).unwrap().unwrap().api, "https://a:7400,https://b:7400");
        assert_eq!(profiles.select(Some("one")).unwrap().unwrap().api, "https://c:7400");
        profiles.save().unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(saved.contains(r#"api = ["https://a:7400", "https://b:7400"]"#), "{saved}");
        assert!(saved.contains(r#"api = "https://c:7400""#), "{saved}");
    }

    #[test]
    fn a_json_path_is_still_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profiles.json");
        let mut profiles = Profiles::load_from(path.clone()).unwrap();
        profiles.profiles.insert("p".into(), Profile { api: "https://x:1".into(), ca: None, token_file: None });
        profiles.save().unwrap();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["profiles"]["p"]["api"], "https://x:1");
    }
}
