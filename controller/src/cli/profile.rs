//! `sluice profile`: named controllers, so that a command needs only
//! `--profile NAME` (or `SLUICE_PROFILE`) instead of the address, the CA
//! and the token each time. A profile keeps the token's file, never the
//! token. The file is `SLUICE_CONFIG`, else
//! `$XDG_CONFIG_HOME/sluice/profiles.json`, else
//! `~/.config/sluice/profiles.json`, written 0600 and atomically.

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
        Ok(Some(text.trim().to_string()))
    }
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
    Some(base.join("sluice").join("profiles.json"))
}

impl Profiles {
    /// The saved profiles; none when the file does not exist.
    pub fn load() -> Result<Self, Failure> {
        let Some(path) = config_path() else { return Ok(Self::default()) };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self { path: Some(path), ..Self::default() }),
            Err(e) => return Err(Failure::new(2, format!("reading the profiles {}: {e}", path.display()))),
        };
        let mut profiles: Self = serde_json::from_str(&text)
            .map_err(|e| Failure::new(2, format!("the profiles {} are not valid: {e}", path.display())))?;
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
        let text = serde_json::to_string_pretty(self).map_err(|e| Failure::new(1, e.to_string()))? + "\n";
        write_atomically(&path, text.as_bytes())
            .map_err(|e| Failure::new(1, format!("writing the profiles {}: {e:#}", path.display())))
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
            reqwest::Url::parse(&profile.api)
                .map_err(|e| Failure::new(2, format!("--api {:?} is not a URL: {e}", profile.api)))?;
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
}
